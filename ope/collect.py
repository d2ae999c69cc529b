"""Logging a behaviour policy in the simulator, and the ground truth OPE is checked against.

How a policy acts — ``greedy``, ``sample`` (tempered) or ``epsilon`` — is one
``agents.serving.exploration.Exploration``, the same setting the server logs its decisions
under, so a simulated log and a served one describe their behaviour policy alike.

* ``collect`` — ``episodes`` whole episodes of a behaviour policy exploring as set, on a
  vector env (``envs.rollout.first_episodes``), logged as ``LoggedData`` with the
  probability of every logged action and the full distribution it was drawn from, and who
  made each decision (``users``): the user's quasi-identifiers and consent from the env's
  ``info``, and, given a pseudonymiser, the keyed hash of ``simulated_user_id``.
* ``evaluation_probs`` — an evaluation policy's distribution on logged observations under
  an exploration setting (``greedy`` by default: how trained policies and greedy baselines
  act).
* ``true_value`` — the on-policy Monte-Carlo value of an evaluation policy acting exactly as
  ``evaluation_probs`` says, with a 95% CI: what every estimate is compared with.

Policies are anything with ``action_probs(obs)`` — the baselines (``agents.baselines.policies``) and
loaded bundles (``agents.serving.loader``).

``seed`` is always the run's seed; each function draws from its own purposes' streams
(``personarl.seeds``): ``collect`` from ``logged_users`` and ``behaviour``, ``true_value``
from ``truth`` and ``evaluation_actions``. So a log and the truth it is scored against are
never simulated on the same users, whatever seeds the two commands were given, while every
policy's truth uses the same users (paired).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
from gymnasium.vector import VectorEnv

from agents.baselines.evaluation import run_episodes
# the setting a served decision is drawn under: the behaviour policy of logged data
from agents.serving.exploration import GREEDY, Exploration
from envs.rollout import first_episodes
from ope.data import DataError, LoggedData
from personarl.parity import group_parity
from personarl.seeds import generator
from personarl.stats import mean_ci
from synth.demographics import AGE_BANDS, CITIES

__all__ = ["collect", "evaluation_probs", "true_value", "simulated_user_id"]


def simulated_user_id(seed: int, episode: int) -> str:
    """The raw id of the simulated user behind ``episode`` of a log collected with ``seed``
    (what ``collect`` pseudonymises, and what erasure asks for)."""
    return f"sim:{seed}:{episode}"


def _profiles(info: Mapping[str, Any], b: int, group_names: Sequence[str]
              ) -> dict[str, np.ndarray] | None:
    """``(b,)`` labels of each lane's quasi-identifiers and consent, from a reset's
    ``info`` (``None`` when the env gives no truth: ``info_level="none"``)."""
    if not all(k in info for k in ("age_band", "city", "group", "consent")):
        return None
    names = np.asarray(list(group_names) or [f"group_{i}" for i in range(
        int(np.max(info["group"])) + 1)], dtype=object)
    return {"age_band": np.asarray(AGE_BANDS, dtype=object)[np.asarray(info["age_band"])],
            "city": np.asarray(CITIES, dtype=object)[np.asarray(info["city"])],
            "group": names[np.asarray(info["group"])],
            "consent": np.asarray(info["consent"], dtype=bool).copy()}


def _policy_probs(policy: Any, obs: np.ndarray, info: Mapping[str, Any] | None) -> np.ndarray:
    """``(N, K)`` float64: the policy's own probabilities (a privileged one also reads
    ``info``, the env's truth)."""
    probs = policy.action_probs(obs, info) if policy.privileged else policy.action_probs(obs)
    return np.asarray(probs, dtype=np.float64)


def evaluation_probs(policy: Any, obs: np.ndarray, exploration: Exploration | str = GREEDY,
                     context: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """``(N, K)``: the distribution ``policy`` draws from on ``obs`` when it acts under
    ``exploration``. A privileged policy (one that reads the simulator's truth, like the
    planner) also needs the logged ``context`` of those decisions.

    Raises:
        ConfigError: a bad exploration setting.
        DataError: a privileged policy and no ``context``.
    """
    exploration = Exploration.of(exploration)
    if policy.privileged and not context:
        raise DataError(f"{getattr(policy, 'name', policy)!r} reads the simulator's "
                        "truth, which this log does not hold; collect with "
                        "record_truth=true (simulated logs only)")
    return exploration.probs(_policy_probs(policy, obs, context))


def collect(policy: Any, make_env: Callable[[int], VectorEnv], episodes: int, seed: int,
            exploration: Exploration | str = Exploration("epsilon", epsilon=0.2),
            batch: int = 4096, meta: Mapping[str, Any] | None = None,
            record_truth: bool = False,
            pseudonymise: Callable[[str], str] | None = None,
            group_names: Sequence[str] = ()) -> LoggedData:
    """Log ``episodes`` whole episodes of ``policy`` acting under ``exploration``.

    Each of up to ``batch`` lanes runs one episode (the vector env's first), so rows come out
    grouped by episode in step order. ``make_env(n)`` builds the vector env (with
    ``info_level="full"`` if the policy is privileged or ``record_truth`` is on).
    ``record_truth`` keeps the env's per-user ground truth at every decision (its numeric
    ``info`` entries) as ``context``, so privileged policies can be evaluated on the log.
    ``seed`` is the run's seed: users are its ``logged_users`` stream, exploration draws its
    ``behaviour`` stream. The log's ``meta`` records the setting (``exploration``: the mode,
    ``epsilon``, ``temperature``). Each row's ``users`` columns say who decided:
    ``age_band``, ``city``, ``group`` (named by ``group_names``, the population's;
    default ``group_0``, ``group_1``, …) and
    ``consent`` from the env's reset ``info``, and with ``pseudonymise``
    (``personarl.identifiers.Pseudonymiser``) the ``user_id``: the pseudonym of
    ``simulated_user_id(seed, episode)``.
    """
    exploration = Exploration.of(exploration)
    rng = generator(seed, "behaviour")
    parts: list[dict[str, np.ndarray]] = []
    offset = 0
    for lanes in first_episodes(make_env, episodes, seed, "logged_users", batch):
        b, info = lanes.size, lanes.info
        rows: dict[str, list[np.ndarray]] = {k: [] for k in
                                             ("obs", "action", "reward", "probs", "done",
                                              "active")}
        truth_keys = sorted(k for k, v in info.items() if not k.startswith("_")
                            and np.ndim(v) in (1, 2) and np.shape(v)[0] == b
                            and np.asarray(v).dtype.kind in "biuf") if record_truth else []
        profiles = _profiles(info, b, group_names)
        rows.update({f"context.{k}": [] for k in truth_keys})
        while lanes.running:
            dist = exploration.probs(_policy_probs(policy, lanes.obs, lanes.info))
            t = lanes.step(exploration.choose(dist, rng))
            for k in truth_keys:                      # the truth the decision was made in
                rows[f"context.{k}"].append(np.array(t.info[k]))
            for k, v in (("obs", t.obs), ("action", t.action), ("reward", t.reward),
                         ("probs", dist), ("done", t.terminated), ("active", t.live)):
                rows[k].append(np.asarray(v))
        keep = np.stack(rows["active"], axis=1)                 # (b, T), lane-major
        lane, step = np.nonzero(keep)
        table = {k: np.stack(v, axis=1)[lane, step] for k, v in rows.items() if k != "active"}
        table["episode"], table["step"] = lane + offset, step
        for k, v in (profiles or {}).items():
            table[f"users.{k}"] = v[lane]
        if pseudonymise is not None:
            ids = np.array([pseudonymise(simulated_user_id(seed, offset + i))
                            for i in range(b)], dtype=object)
            table["users.user_id"] = ids[lane]
        parts.append(table)
        offset += b
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = len(cat["action"])
    context = {k.split(".", 1)[1]: v for k, v in cat.items() if k.startswith("context.")}
    users = {k.split(".", 1)[1]: v for k, v in cat.items() if k.startswith("users.")}
    return LoggedData(episode=cat["episode"], step=cat["step"], obs=cat["obs"],
                      action=cat["action"], reward=cat["reward"], context=context or None,
                      users=users or None,
                      propensity=cat["probs"][np.arange(n), cat["action"]], done=cat["done"],
                      n_actions=cat["probs"].shape[1], action_probs=cat["probs"],
                      meta=dict(meta or {}, exploration=exploration.mode,
                                epsilon=exploration.epsilon,
                                temperature=exploration.temperature, seed=seed,
                                episodes=episodes))


def true_value(policy: Any, make_env: Callable[[int], VectorEnv], episodes: int, seed: int,
               exploration: Exploration | str = GREEDY,
               group_names: Sequence[str] | None = None) -> dict[str, Any]:
    """On-policy Monte-Carlo value (mean undiscounted return) with its 95% CI, on the
    ``truth`` users of the run's ``seed`` (the same for every policy: paired; never a log's
    users), of ``policy`` acting under ``exploration`` (its draws: the ``evaluation_actions``
    stream) — a privileged one (e.g. the oracle: the normalisation's top) on the env's truth,
    as ``evaluation_probs`` reads it from a log's context. With ``group_names`` (the
    population's), also ``fairness``: the true value per demographic group and its parity
    (``personarl.parity``)."""
    actor = _Acting(policy, Exploration.of(exploration), seed)
    batch = run_episodes(actor, make_env, episodes, seed=seed, purpose="truth",
                         first_keys=("group",) if group_names is not None else ())
    mean, low, high = mean_ci(batch.returns)
    out: dict[str, Any] = dict(value=mean, ci_low=low, ci_high=high, episodes=episodes)
    if group_names is not None:
        out["fairness"] = group_parity(batch.returns,
                                       np.asarray(group_names)[batch.first["group"]],
                                       generator(seed, "bootstrap", 1), reps=500).as_dict()
    return out


class _Acting:
    """An evaluation policy acting as ``evaluation_probs`` describes (for ``run_episodes``;
    privileged like the policy, so a privileged one is handed the env's ``info``)."""

    learning = False

    def __init__(self, policy: Any, exploration: Exploration, seed: int) -> None:
        self.policy, self.exploration = policy, exploration
        self.privileged = policy.privileged
        self.rng = generator(seed, "evaluation_actions")

    def act(self, obs: np.ndarray, info: Mapping[str, Any] | None = None) -> np.ndarray:
        probs = evaluation_probs(self.policy, obs, self.exploration, context=info)
        return self.exploration.choose(probs, self.rng)
