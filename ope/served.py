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
not logged, so these logs carry no ``action_probs``. With ``arm=<name>`` (or
``version=<label>``) only the episodes that arm (version) served wholly are kept, evaluated
with ``arm_propensity`` — their full distribution kept only where no other arm shared the
traffic. Several log directories (a version served by more than one server) are joined
into one log of their episodes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
    "other_arm": "episodes not served wholly by the requested arm or version",
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
    # feedback for decisions not in ids: the known ids with no match among them (np.isin
    # compares object arrays pair by pair; sorted, searchsorted does it in n log n)
    logged = np.sort(ids)
    found = logged[np.minimum(np.searchsorted(logged, known), len(logged) - 1)] == known
    return (has, np.where(has, reward[row], np.nan), has & done[row],
            len(fb_ids) - len(known), int((~found).sum()))


def _explorations(decisions: pa.Table) -> tuple[list[str], list[float]]:
    """The exploration modes and ε values the decisions record (each one found)."""
    return ([m for m in set(decisions.column("exploration").to_pylist()) if m is not None],
            [e for e in set(decisions.column("epsilon").to_pylist()) if e is not None])


def _describe_arms(servings: list[dict[str, Any]], which: np.ndarray, arm: str | None,
                   version: str | None = None) -> str:
    """The arms behind the kept decisions, with their shares of traffic, in words."""
    seen = []
    for k in sorted(set(which.tolist())):
        for a in servings[k]["arms"]:
            text = f"{a.get('arm')} {a.get('version')} ({float(a.get('share', 0)):.0%})"
            if a.get("share") and text not in seen:
                seen.append(text)
    chosen = " ".join(x for x in (arm, version) if x is not None)
    if chosen:
        return f"{chosen} only, with its own propensities (of {', '.join(seen)})"
    return ", ".join(seen) + (" — the split's mixture" if len(seen) > 1 else "")


def from_decision_logs(roots: str | Path | Sequence[str | Path], arm: str | None = None,
                       version: str | None = None) -> LoggedData:
    """The decision logs under ``roots`` (a server's ``log_dir``, or several) as episodes.

    Args:
        roots: a directory holding ``decisions/``, ``feedback/`` and ``servings.jsonl``, or
            a list of them (their episodes are joined; a directory without a decision of
            the selection is skipped and counted in ``meta['log_dirs_without']``).
        arm: ``None`` — every decision, as one behaviour policy (the traffic split's
            mixture; see the module doc); an arm's name (``primary``, ``candidate``) —
            only the episodes that arm served wholly, with its own propensities.
        version: a version label as the server logs it (``routing:v2``, ``sha256:…``) —
            only the episodes that version served wholly, with its own propensities
            (combined with ``arm``: both must hold).

    Returns:
        ``LoggedData`` with ``meta``: ``source``, ``env_id``, ``env_config``, ``horizon``,
        ``behaviour`` (the version labels that served), ``arms``, ``exploration``,
        ``epsilon``, ``decisions`` (all logged), ``episodes`` (rebuilt),
        ``not_reconstructed`` (reason -> count, see ``REASONS``), ``repeated_feedback``,
        ``feedback_without_decision``, ``log_dirs`` and ``log_dirs_without``.
        ``action_probs`` is kept only where no other arm shared the traffic.

    Raises:
        DataError: no decisions (of the selection), continuous actions, no
            ``servings.jsonl``, bundles built for different envs (arms, server starts or
            log directories), a decision logged twice, a step at or past the env's horizon,
            no episode that could be rebuilt (saying why), or a null / ragged / non-finite
            value in a column used here.
    """
    from envs.registration import env_differences

    many = not isinstance(roots, (str, Path))
    dirs = [Path(r) for r in roots] if many else [Path(roots)]
    if not dirs:
        raise DataError("no decision-log directory given")
    selection = " and ".join(x for x in (arm and f"arm={arm!r}",
                                         version and f"version={version!r}") if x)
    parts, empty = [], []
    for root in dirs:
        part = _read_root(root, arm, version, strict=not many)
        (parts if part is not None else empty).append(part or root)
    if not parts:
        raise DataError(f"none of the decision-log directories {[str(d) for d in dirs]} holds "
                        f"a decision{' of ' + selection if selection else ''}")
    first = parts[0]
    for part in parts[1:]:
        differ = env_differences(*first["env"], *part["env"])
        if differ:
            raise DataError(f"{first['root']} and {part['root']} were served by bundles built "
                            f"for different envs ({first['env'][0]} with {first['env'][1]}; "
                            f"{part['env'][0]} with {part['env'][1]}; {', '.join(differ)} "
                            "differ); their decisions are not one behaviour policy's")
    counts = {k: sum(p["counts"][k] for p in parts) for k in REASONS}
    n_logged = sum(p["n_logged"] for p in parts)
    if not any(len(p["lengths"]) for p in parts):
        why = "; ".join(f"{REASONS[k]}: {v}" for k, v in counts.items() if v)
        where = dirs[0] if not many else [str(d) for d in dirs]
        raise DataError(f"none of the {n_logged} decisions under {where} forms a whole "
                        f"episode ({why or 'no feedback at all'})")
    lengths = np.concatenate([p["lengths"] for p in parts])
    probs = [p["action_probs"] for p in parts]
    modes = sorted({m for p in parts for m in p["modes"]})
    eps = sorted({e for p in parts for e in p["epsilons"]})
    horizon = first["horizon"]
    meta = dict(
        source=", ".join(str(p["root"]) for p in parts), env_id=first["env"][0],
        env_config=first["env"][1], horizon=horizon,
        behaviour=", ".join(sorted({v for p in parts for v in p["versions"]})),
        arms="; ".join(dict.fromkeys(p["arms"] for p in parts)),
        exploration=modes[0] if len(modes) == 1 else "/".join(modes) or "?",
        epsilon=eps[0] if len(eps) == 1 else eps or None, decisions=n_logged,
        episodes=len(lengths), not_reconstructed={k: v for k, v in counts.items() if v},
        repeated_feedback=sum(p["repeated"] for p in parts),
        feedback_without_decision=sum(p["orphans"] for p in parts),
        log_dirs=[str(p["root"]) for p in parts], log_dirs_without=[str(r) for r in empty])
    joined = {k: np.concatenate([p[k] for p in parts])
              for k in ("obs", "action", "reward", "propensity", "done", "labels", "group")}
    # the users' groups where the clients sent them (issue 24; None where one did not)
    users = {"group": joined["group"]} if any(g is not None for g in joined["group"]) \
        else None
    return LoggedData(episode=np.repeat(np.arange(len(lengths)), lengths),
                      step=np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths,
                                                                lengths),
                      obs=joined["obs"], action=joined["action"], reward=joined["reward"],
                      propensity=joined["propensity"],
                      done=joined["done"] if horizon > 1 else np.ones(len(joined["action"]),
                                                                       bool),
                      n_actions=first["n_actions"],
                      action_probs=None if any(q is None for q in probs)
                      else np.concatenate(probs),
                      meta=meta, row_labels=joined["labels"], users=users)


def _read_root(root: Path, arm: str | None, version: str | None, strict: bool
               ) -> dict[str, Any] | None:
    """One log directory's whole episodes of the selection (``from_decision_logs``): their
    rows in episode and step order, with what was not rebuilt and why. ``None`` when the
    directory holds no decision of the selection — an error instead when ``strict``."""
    from agents.serving.decision_log import read_log
    from envs.registration import describe

    if not (root / "decisions").is_dir():
        raise DataError(f"{root} holds no decisions/ folder; give a server's log_dir (the "
                        "run directory's decision_logs/)")
    decisions, feedback = read_log(root, "decisions"), read_log(root, "feedback")
    d, f = f"{root} decisions", f"{root} feedback"
    n_logged = decisions.num_rows
    if n_logged == 0:
        if strict:
            raise DataError(f"no decisions logged under {root}")
        return None
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
    labels = _strings(decisions, "version")
    which = _serving_index(servings, column_vector(decisions, "time", d))
    mine = np.ones(n_logged, bool)
    for key, value, column in (("arm", arm, arms), ("version", version, labels)):
        if value is None:
            continue
        if value not in set(column.tolist()):
            if not strict:
                return None
            known = sorted({x for x in column.tolist() if x is not None})
            raise DataError(f"{key}={value!r} served no decision under {root}; {key}s: "
                            f"{known}")
        mine &= column == value
    if not mine.any():
        if strict:
            raise DataError(f"arm={arm!r} and version={version!r} together served no "
                            f"decision under {root}")
        return None
    env_id, env_config = _envs(root, servings, which[mine], arms[mine],
                               [sha for sha, m in zip(shas, mine) if m])
    try:
        core = describe(env_id, env_config)
    except Exception as exc:                         # noqa: BLE001 — named in the message
        raise DataError(f"{root}: the served env {env_id} with env_config {env_config} does "
                        f"not build here: {exc}") from None
    horizon = core.horizon

    step = pc.fill_null(decisions.column("step"), -1).to_numpy()     # -1: not given
    past = np.flatnonzero(step >= horizon)
    if len(past):
        i = int(past[0])
        raise DataError(f"{d}: decision {ids[i]!r} has step {step[i]}, but {env_id} with "
                        f"env_config {env_config} ends every episode within {horizon} "
                        f"decisions (steps 0..{horizon - 1}); {len(past)} decision(s) at or "
                        "past the horizon: the log is not from that env")
    has, reward, done, repeated, orphans = _feedback_of(np.array(ids, dtype=object),
                                                        feedback, f)
    if horizon == 1:                 # a decision is an episode: no episode_id is needed
        group = np.arange(n_logged)
    else:
        # episodes numbered in the order their first decision was logged; -1: no id
        group = pc.fill_null(decisions.column("episode_id").dictionary_encode()
                             .combine_chunks().indices, -1).to_numpy()
        if (group < 0).all():
            raise DataError(f"{d}: no decision has an episode_id (clients did not send one, "
                            f"or the server ran with log.user_id=drop), and {env_id} episodes "
                            f"last up to {horizon} decisions: they cannot be rebuilt. Send "
                            "episode_id and step with every /v1/act request")
    anonymous = decisions.column("user_id").is_null().to_numpy(zero_copy_only=False)
    selected = arm is not None or version is not None
    rows, lengths, counts = _whole_episodes(group, step, horizon, mine if selected else None,
                                            has, done, anonymous)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    propensity = column_vector(decisions, "propensity", d, numbers_only=True)[rows]
    all_probs = column_matrix(decisions, "action_probs", d)
    probs: np.ndarray | None = all_probs[rows]
    own = column_vector(decisions, "arm_propensity", d, numbers_only=True)[rows]
    shares = _shares(servings, which[rows], arms[rows])
    shared = shares[:, 1] > 0                    # another arm took part of the traffic
    if selected:
        propensity = own                         # the arm's own distribution is not logged
        probs = None if shared.any() else probs
    else:
        two_arms = shared & ~anonymous[rows]
        if two_arms.any():
            propensity = _sticky_propensities(propensity, own, shares, arms[rows], episode,
                                              two_arms)
            probs = None
    modes, eps = _explorations(decisions.take(rows))
    return dict(
        root=root, env=(env_id, env_config), horizon=horizon, n_logged=n_logged,
        n_actions=all_probs.shape[1], counts=counts, repeated=repeated, orphans=orphans,
        lengths=lengths, obs=column_matrix(decisions, "observation", d)[rows],
        action=column_vector(decisions, "action", d, numbers_only=True)[rows],
        reward=reward[rows], propensity=propensity, done=done[rows], action_probs=probs,
        labels=np.array(ids, dtype=object)[rows],
        group=np.array(decisions.column("group").take(rows).to_pylist(), dtype=object),
        versions={str(v) for v in decisions.column("version").take(rows).to_pylist()},
        arms=_describe_arms(servings, which[rows], arm, version), modes=modes, epsilons=eps)


def _whole_episodes(group: np.ndarray, step: np.ndarray, horizon: int,
                    mine: np.ndarray | None, has: np.ndarray, done: np.ndarray,
                    anonymous: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The whole episodes among a log's decisions (``from_decision_logs``), vectorised.

    Args (all ``(N,)`` over the logged decisions):
        group: each decision's episode (numbered in the order episodes were first logged),
            -1 without an ``episode_id``.
        step: its step, -1 where not given.
        mine: whether the requested arm/version made it (``None``: no selection).
        has, done: it has feedback; that feedback says ``done``.
        anonymous: it was made without a ``user_id``.

    Returns:
        ``(rows, lengths, counts)``: the kept decisions' row numbers, episode after episode
        (in ``group`` order) and step after step; each kept episode's length; and per reason
        of ``REASONS`` how many decisions (``no_episode_id``) or episodes were not kept —
        each episode counted under the first reason that applies: a reused id, the steps,
        another arm, feedback missing, not finished, done early, mixed assignment.
    """
    counts = dict.fromkeys(REASONS, 0)
    counts["no_episode_id"] = int((group < 0).sum())
    named = np.flatnonzero(group >= 0)
    order = named[np.lexsort((step[named], group[named]))]    # by episode, then step
    if not len(order):
        return order, np.zeros(0, np.int64), counts
    g, s = group[order], step[order]
    start = np.r_[True, g[1:] != g[:-1]]
    first = np.flatnonzero(start)
    length = np.diff(np.r_[first, len(order)])
    last = np.r_[start[1:], True]
    pos = np.arange(len(order)) - np.repeat(first, length)

    def anywhere(x: np.ndarray) -> np.ndarray:            # per episode: any row
        return np.logical_or.reduceat(x, first)

    missing = anywhere(s < 0)
    failed = {                                  # in the order they are checked
        "reused_episode_id": anywhere(np.r_[False, (s[1:] == s[:-1]) & ~start[1:]] & (s >= 0)),
        "steps": np.where(missing, horizon > 1, anywhere(s != pos)),
        "other_arm": anywhere(~mine[order]) if mine is not None else np.zeros(len(first), bool),
        "no_feedback": anywhere(~has[order]),
        "not_finished": ~done[order][last] & (horizon > 1),
        "done_early": anywhere(done[order] & ~last),
        "mixed_assignment": anywhere(anonymous[order]) & anywhere(~anonymous[order]),
    }
    table = np.array(list(failed.values()))
    reason, refused = table.argmax(axis=0), table.any(axis=0)
    for k, n in zip(failed, np.bincount(reason[refused], minlength=len(failed))):
        counts[k] = int(n)
    keep = ~refused
    return order[np.repeat(keep, length)], length[keep], counts


def _cumprod_within(x: np.ndarray, first: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``(N,)``: the running product of ``x`` within each episode (episodes contiguous,
    starting at rows ``first``, ``length`` rows each), left to right."""
    row = np.repeat(np.arange(len(first)), length)
    pos = np.arange(len(x)) - np.repeat(first, length)
    table = np.ones((len(first), int(length.max())))
    table[row, pos] = x
    return np.cumprod(table, axis=1)[row, pos]


def _sticky_propensities(mixture: np.ndarray, own: np.ndarray, shares: np.ndarray,
                         arm: np.ndarray, episode: np.ndarray, sticky: np.ndarray
                         ) -> np.ndarray:
    """Per-decision behaviour probabilities given the history, for episodes whose user kept
    their arm (``sticky`` rows) — ``B_t / B_{t-1}`` of the module doc, with the shares in
    force at the episode's first decision; other rows keep the mixture (and leave ``B``
    as it was). Arrays are over the kept rows (episodes contiguous, in step order):
    ``mixture`` and ``own`` the logged propensities, ``shares`` ``(N, 2)`` the serving
    arm's share and the other's, ``arm`` the serving arm's name."""
    served, other = shares[:, 0], shares[:, 1]
    # the other arm's probability of the action, from mixture = s·own + (1 − s)·other's
    # (clipped to [0, 1] against rounding only: the server computed the mixture this way)
    theirs = np.clip((mixture - served * own) / np.where(other > 0, other, 1.0), 0.0, 1.0)
    first = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
    length = np.diff(np.r_[first, len(episode)])
    at_start = np.repeat(first, length)
    same = arm == arm[at_start]          # served by the arm of the episode's first decision
    # Π_{s ≤ t} b(a_s | x_s) of that arm (A) and of the other (B)
    path_a = _cumprod_within(np.where(sticky, np.where(same, own, theirs), 1.0), first, length)
    path_b = _cumprod_within(np.where(sticky, np.where(same, theirs, own), 1.0), first, length)
    b_t = served[at_start] * path_a + other[at_start] * path_b
    b_before = np.r_[0.0, b_t[:-1]]
    b_before[first] = served[first] + other[first]       # B_{-1}: every path is 1
    return np.where(sticky, b_t / b_before, mixture)
