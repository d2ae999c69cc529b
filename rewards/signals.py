"""Interaction signals: definitions, normalisation to [0, 1], default weights.

=============== ========== ======== ========== ======================================
signal          kind       weight   confidence arrives
=============== ========== ======== ========== ======================================
click           binary     0.10     0.60       with the answer
scroll_depth    continuous 0.10     0.50       with the answer (fraction of the page)
dwell           continuous 0.10     0.50       with the answer (seconds / ``DWELL_CAP_S``)
thumbs_up       explicit   0.30     0.90       sometimes (explicit feedback is sparse)
thumbs_down     explicit   -0.30    0.90       sometimes; the same event as thumbs_up
rating          explicit   0.30     0.95       sometimes; 1-5 stars -> (stars - 1) / 4
conversion      binary     0.40     1.00       late: 1..``max_delay`` steps after the action
share           binary     0.20     0.80       with the answer
=============== ========== ======== ========== ======================================

The weight says how much a signal is worth; the confidence says how reliable it is. The
composite reward uses ``weight · confidence`` as the effective weight (``rewards.composite``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from personarl.errors import ConfigError

__all__ = ["SignalSpec", "SIGNALS", "SIGNAL_NAMES", "DWELL_CAP_S", "SignalWeights",
           "normalise_rating", "normalise_dwell", "normalise_scroll"]

DWELL_CAP_S = 120.0


@dataclass(frozen=True)
class SignalSpec:
    """One signal: how it is measured and what it is worth by default."""

    name: str
    kind: str          # "binary" | "continuous" | "explicit"
    weight: float
    confidence: float
    delayed: bool = False


SIGNALS: tuple[SignalSpec, ...] = (
    SignalSpec("click", "binary", 0.10, 0.60),
    SignalSpec("scroll_depth", "continuous", 0.10, 0.50),
    SignalSpec("dwell", "continuous", 0.10, 0.50),
    SignalSpec("thumbs_up", "explicit", 0.30, 0.90),
    SignalSpec("thumbs_down", "explicit", -0.30, 0.90),
    SignalSpec("rating", "explicit", 0.30, 0.95),
    SignalSpec("conversion", "binary", 0.40, 1.00, delayed=True),
    SignalSpec("share", "binary", 0.20, 0.80),
)
SIGNAL_NAMES: tuple[str, ...] = tuple(s.name for s in SIGNALS)


@dataclass(frozen=True)
class SignalWeights:
    """Per-signal weights and confidences, defaults from ``SIGNALS``; overridable by name.

    Args:
        weights: signal name -> weight (any finite number; negative for bad signals).
        confidence: signal name -> confidence in [0, 1].
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    confidence: Mapping[str, float] = field(default_factory=dict)

    def effective(self) -> np.ndarray:
        """``(S,)`` effective weights ``weight · confidence`` in ``SIGNAL_NAMES`` order."""
        w = {s.name: s.weight for s in SIGNALS}
        c = {s.name: s.confidence for s in SIGNALS}
        for label, given, target in (("weights", self.weights, w),
                                     ("confidence", self.confidence, c)):
            if given is not None and not isinstance(given, Mapping):
                raise ConfigError(f"signal {label}={given!r} must be a mapping of signal "
                                  f"name to number; valid names: {list(SIGNAL_NAMES)}")
            for name, value in (given or {}).items():
                if name not in target:
                    raise ConfigError(f"signal {label} name unknown signal {name!r}; "
                                      f"valid: {list(SIGNAL_NAMES)}")
                try:
                    v = float(value)
                except (TypeError, ValueError):
                    v = float("nan")                 # named in the message below
                if not np.isfinite(v) or (label == "confidence" and not 0 <= v <= 1):
                    valid = "[0, 1]" if label == "confidence" else "a finite number"
                    raise ConfigError(f"signal {label}[{name!r}]={value!r}; must be {valid}")
                target[name] = v
        return np.array([w[n] * c[n] for n in SIGNAL_NAMES])


def normalise_rating(stars: np.ndarray) -> np.ndarray:
    """1-5 stars to [0, 1]."""
    return (np.asarray(stars, dtype=np.float64) - 1.0) / 4.0


def normalise_dwell(seconds: np.ndarray, cap_s: float = DWELL_CAP_S) -> np.ndarray:
    """Dwell seconds to [0, 1], saturating at ``cap_s``."""
    return np.minimum(np.asarray(seconds, dtype=np.float64) / cap_s, 1.0)


def normalise_scroll(percent: np.ndarray) -> np.ndarray:
    """Scroll depth in percent of the page to [0, 1]."""
    return np.clip(np.asarray(percent, dtype=np.float64) / 100.0, 0.0, 1.0)
