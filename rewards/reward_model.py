"""A learned reward model scored in NumPy: ``r_θ(x, a)`` from a weights file.

The model is an ensemble of ``M`` multilayer perceptrons (tanh hidden layers, one linear
output) over ``[standardised context, action features]`` trained with the Bradley–Terry
loss ``−log σ(r(x, chosen) − r(x, rejected))`` (``agents.learners.bradley_terry``). Scoring
needs only NumPy, so ``import envs, rewards`` stays free of torch.

Objectives over the members' scores ``r_1..r_M`` (Coste et al. 2024, "Reward Model
Ensembles Help Mitigate Overoptimization"):

* ``mean``: ``(1/M) Σ r_m``;
* ``worst_case`` (WCO): ``min_m r_m``;
* ``uncertainty_weighted`` (UWO): ``mean − λ · Var_m r_m`` (``penalty`` = λ).

The file is a ``personarl.statefile`` (no pickle, written whole): the layers' ``w``/``b``
stacked over members (``(M, fan_in, fan_out)`` / ``(M, fan_out)``), ``x_mean``/``x_std``,
``num_actions`` and what the trainer recorded (``meta``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from personarl.errors import ConfigError, DataError, check_int, check_range, check_widths
from personarl.statefile import read_format, write_state
from rewards.preferences import (PreferencePairs, check_action_indices, check_pairs,
                                 label_ceiling, sigmoid)

__all__ = ["RewardModel", "BradleyTerryConfig", "OBJECTIVES", "FORMAT", "pair_metrics",
           "check_penalty"]

FORMAT = "personarl.reward_model/1"
OBJECTIVES = ("mean", "worst_case", "uncertainty_weighted")


@dataclass(frozen=True)
class BradleyTerryConfig:
    """How ``agents.learners.bradley_terry`` trains a reward model (mirrored as the
    ``model`` option of ``configs/preferences.yaml`` and ``configs/overoptimisation.yaml``)."""

    members: int = 1
    hidden: tuple[int, ...] = (64, 64)
    epochs: int = 30
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 10
    validation: float = 0.1

    def __post_init__(self) -> None:
        check_int("members", self.members, 1, 32)
        check_widths("hidden", self.hidden)
        check_int("epochs", self.epochs, 1, 10_000)
        check_int("batch_size", self.batch_size, 1, 1 << 20)
        check_range("lr", self.lr, 0, 1, low_open=True)
        check_range("weight_decay", self.weight_decay, 0, 1)
        check_int("patience", self.patience, 1, 10_000)
        check_range("validation", self.validation, 0, 0.5, low_open=True)


def check_penalty(penalty: Any, name: str = "penalty") -> float:
    """The uncertainty-weighted objective's λ: a finite number >= 0 (``ConfigError``)."""
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float, np.floating)) \
            or not 0 <= penalty < np.inf:
        raise ConfigError(f"{name}={penalty!r} must be a finite number >= 0")
    return float(penalty)


class RewardModel:
    """An ensemble reward model ``r(x, a)`` in NumPy.

    Args:
        layers: ``[(W, b), ...]`` with ``W`` ``(M, fan_in, fan_out)`` and ``b``
            ``(M, fan_out)``; the last layer's ``fan_out`` is 1.
        x_mean, x_std: ``(d_x,)`` the context's standardisation.
        num_actions: K for ``Discrete(K)`` (one-hot features), None for a box of width
            ``fan_in − d_x``.
        meta: what the trainer recorded (kept in the file).
    """

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], x_mean: np.ndarray,
                 x_std: np.ndarray, num_actions: int | None,
                 meta: Mapping[str, Any] | None = None) -> None:
        if not layers:
            raise DataError("a reward model needs at least one layer")
        try:
            self.layers = [(np.asarray(w, np.float64), np.asarray(b, np.float64))
                           for w, b in layers]
            self.x_mean = np.asarray(x_mean, np.float64)
            self.x_std = np.asarray(x_std, np.float64)
        except (TypeError, ValueError) as e:
            raise DataError(f"a reward model's arrays must be numbers: {e}") from None
        if num_actions is not None and (isinstance(num_actions, bool) or not isinstance(
                num_actions, (int, np.integer)) or num_actions < 2):
            raise DataError(f"a reward model's num_actions={num_actions!r} must be None (a "
                            "box of actions) or an integer >= 2")
        self.num_actions = None if num_actions is None else int(num_actions)
        self.meta = dict(meta or {})
        m = self.layers[0][0].shape[0]
        for i, (w, b) in enumerate(self.layers):
            if w.ndim != 3 or b.shape != (m, w.shape[2]) or w.shape[0] != m:
                raise DataError(f"reward model layer {i}: weights {w.shape} and bias "
                                f"{b.shape} are not (M, in, out) / (M, out) with M = {m}")
            if i and w.shape[1] != self.layers[i - 1][0].shape[2]:
                raise DataError(f"reward model layer {i} takes {w.shape[1]} inputs; the "
                                f"layer before gives {self.layers[i - 1][0].shape[2]}")
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise DataError(f"reward model layer {i} has non-finite weights")
        if self.layers[-1][0].shape[2] != 1:
            raise DataError("a reward model's last layer must have one output")
        if self.x_mean.shape != self.x_std.shape or self.x_std.ndim != 1 or not (
                np.all(np.isfinite(self.x_mean)) and np.all(np.isfinite(self.x_std))
                and np.all(self.x_std > 0)):
            raise DataError("a reward model's context standardisation must be (d_x,) "
                            "finite means and finite positive scales")
        if self.action_dim < 1:
            raise DataError(f"the first layer takes {self.layers[0][0].shape[1]} inputs, "
                            f"not more than the context's {self.context_dim}")
        if self.num_actions is not None and self.action_dim != self.num_actions:
            raise DataError(f"a reward model of Discrete({self.num_actions}) actions needs "
                            f"{self.num_actions} action inputs; its first layer has "
                            f"{self.action_dim}")

    @property
    def members(self) -> int:
        return self.layers[0][0].shape[0]

    @property
    def context_dim(self) -> int:
        return len(self.x_mean)

    @property
    def action_dim(self) -> int:
        return self.layers[0][0].shape[1] - self.context_dim

    def inputs(self, context: np.ndarray, action: np.ndarray) -> np.ndarray:
        """``(n, d_x + d_a)`` the network's input: standardised context, action features.

        Raises:
            DataError: wrong widths, unknown action indices, non-finite values.
        """
        try:
            x = np.asarray(context, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError("context must be numbers") from None
        if x.ndim != 2 or x.shape[1] != self.context_dim:
            raise DataError(f"context must be (n, {self.context_dim}); got {x.shape}")
        a = np.asarray(action)
        if self.num_actions is not None:
            a = check_action_indices(a, len(x), self.num_actions)
            feats = np.eye(self.num_actions)[a]
        else:
            try:
                feats = np.asarray(a, dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError("actions must be numbers") from None
            if feats.shape != (len(x), self.action_dim):
                raise DataError(f"actions must be ({len(x)}, {self.action_dim}); got "
                                f"{feats.shape}")
            if np.any((feats < 0) | (feats > 1)):
                raise DataError(f"actions must lie in the box [0, 1]^{self.action_dim} the "
                                "model was trained on (clip them as the env does)")
        z = np.concatenate([(x - self.x_mean) / self.x_std, feats], axis=1)
        if not np.all(np.isfinite(z)):
            raise DataError("context or actions are not finite")
        return z

    def member_scores(self, context: np.ndarray, action: np.ndarray) -> np.ndarray:
        """``(M, n)`` each member's reward."""
        h = np.broadcast_to(self.inputs(context, action), (self.members,) +
                            (len(context), self.context_dim + self.action_dim))
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            h = np.matmul(h, w) + b[:, None, :]
            if i < last:
                h = np.tanh(h)
        return h[..., 0]

    def reward(self, context: np.ndarray, action: np.ndarray, *, objective: str = "mean",
               penalty: float = 1.0) -> np.ndarray:
        """``(n,)`` the ensemble's reward under ``objective`` (module docstring).

        Raises:
            ConfigError: an unknown objective or a negative penalty.
        """
        if objective not in OBJECTIVES:
            raise ConfigError(f"objective={objective!r}; valid: {', '.join(OBJECTIVES)}")
        check_penalty(penalty)
        r = self.member_scores(context, action)
        if objective == "mean":
            return r.mean(axis=0)
        if objective == "worst_case":
            return r.min(axis=0)
        return r.mean(axis=0) - penalty * r.var(axis=0)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the model to ``path`` (module docstring); returns the path."""
        return write_state(path, {
            "format": FORMAT, "num_actions": self.num_actions, "meta": self.meta,
            "x_mean": self.x_mean, "x_std": self.x_std,
            "layers": [{"w": w, "b": b} for w, b in self.layers]})

    @classmethod
    def load(cls, path: str | Path) -> "RewardModel":
        """A model written by ``save``.

        Raises:
            DataError: no file, a damaged or foreign file, inconsistent weights.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"no reward model at {path}: train one first "
                            "(python -m experiments.preferences)")
        state = read_format(path, FORMAT, "reward-model")
        try:
            layers = [(layer["w"], layer["b"]) for layer in state["layers"]]
            return cls(layers, state["x_mean"], state["x_std"], state["num_actions"],
                       state["meta"])
        except (KeyError, TypeError) as exc:
            raise DataError(f"{path} is not a reward-model file: missing {exc}") from None


def pair_metrics(model: RewardModel, pairs: PreferencePairs, *, objective: str = "mean",
                 penalty: float = 1.0, bins: int = 10) -> dict[str, float]:
    """How well ``model`` predicts the labels of held-out ``pairs``.

    Returns:
        ``accuracy`` (share of pairs with ``r(chosen) > r(rejected)``; ties count ½),
        ``log_loss`` (the Bradley–Terry NLL, nats), ``ece`` (expected calibration error of
        the confidence ``max(p, 1 − p)``, ``p = σ(Δr)``, over ``bins`` equal-width bins;
        Guo et al. 2017), ``ceiling`` (``rewards.preferences.label_ceiling``) and
        ``agree_with_truth`` (share of pairs the model orders as the true reward does).
    """
    check_pairs(pairs)
    if pairs.num_actions != model.num_actions:
        raise DataError(f"pairs of {pairs.num_actions or 'box'} actions cannot score a model "
                        f"of {model.num_actions or 'box'} actions")
    check_int("bins", bins, 1, 1000)
    kw = {"objective": objective, "penalty": penalty}
    delta = (model.reward(pairs.context, pairs.chosen, **kw)
             - model.reward(pairs.context, pairs.rejected, **kw))
    p = sigmoid(delta)
    correct = np.where(delta == 0, 0.5, (delta > 0).astype(np.float64))
    conf = np.maximum(p, 1.0 - p)
    which = np.minimum(((conf - 0.5) * 2 * bins).astype(np.int64), bins - 1)
    ece = sum(abs(conf[which == k].mean() - correct[which == k].mean()) * np.mean(which == k)
              for k in range(bins) if np.any(which == k))
    truth = np.sign(pairs.true_margin)
    return {"pairs": len(pairs), "accuracy": float(correct.mean()),
            "log_loss": float(np.mean(np.logaddexp(0.0, -delta))), "ece": float(ece),
            "ceiling": label_ceiling(pairs),
            "agree_with_truth": float(np.mean(np.sign(delta) == truth))}
