"""A served policy's decision logs as ``LoggedData``: episodes rebuilt from what the server
records, rewards joined from its feedback log, the env from the bundles that served.

The server (``agents.serving``) logs every decision with the client's ``episode_id``
(keyed-hashed) and ``step``, the exploration it applied, the arm and version that served it,
the behaviour probability of the action under everything that chose it (``propensity``: the
traffic split's mixture) and under the serving arm alone (``arm_propensity``); feedback
(``reward``, ``done``) arrives separately, keyed by ``decision_id``, and its first row per
decision is the one kept (``agents.serving.server``: feedback is idempotent). Each server
start records in ``servings.jsonl`` which bundles served, with what share of traffic and
for which env and env config.

``from_decision_logs`` rebuilds the episodes: decisions grouped by ``episode_id``, ordered
by ``step`` (which must count 0, 1, … and stay below the env's horizon — a step at or past
the horizon means the log is not from that env, and the log is refused), each with its
first feedback. An episode is kept only when it is whole: every decision has feedback, the
last one says ``done`` and none before it does. What cannot be rebuilt is counted by reason
in ``meta['not_reconstructed']`` — never guessed.

**Several arms** (canary, A/B) are evaluated as one behaviour policy. A decision made
without a ``user_id`` was assigned to an arm at random on its own, so its probability is the
logged mixture. A user with an id keeps their arm for the whole episode (sticky hashing),
so the behaviour probability of an episode's actions is ``Σ_arm share_arm · Π_t
b_arm(a_t | x_t)`` — not the product of per-decision mixtures. The estimators need it per
decision: ``P(a_t | x_0..t, a_0..t-1) = B_t / B_{t-1}`` with ``B_t = Σ_arm share_arm
Π_{s ≤ t} b_arm(a_s | x_s)``, whose product over the episode is that probability (the arm
is a latent variable of the behaviour: Precup, Sutton & Singh 2000 need only the behaviour's
probability of each action given the history). ``b_arm`` of the serving arm is its logged
``arm_propensity``; the other arm's follows from the mixture, ``(propensity − share_served ·
arm_propensity) / share_other``. The full distribution over actions of such a decision is
not logged, so these logs carry no ``action_probs``. With ``arm=<name>`` only the episodes
that arm served wholly are kept, evaluated with ``arm_propensity``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ope.data import DataError, LoggedData
from ope.files import column_matrix, column_vector

__all__ = ["from_decision_logs", "REASONS"]

#: why an episode could not be rebuilt (keys of ``meta['not_reconstructed']``)
REASONS = {
    "no_episode_id": "decisions logged without an episode_id",
    "no_feedback": "episodes with a decision that has no feedback (still running, or lost)",
    "not_finished": "episodes whose last decision's feedback does not say done",
    "done_early": "episodes with feedback saying done before their last decision",
    "reused_episode_id": "episode ids used for more than one episode (a step logged twice)",
    "steps": "episodes whose steps do not count 0, 1, … (a step missing)",
    "other_arm": "episodes not served wholly by the requested arm",
    "mixed_assignment": "episodes with decisions both with and without a user_id",
}


def _strings(table: pa.Table, name: str) -> np.ndarray:
    """A string column as an object array (``None`` where null)."""
    return np.array(table.column(name).to_pylist(), dtype=object)


def _servings(root: Path) -> list[dict[str, Any]]:
    from agents.serving.decision_log import SERVINGS, read_servings

    servings = read_servings(root)
    if not servings and (root / SERVINGS).exists():
        raise DataError(f"{root / SERVINGS} holds no readable entry (the server records "
                        "there which bundles served, for which env config, at every start); "
                        "cannot tell the env config of these decisions")
    if not servings:
        raise DataError(f"{root} has no {SERVINGS}: the server records there which bundles "
                        "served and for which env config (logs written before it did cannot "
                        "name their env config); serve with this version and evaluate the "
                        "new logs")
    for entry in servings:
        arms = entry.get("arms")
        if not isinstance(arms, list) or not arms or not all(
                isinstance(a, dict) and isinstance(a.get("env"), dict)
                and isinstance(a["env"].get("id"), str) for a in arms):
            raise DataError(f"{root / SERVINGS}: an entry has no valid 'arms' list (each arm "
                            f"with 'env': {{'id', 'config'}}); got {str(entry)[:120]}")
    return servings


def _serving_index(servings: list[dict[str, Any]], times: np.ndarray) -> np.ndarray:
    """``(N,)``: the server start in force at each decision's time (the last one before)."""
    starts = np.array([float(e.get("time", 0.0)) for e in servings])
    return np.maximum(np.searchsorted(starts, times, side="right") - 1, 0)


def _envs(root: Path, servings: list[dict[str, Any]], which: np.ndarray, arms: np.ndarray,
          shas: list[str]) -> tuple[str, dict]:
    """The one env (id, config) of the bundles that served these decisions — each looked up
    in the server start in force when it was made (the model's digest alone does not say:
    one model can be bundled for two env configs).

    Raises:
        DataError: a decision whose arm and model its start does not record, or bundles
            built for different envs (``envs.registration.env_differences``).
    """
    from envs.registration import env_differences

    used: dict[tuple[int, str], tuple[str, dict]] = {}
    for k, arm, sha in zip(which.tolist(), arms, shas):
        if (k, arm) in used:
            continue
        entry = next((a for a in servings[k]["arms"] if a.get("arm") == arm), None)
        if entry is None or entry.get("model_sha256") != sha:
            raise DataError(f"{root}: a decision of arm {arm!r} (model sha256 {str(sha)[:12]}…) "
                            f"was made while the server started at {servings[k].get('time')} "
                            "served no such arm (servings.jsonl); cannot tell its env config")
        used[(k, arm)] = (entry["env"]["id"], entry["env"].get("config") or {})
    (k0, arm0), env0 = next(iter(used.items()))
    for (k, arm), env in used.items():
        differ = env_differences(*env0, *env)
        if not differ:
            continue
        described = (f"{arm0}: {env0[0]} with {env0[1]}; {arm}: {env[0]} with {env[1]}; "
                     f"{', '.join(differ)} differ")
        if arm == arm0:                                 # one arm, two server starts
            raise DataError(f"{root}: the server was started on these logs with bundles "
                            f"built for different envs ({described}); their decisions are "
                            "not one behaviour policy's. Give each bundle its own log_dir")
        raise DataError(f"{root}: the arms were built for different envs or env configs "
                        f"({described}); their decisions are not one behaviour policy's. "
                        "Evaluate one arm with arm=<name>")
    return env0


def _shares(servings: list[dict[str, Any]], which: np.ndarray, arms: np.ndarray
            ) -> np.ndarray:
    """``(N, 2)``: the serving arm's share and the other arm's, per decision, from the
    server start in force when it was made (``which``)."""
    out = np.zeros((len(which), 2))
    for k in np.unique(which):
        shares = {a["arm"]: float(a.get("share", 0.0)) for a in servings[k]["arms"]}
        total = sum(shares.values())
        for name, share in shares.items():
            out[(which == k) & (arms == name)] = share, total - share
    return out


def _feedback_of(ids: np.ndarray, feedback: pa.Table, where: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Each decision's first feedback, as the server keeps it: ``(has (N,), reward (N,),
    done (N,), repeated rows, rows for decisions not in ids)``; a ``DataWarning`` names a
    later row whose reward differs from the first."""
    from agents.serving.decision_log import DataWarning

    column = feedback.column("decision_id")
    if column.null_count:
        raise DataError(f"{where}: column 'decision_id' is null at row "
                        f"{column.to_pylist().index(None)}")
    fb_ids = np.array(column.to_pylist(), dtype=object)
    reward = column_vector(feedback, "reward", where, numbers_only=True)
    # null reads as not done: what the server writes when a client does not say
    done = np.array([v is True for v in feedback.column("done").to_pylist()], dtype=bool)
    bad = ~np.isfinite(reward)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{where}: column 'reward' is not finite at row {row} (decision_id "
                        f"{fb_ids[row]!r})")
    if not len(fb_ids):
        return np.zeros(len(ids), bool), np.full(len(ids), np.nan), np.zeros(len(ids), bool), 0, 0
    known, first, which = np.unique(fb_ids, return_index=True, return_inverse=True)
    differs = reward != reward[first][which]          # np.unique: the first occurrence
    if differs.any():
        row = int(np.argmax(differs))
        warnings.warn(f"{where}: decision_id {fb_ids[row]!r} has feedback rows with different "
                      f"rewards ({reward[first[which[row]]]!r} first, then {reward[row]!r} at "
                      f"row {row}); the first is used, as the server keeps it",
                      DataWarning, stacklevel=3)
    pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    has = known[pos] == ids
    row = first[pos]
    return (has, np.where(has, reward[row], np.nan), has & done[row],
            len(fb_ids) - len(known), int((~np.isin(known, ids)).sum()))


def _describe_exploration(decisions: pa.Table) -> tuple[str, Any]:
    """The exploration the log records (one setting, or each one found) and its ε."""
    modes = sorted({m for m in decisions.column("exploration").to_pylist() if m is not None})
    eps = sorted({e for e in decisions.column("epsilon").to_pylist() if e is not None})
    mode = modes[0] if len(modes) == 1 else "/".join(modes) or "?"
    return mode, (eps[0] if len(eps) == 1 else eps or None)


def _describe_arms(servings: list[dict[str, Any]], which: np.ndarray, arm: str | None) -> str:
    """The arms behind the kept decisions, with their shares of traffic, in words."""
    seen = []
    for k in sorted(set(which.tolist())):
        for a in servings[k]["arms"]:
            text = f"{a.get('arm')} {a.get('version')} ({float(a.get('share', 0)):.0%})"
            if a.get("share") and text not in seen:
                seen.append(text)
    if arm is not None:
        return f"{arm} only, with its own propensities (of {', '.join(seen)})"
    return ", ".join(seen) + (" — the split's mixture" if len(seen) > 1 else "")


def from_decision_logs(root: str | Path, arm: str | None = None) -> LoggedData:
    """The decision logs under ``root`` (a server's ``log_dir``) as episodes.

    Args:
        root: the directory holding ``decisions/``, ``feedback/`` and ``servings.jsonl``.
        arm: ``None`` — every decision, as one behaviour policy (the traffic split's
            mixture; see the module doc); an arm's name (``primary``, ``candidate``) —
            only the episodes that arm served wholly, with its own propensities.

    Returns:
        ``LoggedData`` with ``meta``: ``source``, ``env_id``, ``env_config``, ``horizon``,
        ``behaviour`` (the version labels that served), ``arms``, ``exploration``,
        ``epsilon``, ``decisions`` (all logged), ``episodes`` (rebuilt),
        ``not_reconstructed`` (reason -> count, see ``REASONS``), ``repeated_feedback``,
        ``feedback_without_decision``.

    Raises:
        DataError: no decisions, continuous actions, no ``servings.jsonl``, arms built for
            different envs, a decision logged twice, a step at or past the env's horizon,
            no episode that could be rebuilt (saying why), or a null / ragged / non-finite
            value in a column used here.
    """
    from agents.serving.decision_log import read_log
    from envs.registration import describe

    root = Path(root)
    if not (root / "decisions").is_dir():
        raise DataError(f"{root} holds no decisions/ folder; give a server's log_dir (the "
                        "run directory's decision_logs/)")
    decisions, feedback = read_log(root, "decisions"), read_log(root, "feedback")
    d, f = f"{root} decisions", f"{root} feedback"
    n_logged = decisions.num_rows
    if n_logged == 0:
        raise DataError(f"no decisions logged under {root}")
    if decisions.column("action").null_count == n_logged:
        raise DataError("the decision log holds continuous actions; the estimators here are "
                        "for discrete actions")
    ids = decisions.column("decision_id").to_pylist()
    if None in ids:
        raise DataError(f"{d}: column 'decision_id' is null at row {ids.index(None)}")
    if len(set(ids)) != len(ids):
        unique, first_row, times = np.unique(np.array(ids, dtype=object), return_index=True,
                                             return_counts=True)
        k = int(np.argmax(times > 1))
        raise DataError(f"{d}: decision_id {unique[k]!r} is logged {int(times[k])} times "
                        f"(first at row {int(first_row[k])}); each decision is logged once")
    servings = _servings(root)
    model = decisions.column("model_sha256")
    if model.null_count:
        raise DataError(f"{d}: column 'model_sha256' is null at row "
                        f"{model.to_pylist().index(None)}; every decision names its model")
    shas = model.to_pylist()
    arms = _strings(decisions, "arm")
    which = _serving_index(servings, column_vector(decisions, "time", d))
    mine = np.ones(n_logged, bool)
    if arm is not None:
        known = sorted({a for a in arms if a is not None})
        if arm not in known:
            raise DataError(f"arm={arm!r} served no decision under {root}; arms: {known}")
        mine = arms == arm
    env_id, env_config = _envs(root, servings, which[mine], arms[mine],
                               [sha for sha, m in zip(shas, mine) if m])
    try:
        core = describe(env_id, env_config)
    except Exception as exc:                         # noqa: BLE001 — named in the message
        raise DataError(f"{root}: the served env {env_id} with env_config {env_config} does "
                        f"not build here: {exc}") from None
    horizon = core.horizon

    steps = decisions.column("step").to_pylist()
    past = [i for i, s in enumerate(steps) if s is not None and s >= horizon]
    if past:
        i = past[0]
        raise DataError(f"{d}: decision {ids[i]!r} has step {steps[i]}, but {env_id} with "
                        f"env_config {env_config} ends every episode within {horizon} "
                        f"decisions (steps 0..{horizon - 1}); {len(past)} decision(s) at or "
                        "past the horizon: the log is not from that env")
    has, reward, done, repeated, orphans = _feedback_of(np.array(ids, dtype=object),
                                                        feedback, f)
    episode_ids = _strings(decisions, "episode_id")
    counts = dict.fromkeys(REASONS, 0)
    if horizon == 1:                 # a decision is an episode: no episode_id is needed
        episode_ids = np.array(ids, dtype=object)
    elif all(e is None for e in episode_ids):
        raise DataError(f"{d}: no decision has an episode_id (clients did not send one, or "
                        f"the server ran with log.user_id=drop), and {env_id} episodes last "
                        f"up to {horizon} decisions: they cannot be rebuilt. Send episode_id "
                        "and step with every /v1/act request")
    groups: dict[str, list[int]] = {}
    for row, e in enumerate(episode_ids):
        if e is None:
            counts["no_episode_id"] += 1
        else:
            groups.setdefault(e, []).append(row)

    user_ids = _strings(decisions, "user_id")
    kept: list[list[int]] = []
    for rows in groups.values():
        order = [steps[r] for r in rows]
        if len({x for x in order if x is not None}) < sum(x is not None for x in order):
            counts["reused_episode_id"] += 1
            continue
        if None not in order:
            rows = [r for _, r in sorted(zip(order, rows))]
            if [steps[r] for r in rows] != list(range(len(rows))):
                counts["steps"] += 1
                continue
        elif horizon > 1:
            counts["steps"] += 1
            continue
        if arm is not None and any(arms[r] != arm for r in rows):
            counts["other_arm"] += 1
            continue
        if not has[rows].all():
            counts["no_feedback"] += 1
            continue
        ends = done[rows]
        if horizon > 1 and not ends[-1]:
            counts["not_finished"] += 1
            continue
        if ends[:-1].any():
            counts["done_early"] += 1
            continue
        sticky = {user_ids[r] is not None for r in rows}
        if len(sticky) > 1:
            counts["mixed_assignment"] += 1
            continue
        kept.append(rows)
    if not kept:
        why = "; ".join(f"{REASONS[k]}: {v}" for k, v in counts.items() if v)
        raise DataError(f"none of the {n_logged} decisions under {root} forms a whole "
                        f"episode ({why or 'no feedback at all'})")

    rows = np.array([r for episode in kept for r in episode])
    lengths = np.array([len(e) for e in kept])
    episode = np.repeat(np.arange(len(kept)), lengths)
    step = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    obs = column_matrix(decisions, "observation", d)[rows]
    action = column_vector(decisions, "action", d, numbers_only=True)[rows]
    propensity = column_vector(decisions, "propensity", d, numbers_only=True)[rows]
    probs: np.ndarray | None = column_matrix(decisions, "action_probs", d)[rows]
    own = decisions.column("arm_propensity").to_pylist()
    if arm is not None:
        propensity = np.array([own[r] for r in rows], dtype=float)
        probs = None                 # the arm's own distribution is not logged
    else:
        shares = _shares(servings, which[rows], arms[rows])
        two_arms = (shares[:, 1] > 0) & np.array([user_ids[r] is not None for r in rows])
        if two_arms.any():
            mine = np.array([own[r] for r in rows], dtype=float)
            propensity = _sticky_propensities(propensity, mine, shares, arms[rows], episode,
                                              two_arms)
            probs = None
    labels = np.array([ids[r] for r in rows], dtype=object)
    versions = sorted({str(v) for v in decisions.column("version").take(rows).to_pylist()})
    mode, epsilon = _describe_exploration(decisions.take(rows))
    meta = dict(
        source=str(root), env_id=env_id, env_config=env_config, horizon=horizon,
        behaviour=", ".join(versions), arms=_describe_arms(servings, which[rows], arm),
        exploration=mode, epsilon=epsilon, decisions=n_logged, episodes=len(kept),
        not_reconstructed={k: v for k, v in counts.items() if v},
        repeated_feedback=repeated,
        feedback_without_decision=orphans)
    return LoggedData(episode=episode, step=step, obs=obs, action=action,
                      reward=reward[rows], propensity=propensity,
                      done=done[rows] if horizon > 1 else np.ones(len(rows), bool),
                      n_actions=column_matrix(decisions, "action_probs", d).shape[1],
                      action_probs=probs, meta=meta, row_labels=labels)


def _sticky_propensities(mixture: np.ndarray, own: np.ndarray, shares: np.ndarray,
                         arm: np.ndarray, episode: np.ndarray, sticky: np.ndarray
                         ) -> np.ndarray:
    """Per-decision behaviour probabilities given the history, for episodes whose user kept
    their arm (``sticky`` rows) — ``B_t / B_{t-1}`` of the module doc, with the shares in
    force at the episode's first decision; other rows keep the mixture. Arrays are over
    the kept rows (episodes contiguous, in step order): ``mixture`` and ``own`` the logged
    propensities, ``shares`` ``(N, 2)`` the serving arm's share and the other's, ``arm``
    the serving arm's name."""
    served, other = shares[:, 0], shares[:, 1]
    # the other arm's probability of the action, from mixture = s·own + (1 − s)·other's
    # (clipped to [0, 1] against rounding only: the server computed the mixture this way)
    theirs = np.clip((mixture - served * own) / np.where(other > 0, other, 1.0), 0.0, 1.0)
    out = mixture.copy()
    start = np.r_[True, episode[1:] != episode[:-1]]
    share: dict[str, float] = {}
    path: dict[str, float] = {}          # Π_{s<t} b_arm(a_s | x_s) per arm
    for i in range(len(mixture)):
        if start[i]:
            names = ("primary", "candidate") if arm[i] == "primary" else (arm[i], "primary")
            share = dict(zip(names, (served[i], other[i])))
            path = dict.fromkeys(names, 1.0)
        if not sticky[i]:
            continue
        mine = arm[i]
        yours = next(name for name in path if name != mine)
        before = sum(share[k] * path[k] for k in path)
        path[mine] *= own[i]
        path[yours] *= theirs[i]
        out[i] = sum(share[k] * path[k] for k in path) / before
    return out
