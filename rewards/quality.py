"""Signal quality: down-weight what suspected bots send.

Three symptoms from the fusion-engine write-up, each a factor in [0, 1]:

* **rapid fire** — ``1 - n_fast / (n + prior_interactions)``, the smoothed fraction of
  responses faster than ``min_interval_s`` (the write-up's rate limit is one second between
  feedback events; the pseudo-interactions keep one fast human answer from zeroing it);
* **patterned values** — bots answer with machine regularity: once ``min_history``
  responses are seen, ``min(1, sd(log latency) / pattern_sd)``; humans vary far more;
* **missing metadata** — ``missing_metadata_factor`` when device/browser info is absent.

The quality score is their product; a user is *flagged* as a suspected bot when it falls
below ``flag_threshold``. Everything is computed from running sums so it updates online.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personarl.errors import check_int, check_range

__all__ = ["QualityModel"]


@dataclass(frozen=True)
class QualityModel:
    """Parameters of the quality score (validated on construction)."""

    min_interval_s: float = 1.0
    prior_interactions: float = 2.0
    pattern_sd: float = 0.4
    min_history: int = 5
    missing_metadata_factor: float = 0.7
    flag_threshold: float = 0.5

    def __post_init__(self) -> None:
        check_range("min_interval_s", self.min_interval_s, 0, np.inf, high_open=True)
        check_range("prior_interactions", self.prior_interactions, 0, np.inf, high_open=True)
        check_range("pattern_sd", self.pattern_sd, 0, np.inf, low_open=True, high_open=True)
        check_int("min_history", self.min_history, 2)
        check_range("missing_metadata_factor", self.missing_metadata_factor, 0, 1)
        check_range("flag_threshold", self.flag_threshold, 0, 1)

    def score(self, latency: np.ndarray, metadata_missing: np.ndarray) -> np.ndarray:
        """Quality after each interaction.

        Args:
            latency: ``(n, H)`` response latencies in seconds.
            metadata_missing: ``(n,)`` flag.

        Returns:
            ``(n, H)``: the score using interactions ``0..t`` at column ``t``.
        """
        count = np.arange(1, latency.shape[1] + 1)
        loglat = np.log(latency)
        return self.from_sums(count, np.cumsum(latency < self.min_interval_s, axis=1),
                              np.cumsum(loglat, axis=1), np.cumsum(loglat * loglat, axis=1),
                              np.asarray(metadata_missing)[:, None])

    def from_sums(self, count: np.ndarray, fast: np.ndarray, s1: np.ndarray, s2: np.ndarray,
                  metadata_missing: np.ndarray) -> np.ndarray:
        """The score from running sums over a user's first ``count`` interactions (arrays
        broadcast together): ``fast`` answers quicker than ``min_interval_s``, ``s1`` and
        ``s2`` the sums of log latency and of its square — what an online scorer keeps."""
        fast = fast / (count + self.prior_interactions)
        var = np.maximum(s2 - s1 * s1 / count, 0.0) / np.maximum(count - 1, 1)
        pattern = np.where(count >= self.min_history,
                           np.minimum(1.0, np.sqrt(var) / self.pattern_sd), 1.0)
        meta = np.where(metadata_missing, self.missing_metadata_factor, 1.0)
        return (1.0 - fast) * pattern * meta

    def flagged(self, quality: np.ndarray) -> np.ndarray:
        """Suspected bots: quality below ``flag_threshold``."""
        return quality < self.flag_threshold

    def flagged_after(self, latency: np.ndarray, metadata_missing: np.ndarray) -> np.ndarray:
        """``(n,)`` users suspected as bots after their interactions ``latency`` ``(n, H)``
        (seconds): ``flagged`` of the score after the last one."""
        return self.flagged(self.score(latency, metadata_missing)[:, -1])
