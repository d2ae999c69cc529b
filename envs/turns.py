"""One-decision contexts drawn from the envs, with the truth to score any action in them.

The preference lab (``experiments.preferences``, ``experiments.overoptimisation``) works in
the one-step setting: a context is what the platform observes before one decision, and
the simulator's *true reward* of an action there is its expected immediate reward given
the latent user:

* PersonalityAdaptation, one turn (the conversation's first, the opening phase): the
  expected reward of answering in any assistant style (``envs.adaptation_model
  .turn_reward``; continuous styles in [0, 1]^10, or the nine discrete styles);
* AgentRouting with ``horizon=1`` (a contextual bandit): ``expected_reward`` of each agent.

The contexts come from the native vector env reset once with ``n`` lanes, so they follow
the env's own population and observation noise. A context is either

* ``"observation"``: what the platform observes (a reward model on it can replace the
  env's reward in training), or
* ``"profile"``: the observation followed by the user's profile — PersonalityAdaptation:
  the preferred style (10), how much each of its traits matters (10), sentiment and
  engagement; AgentRouting: the latent archetype weights, the interaction's quality and
  the bot flag (not the traits behind satisfaction: the env does not report them) — as
  in personalised reward modelling conditioned on a user description. Annotators judge
  with the latent user in mind, so only this context lets a reward model come near their
  ceiling (PersonalityAdaptation, 10,000 held-out pairs: accuracy 0.727 on the
  observation, 0.789 on the profile, ceiling 0.80; BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from envs.adaptation_core import OBS_COLUMNS
from envs.adaptation_model import (AdaptationModel, ChatState, Preferences, style_vectors,
                                   turn_reward)
from personarl.errors import ConfigError, DataError, check_int
from rewards.adaptation import AdaptationRewardWeights
from rewards.preferences import (STYLE_BIASES, Annotators, PreferencePairs, annotate,
                                 check_action_indices)

__all__ = ["TurnContexts", "turn_contexts", "TURN_ENVS", "CONTEXTS"]

ADAPTATION = "personarl/PersonalityAdaptation-v0"
ROUTING = "personarl/AgentRouting-v0"
#: the envs with a one-step setting (env id -> the kwargs that make it one decision)
TURN_ENVS: dict[str, dict[str, Any]] = {ADAPTATION: {}, ROUTING: {"horizon": 1}}
CONTEXTS = ("observation", "profile")


@dataclass
class TurnContexts:
    """``n`` one-decision contexts.

    Attributes:
        env_id: the env they come from.
        observation: ``(n, d_x)`` float32, what a policy and a reward model see (the
            ``context`` chosen: the env's observation, or it and the user's profile).
        num_actions: K for ``Discrete(K)``; None for a box ``[0, 1]^action_dim``.
        action_dim: width of a box action (K for a discrete space).
    """

    env_id: str
    observation: np.ndarray
    num_actions: int | None
    action_dim: int
    _reward: Callable[[np.ndarray, np.ndarray], np.ndarray]
    _style: Callable[[np.ndarray, np.ndarray], np.ndarray] | None

    def __len__(self) -> int:
        return len(self.observation)

    def check_actions(self, actions: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``actions`` for ``rows``, refused with the valid range when they do not fit.

        Raises:
            DataError: wrong shape, unknown action indices, a vector outside [0, 1].
        """
        if self.num_actions is not None:
            return check_action_indices(actions, len(rows), self.num_actions)
        a = np.asarray(actions, dtype=np.float64)
        if a.shape != (len(rows), self.action_dim) or not np.all(np.isfinite(a)) or \
                np.any((a < 0) | (a > 1)):
            raise DataError(f"actions must be ({len(rows)}, {self.action_dim}) vectors in "
                            f"[0, 1]; got {a.shape}")
        return a

    def rows(self, rows: np.ndarray | None) -> np.ndarray:
        """``rows`` as context indices (default: every context in order).

        Raises:
            DataError: not integers in ``[0, n)``."""
        if rows is None:
            return np.arange(len(self))
        r = np.asarray(rows)
        if r.ndim != 1 or r.dtype.kind not in "iu" or np.any((r < 0) | (r >= len(self))):
            raise DataError(f"rows must be (m,) integers in [0, {len(self)}); got {r.dtype} "
                            f"{r.shape}")
        return r

    def true_reward(self, actions: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``(m,)`` the true expected reward of ``actions[i]`` in context ``rows[i]``
        (default: every context in order)."""
        rows = self.rows(rows)
        return self._reward(self.check_actions(actions, rows), rows)

    def taste(self, name: str | None, actions: np.ndarray,
              rows: np.ndarray | None = None) -> np.ndarray:
        """``(m,)`` an exploitable taste ``φ`` of ``actions`` (``rewards.preferences
        .STYLE_BIASES``; zeros for ``None``).

        Raises:
            ConfigError: an unknown taste, or a taste for an env without styles.
        """
        rows = self.rows(rows)
        a = self.check_actions(actions, rows)
        if name is None:
            return np.zeros(len(rows))
        if name not in STYLE_BIASES:
            raise ConfigError(f"bias={name!r}; valid: {', '.join(STYLE_BIASES)} or null")
        if self._style is None:
            raise ConfigError(f"bias={name!r} is a taste over assistant styles; "
                              f"{self.env_id} has none: use bias=null")
        return STYLE_BIASES[name](self._style(a, rows))

    def random_actions(self, rows: int, rng: np.random.Generator) -> np.ndarray:
        """Uniformly random actions for ``rows`` contexts."""
        if self.num_actions is not None:
            return rng.integers(0, self.num_actions, rows)
        return rng.random((rows, self.action_dim))

    def candidates(self, rows: int, rng: np.random.Generator, sd: float = 0.35
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Two different candidate actions per context: uniform distinct indices, or
        styles ``N(½, sd²)`` per trait clipped to [0, 1] (the first ``(rows, k)`` draw
        for ``a``, the second for ``b``)."""
        if self.num_actions is not None:
            a = rng.integers(0, self.num_actions, rows)
            return a, (a + rng.integers(1, self.num_actions, rows)) % self.num_actions
        return tuple(np.clip(0.5 + sd * rng.standard_normal((rows, self.action_dim)), 0, 1)
                     for _ in range(2))

    def compare(self, annotators: Annotators, rng: np.random.Generator, *,
                sd: float = 0.35, taste: str | None = None) -> PreferencePairs:
        """One pair per context: two ``candidates`` judged by the pool
        (``rewards.preferences.annotate``) with the true reward and, if given, a taste."""
        a, b = self.candidates(len(self), rng, sd)
        return annotate(self.observation, a, b, self.true_reward(a), self.true_reward(b),
                        annotators, rng, bias_a=self.taste(taste, a),
                        bias_b=self.taste(taste, b), num_actions=self.num_actions)


def turn_contexts(env_id: str, n: int, seed: int, *, context: str = "observation",
                  env_kwargs: Mapping[str, Any] | None = None) -> TurnContexts:
    """``n`` contexts of ``env_id``'s one-step setting (``TURN_ENVS``), from one reset of
    its vector env with seed ``seed``.

    Args:
        context: ``"observation"`` or ``"profile"`` (module docstring).
        env_kwargs: more of the env's arguments (``action_mode``, ``population``,
            ``model``, reward weights ...).

    Raises:
        ConfigError: an env without a one-step setting, an unknown context, ``n`` outside
            1..2^20.
    """
    import gymnasium as gym

    import envs  # noqa: F401  (registers the ids)

    if env_id not in TURN_ENVS:
        raise ConfigError(f"env {env_id!r} has no one-step setting; valid: "
                          f"{', '.join(TURN_ENVS)}")
    if context not in CONTEXTS:
        raise ConfigError(f"context={context!r}; valid: {', '.join(CONTEXTS)}")
    n = check_int("n", n, 1, 1 << 20)
    seed = check_int("seed", seed, 0, 2**63 - 1)
    kwargs = {**TURN_ENVS[env_id], **dict(env_kwargs or {})}
    env = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point",
                       info_level="full", **kwargs)
    obs, info = env.reset(seed=seed)
    env.close()
    obs = np.asarray(obs, dtype=np.float32)
    if env_id == ROUTING:
        table = np.asarray(info["expected_reward"], dtype=np.float64)
        if context == "profile":
            obs = np.concatenate([obs, info["latent_weights"], info["quality"][:, None],
                                  info["is_bot"][:, None]], axis=1, dtype=np.float32)
        return TurnContexts(env_id, obs, int(table.shape[1]), int(table.shape[1]),
                            lambda a, rows: table[rows, a], None)
    model = AdaptationModel(**dict(kwargs.get("model") or {}))
    reward_fn = AdaptationRewardWeights(**dict(kwargs.get("reward_weights") or {})).function()
    prefs = Preferences(np.asarray(info["preferred_style"], np.float64),
                        np.asarray(info["style_importance"], np.float64))
    state = ChatState(np.asarray(info["latent_sentiment"], np.float64),
                      np.asarray(info["latent_engagement"], np.float64))
    phase = np.asarray(info["phase"], dtype=np.int64)
    perceived = obs[:, OBS_COLUMNS["perceived"]].astype(np.float64)
    if context == "profile":
        obs = np.concatenate([obs, prefs.target, prefs.importance, state.sentiment[:, None],
                              state.engagement[:, None]], axis=1, dtype=np.float32)

    if kwargs.get("action_mode", "discrete") == "continuous":
        def style(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
            return a
    else:
        def style(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
            return style_vectors(a, perceived[rows])

    def reward(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return turn_reward(style(a, rows), prefs.take(rows), phase[rows], state.take(rows),
                           model, reward_fn)

    dim = prefs.target.shape[1]
    k = None if kwargs.get("action_mode", "discrete") == "continuous" else \
        int(env.single_action_space.n)
    return TurnContexts(env_id, obs, k, dim if k is None else k, reward, style)
