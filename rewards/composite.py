"""Composite reward: signals -> one scalar, down-weighted by signal quality."""

from __future__ import annotations

import numpy as np

__all__ = ["composite_reward"]


def composite_reward(values: np.ndarray, effective_weights: np.ndarray,
                     quality: np.ndarray | float = 1.0) -> np.ndarray:
    """``quality · Σ_s w_s · v_s`` over the last axis.

    Args:
        values: ``(..., S)`` normalised signal values; absent signals are 0.
        effective_weights: ``(S,)`` weight · confidence per signal.
        quality: ``(...)`` signal quality in [0, 1] (``rewards.quality``), or a scalar.
    """
    return (values @ effective_weights) * quality
