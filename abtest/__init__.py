"""Online experiments: A/B readouts, sequential monitoring, rollback decisions.

* ``stats`` — Welch tests and intervals (absolute or relative), the bootstrap, CUPED,
  sample-ratio mismatch, power, Holm's correction;
* ``sequential`` — asymptotic confidence sequences, safe under continuous peeking.
"""

from abtest.sequential import confidence_sequence, sequential_interval
from abtest.stats import Difference, cuped, holm, srm_pvalue, users_per_arm, welch

__all__ = ["Difference", "welch", "cuped", "srm_pvalue", "users_per_arm", "holm",
           "confidence_sequence", "sequential_interval"]
