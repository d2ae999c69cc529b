"""Persona evolution: drift, split, merge and new personas between time windows.

The persona fusion write-up (``../shared/seeds/rlhf-persona-fusion-engine.md``, "Evolution
Detection") names four kinds of change — a user or persona *drifting* to another, one
persona *splitting* into several, several *merging*, a *new* persona appearing — each
recorded with its source → target, strength, the users it affects and a review status
(pending / approved / rejected). ``EvolutionTracker`` finds them in the windows of users
that persist (``synth.windows``; features from ``ope.features``), one window at a time.

**The model and why the tests are calibrated.** Window 0's discovery (``synth.discovery``)
is the persona model ``M``; it is kept fixed until an event changes it. If the population
does not change, a user's windows are exchangeable given who the user is (fresh
interactions each window), so for any fixed model the pair of windows ``(w - 1, w)`` looks
the same read forwards and backwards. Two tests use this, from window 2 on:

* **Flows (drift).** Each user's persona under ``M`` in window ``w - 1`` and in ``w``:
  without change as many users go from persona ``i`` to ``j`` as from ``j`` to ``i``. Each
  pair is tested with McNemar's exact test (the binomial test of ``n_ij`` among
  ``n_ij + n_ji``; McNemar 1947); a pair that rejects (Holm over all pairs at ``alpha``)
  with a net flow of at least ``min_share`` of the source persona's users is a **drift**
  event, source ``i`` → target ``j``.
* **Change (something moved in a persona).** Each user's change of standardised features
  from window ``w - 1`` to ``w``, users grouped by their persona in window ``w - 2`` (a
  window neither side of the change uses, so the grouping leaves the pair exchangeable
  and the change symmetric about zero). For each persona, Hotelling's one-sample T² test
  (``hotelling_p``) of a zero mean change; a persona that rejects (Holm over the personas
  at ``alpha``) with a mean change of norm at least ``min_shift`` has *changed*.

**Naming a change.** For each changed persona: the direction of its mean change; the
users who *moved* (their change along it beyond the 95th percentile of the same users'
``|change|`` along it one window earlier — the noise); whether only *part* of it moved
(a spread along the direction wider than a window earlier: each user's absolute deviation
from the median now against a window earlier, the one-sided Wilcoxon signed-rank test at
``alpha`` — paired, since both changes share window ``w - 1``; conservative, since the
earlier change also carries the grouping window's noise); and the persona it moved
*toward* (the one whose centroid direction has a cosine of at least 1/2 with its change).
Then:

1. **merge** — two changed personas moving toward each other, most users of each moving;
2. **new** — users of two or more personas arriving, by drift events, in one persona and
   sitting farther from its centroid than its own users (one-sided Mann–Whitney U,
   ``alpha``), or parts of two or more personas moving to one place (their moved users'
   means nearer each other than either is to its own persona's centroid);
3. **split** — part of one persona moving, most of its moved users not now in a persona
   it drifted to;
4. **drift in place** (source → itself) — a changed persona that is none of these, did
   not drift to another persona and is no drift's target.

Drift events whose users mostly took part in a split or new persona, or that leave a
merging persona, are folded into that event; a drift into a merged-away persona ends in
the persona it joined.

**What cannot be seen.** A change needs three windows to be read (the grouping window and
the two compared), so one that shows in window 0 or 1 is never tested; after a refit at
window ``w`` the model was fitted on ``w``, so ``w`` to ``w + 1`` is not tested either.

"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from personarl.errors import ConfigError, DataError, check_range
from synth.discovery import Discovery, discover
from synth.features import BEHAVIOUR_FEATURES

__all__ = ["PersonaEvent", "EvolutionTracker", "review", "write_events", "read_events",
           "review_file", "transition_counts", "hotelling_p", "EVENT_KINDS", "STATUSES",
           "EVENT_COLUMNS"]

EVENT_KINDS = ("drift", "split", "merge", "new")
STATUSES = ("pending", "approved", "rejected")


@dataclass(frozen=True)
class PersonaEvent:
    """One detected change (module doc).

    Attributes:
        id: ``"w<window>-<n>"``, unique in a tracker's history.
        window: the window it was detected in.
        kind: ``"drift"``, ``"split"``, ``"merge"`` or ``"new"``.
        source, target: persona ids before → after (``EvolutionTracker.names`` names them).
        strength: drift between personas: the net share of the source's users that moved;
            a persona's own drift (source = target): the norm of its users' mean change
            (standardised units); split: the share of the source's users that moved; new:
            the moved users' share of all users; merge: the share of the distance between
            the two personas' means that closed.
        affected_users: ids of the users the event concerns.
        p_value: the largest p-value (Holm-adjusted within its family) among the tests
            that found it.
        status: ``"pending"`` until reviewed.
    """

    id: str
    window: int
    kind: Literal["drift", "split", "merge", "new"]
    source: tuple[int, ...]
    target: tuple[int, ...]
    strength: float
    affected_users: np.ndarray
    p_value: float
    status: str = "pending"


@dataclass
class _Window:
    users: np.ndarray            # sorted ids
    features: np.ndarray


class EvolutionTracker:
    """Finds persona evolution events window by window (module doc).

    Args:
        k: the number of personas of window 0 (``None``: ``discover`` chooses it from
            ``k_range`` by the silhouette).
        k_range: the candidates when ``k`` is ``None``.
        seed: seeds every k-means++ fit.
        alpha: the level of each window's tests: the flows' family and the personas'
            family are each Holm-corrected at ``alpha``; the follow-up tests that name a
            change run at ``alpha`` too (so a window's rate of false events can reach
            about twice ``alpha``).
        min_share: the smallest net flow reported as a drift, as a share of the source
            persona's users.
        min_shift: the smallest norm of a persona's mean change (standardised units) that
            counts as a change.
        reference: known archetypes' centroids (``synth.discovery.archetype_centroids``),
            naming the personas they pair with.
        archetype_names: the reference's names.
        names: the feature names.

    Raises:
        ConfigError: a setting outside its range.
    """

    def __init__(self, *, k: int | None = None, k_range: Sequence[int] = tuple(range(2, 11)),
                 seed: int = 0, alpha: float = 0.01,
                 min_share: float = 0.05, min_shift: float = 0.05,
                 reference: np.ndarray | None = None,
                 archetype_names: Sequence[str] = (),
                 names: Sequence[str] = BEHAVIOUR_FEATURES) -> None:
        self.k, self.k_range, self.seed = k, tuple(k_range), seed
        self.alpha = check_range("alpha", alpha, 0, 1, low_open=True, high_open=True)
        self.min_share = check_range("min_share", min_share, 0, 1)
        self.min_shift = check_range("min_shift", min_shift, 0, np.inf, high_open=True)
        self.reference, self.archetype_names = reference, tuple(archetype_names)
        self.feature_names = tuple(names)
        self.model: Discovery | None = None
        self.ids: np.ndarray = np.zeros(0, np.int64)    # persona id of each model cluster
        self.names: dict[int, str] = {}                  # persona id -> name
        self.events: list[PersonaEvent] = []
        self.sizes: list[dict[int, int]] = []            # per window: persona id -> users
        self._windows: list[_Window] = []                # the last three windows read
        self.windows_read = 0
        self._next_test = 2

    # ------------------------------------------------------------------ public
    def update(self, users: np.ndarray, features: np.ndarray) -> list[PersonaEvent]:
        """Read the next window: ``users`` ``(n,)`` ids (unique) and their ``features``
        ``(n, F)``; returns the events found in it (also kept in ``events``).

        Raises:
            DataError: an empty window, duplicate user ids, or bad features
                (``synth.discovery.discover``'s checks).
        """
        users, features = self._checked(users, features)
        w = self.windows_read
        if self.model is None:
            self._fit(discover(features, k=self.k, k_range=self.k_range, seed=self.seed,
                               names=self.feature_names, reference=self.reference))
        else:
            self.model.standardise(features)          # refused before anything changes
        self._windows = [*self._windows[-2:], _Window(users, features)]
        self.windows_read += 1
        events = self._test(w) if w >= self._next_test else []
        self.sizes.append({int(p): int(n) for p, n in zip(
            *np.unique(self.personas(features), return_counts=True))})
        self.events.extend(events)
        return events

    def review(self, event_id: str, status: str) -> PersonaEvent:
        """Set the review status of event ``event_id`` (``"approved"`` / ``"rejected"`` /
        ``"pending"``); returns the updated event.

        Raises:
            ConfigError: an unknown id (the known ones are listed) or status.
        """
        return review(self.events, event_id, status)

    # ------------------------------------------------------------------ the model
    def _checked(self, users: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        users = np.asarray(users)
        if users.ndim != 1:
            raise DataError(f"'users' has shape {users.shape}; expected (n,), one id per row "
                            "of features")
        if len(users) == 0:
            raise DataError("an empty window: no users")
        x = np.asarray(features, dtype=np.float64)
        if x.shape[:1] != users.shape:
            raise DataError(f"{len(users)} user ids but features of shape {x.shape}")
        order = np.argsort(users, kind="stable")
        users, x = users[order], x[order]
        dup = np.flatnonzero(users[1:] == users[:-1])
        if dup.size:
            raise DataError(f"user id {users[dup[0]].item()!r} appears twice in one window")
        return users, x

    def _fit(self, model: Discovery, ids: np.ndarray | None = None) -> None:
        """Make ``model`` the persona model; ``ids`` are its clusters' persona ids (new
        ones for any ``-1``)."""
        self.model = model
        ids = np.full(model.k, -1, np.int64) if ids is None else ids.copy()
        for j in np.flatnonzero(ids < 0):
            ids[j] = max(self.names, default=-1) + 1
            a = model.archetype[j]
            name = self.archetype_names[a] if 0 <= a < len(self.archetype_names) else None
            # an archetype's name goes to the first persona paired with it
            self.names[int(ids[j])] = (name if name and name not in self.names.values()
                                       else f"persona-{ids[j]}")
        self.ids = ids

    def personas(self, features: np.ndarray) -> np.ndarray:
        """``(n,)`` the persona id of each row of ``features`` under the current model.

        Raises:
            DataError: bad features; ConfigError: no window has been read yet.
        """
        if self.model is None:
            raise ConfigError("no persona model yet: update() the tracker with a window "
                              "first")
        return self.ids[self.model.predict(features)]

    # ------------------------------------------------------------------ the tests
    def _test(self, w: int) -> list[PersonaEvent]:
        from scipy.stats import binomtest
        from statsmodels.stats.multitest import multipletests
        old, prev, cur = self._windows
        common = np.intersect1d(np.intersect1d(old.users, prev.users), cur.users)
        if len(common) == 0:
            return []
        x_old = old.features[np.searchsorted(old.users, common)]
        x_prev = prev.features[np.searchsorted(prev.users, common)]
        x_cur = cur.features[np.searchsorted(cur.users, common)]
        group, before, after = (self.personas(x_old), self.personas(x_prev),
                                self.personas(x_cur))
        events: list[PersonaEvent] = []
        # flows between windows w - 1 and w
        ids = [int(p) for p in self.ids]
        flow = transition_counts(before, after, ids)
        pairs, p_flow = [], []
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                n_ij, n_ji = int(flow[a, b]), int(flow[b, a])
                if n_ij + n_ji:
                    pairs.append((ids[a], ids[b], n_ij, n_ji))
                    p_flow.append(binomtest(n_ij, n_ij + n_ji, 0.5).pvalue)
        if pairs:
            reject, adjusted, _, _ = multipletests(p_flow, self.alpha, method="holm")
            for (i, j, n_ij, n_ji), r, p in zip(pairs, reject, adjusted):
                src, dst = (i, j) if n_ij > n_ji else (j, i)
                net = abs(n_ij - n_ji) / max(int((before == src).sum()), 1)
                if r and net >= self.min_share:
                    moved = common[(before == src) & (after == dst)]
                    events.append(self._event(w, "drift", (src,), (dst,), net, moved, p))
        # each persona's mean change of features (grouped by window w - 2)
        change = self.model.standardise(x_cur) - self.model.standardise(x_prev)
        changed, p_changed = [], {}
        tested = [p for p in ids if (group == p).sum() > change.shape[1] + 1]
        if tested:
            p_res = [hotelling_p(change[group == p]) for p in tested]
            reject, adjusted, _, _ = multipletests(p_res, self.alpha, method="holm")
            for p, r, q in zip(tested, reject, adjusted):
                if r and np.linalg.norm(change[group == p].mean(0)) >= self.min_shift:
                    changed.append(p)
                    p_changed[p] = float(q)
        if changed:
            # the same users' change one window earlier: the noise a change is read against
            earlier = self.model.standardise(x_prev) - self.model.standardise(x_old)
            events = self._name_change(w, changed, p_changed, common, group, before, after,
                                       events, x_prev, x_cur, change, earlier)
        return [replace(e, id=f"w{w}-{n}") for n, e in enumerate(events)]

    def _name_change(self, w: int, changed: list[int], p_changed: dict[int, float],
                     common: np.ndarray, group: np.ndarray, before: np.ndarray,
                     after: np.ndarray, drifts: list[PersonaEvent], x_prev: np.ndarray,
                     x_cur: np.ndarray, change: np.ndarray, earlier: np.ndarray
                     ) -> list[PersonaEvent]:
        """The window's events: the flow ``drifts`` with the ``changed`` personas named —
        merge, new, split or in-place drift (module doc, "Naming a change"); refits the
        model for the first three."""
        from scipy.stats import mannwhitneyu, wilcoxon
        assert self.model is not None
        model = self.model
        index = {int(p): n for n, p in enumerate(self.ids)}
        centroid = model.standardise(model.centroids)
        moved_of, share, mixed, toward = {}, {}, {}, {}
        for c in changed:
            mine = group == c
            step = change[mine].mean(0)
            direction = step / np.linalg.norm(step)
            along = change[mine] @ direction
            null = earlier[mine] @ direction        # the same users, a window earlier
            moved_of[c] = mine.copy()
            moved_of[c][mine] = along > np.quantile(np.abs(null), 0.95)
            share[c] = float(moved_of[c].sum() / mine.sum())
            # part of the persona moved (along its change, a spread wider than the same
            # users' a window earlier: paired absolute deviations from the medians), or all
            wider = np.abs(along - np.median(along)) - np.abs(null - np.median(null))
            mixed[c] = bool(wider.any() and wilcoxon(wider, alternative="greater").pvalue
                            <= self.alpha)
            # the persona it moved toward (cosine >= 1/2 with the way to its centroid)
            ways = {int(p): centroid[index[int(p)]] - centroid[index[c]]
                    for p in self.ids if int(p) != c}
            cosine = {p: float(v @ direction / np.linalg.norm(v)) for p, v in ways.items()}
            best = max(cosine, key=cosine.get)
            toward[c] = best if cosine[best] >= 0.5 else None
        # 1. merge: most of two changed personas moving toward each other
        merges: list[tuple[int, int]] = []
        for c in changed:
            d = toward[c]
            if (d is not None and d > c and d in changed and toward[d] == c
                    and min(share[c], share[d]) >= 0.5):
                merges.append((c, d))
        merged = {c for pair in merges for c in pair}
        # 2. new: several personas' users arriving in one persona, away from its centre
        found: list[_Moved] = []
        into: dict[int, list[int]] = {}
        for e in drifts:
            if e.source[0] not in merged:
                into.setdefault(e.target[0], []).append(e.source[0])
        distance = model.distances(x_cur).min(axis=1)
        for b, sources in into.items():
            arrived = np.isin(before, sources) & (after == b)
            stayed = (before == b) & (after == b)
            if len(sources) < 2 or not arrived.any() or not stayed.any():
                continue
            apart = mannwhitneyu(distance[arrived], distance[stayed],
                                 alternative="greater").pvalue
            if apart <= self.alpha:
                found.append(_Moved(tuple(sorted(sources)), arrived, max(apart, *(
                    e.p_value for e in drifts if e.target[0] == b and e.source[0] in sources))))
        joined = {c for m in found for c in m.sources}
        # 3. split: part of one persona moved, most of it not into a persona it drifted to
        drifted_to: dict[int, set[int]] = {}
        for e in drifts:
            drifted_to.setdefault(e.source[0], set()).add(e.target[0])

        def drifted(c: int) -> bool:
            """Most of ``c``'s moved users now sit in a persona ``c`` drifted to."""
            return bool(moved_of[c].any() and np.isin(
                after[moved_of[c]], list(drifted_to.get(c, ()))).mean() >= 0.5)

        found += [_Moved((c,), moved_of[c], p_changed[c]) for c in changed
                  if c not in merged and c not in joined and mixed[c] and not drifted(c)
                  and moved_of[c].any()]
        # ... unless the moved users of several went to one place: new
        places = [model.standardise(x_cur[m.users]).mean(0) for m in found]
        grown = []
        for together in _gather(places, [[centroid[index[c]] for c in m.sources]
                                         for m in found]):
            sources = tuple(sorted({c for n in together for c in found[n].sources}))
            users = np.any([found[n].users for n in together], axis=0)
            p = max(found[n].p_value for n in together)
            grown.append(("split" if len(sources) == 1 else "new", sources, users, p))
        named = merged | {c for _, g, _, _ in grown for c in g}
        # the drifts that were these events' users moving are folded into them; a drift
        # into a merged-away persona now ends in the persona it joined
        into_merged = {j: i for i, j in merges}
        events = [replace(e, target=(into_merged.get(e.target[0], e.target[0]),))
                  for e in drifts if e.source[0] not in merged and not any(
                      np.isin(e.affected_users, common[moved]).mean() >= 0.5
                      for _, _, moved, _ in grown)]
        first_new = max(self.names) + 1
        for n, (kind, g, moved, p) in enumerate(grown):
            if kind == "split":
                events.append(self._event(w, "split", g, (g[0], first_new + n),
                                          share[g[0]], common[moved], p))
            else:
                events.append(self._event(w, "new", g, (first_new + n,),
                                          moved.sum() / len(group), common[moved], p))
        for i, j in merges:
            then = [model.standardise(x_prev[group == c]).mean(0) for c in (i, j)]
            now_ = [model.standardise(x_cur[group == c]).mean(0) for c in (i, j)]
            closed = 1.0 - np.linalg.norm(now_[0] - now_[1]) / max(
                np.linalg.norm(then[0] - then[1]), 1e-12)
            events.append(self._event(w, "merge", (i, j), (i,), closed,
                                      common[(group == i) | (group == j)],
                                      max(p_changed[i], p_changed[j])))
        if merges or grown:
            self._refit(w, merges, [x_cur[moved].mean(0) for _, _, moved, _ in grown])
        # 4. what moved as a whole and was not a drift to another persona: in place
        events.extend(self._event(w, "drift", (c,), (c,),
                                  float(np.linalg.norm(change[group == c].mean(0))),
                                  common[group == c], p_changed[c])
                      for c in changed if c not in named and not drifted(c)
                      and toward[c] not in drifted_to.get(c, ())
                      and c not in {t for ts in drifted_to.values() for t in ts})
        return events

    def _refit(self, w: int, merges: list[tuple[int, int]], new_means: list[np.ndarray]
               ) -> None:
        """Refit the model on window ``w``: each merged pair ``(i, j)`` becomes persona
        ``i`` (started from the mean of the two centroids) and each of ``new_means``
        (feature units) a new persona; the other clusters start from their centroids."""
        assert self.model is not None
        cur = self._windows[-1]
        centroids = {int(p): self.model.centroids[n] for n, p in enumerate(self.ids)}
        for i, j in merges:
            centroids[i] = 0.5 * (centroids[i] + centroids[j])
            del centroids[j]
        ids = [*centroids, *(-1 for _ in new_means)]
        init = np.vstack([*centroids.values(), *new_means])
        self._fit(discover(cur.features, k=len(init), seed=self.seed, init=init,
                           names=self.feature_names, reference=self.reference),
                  np.array(ids, np.int64))
        self._next_test = w + 2

    def _event(self, w: int, kind: str, source: tuple[int, ...], target: tuple[int, ...],
               strength: float, affected: np.ndarray, p: float) -> PersonaEvent:
        """An event (its id is set once the window's events are all known)."""
        return PersonaEvent(id="", window=w, kind=kind,  # type: ignore[arg-type]
                            source=source, target=target, strength=float(strength),
                            affected_users=np.asarray(affected), p_value=float(p))


def review(events: list[PersonaEvent], event_id: str, status: str) -> PersonaEvent:
    """Set ``event_id``'s status in ``events`` (in place); returns the updated event.

    Raises:
        ConfigError: an unknown id (the known ones are listed) or status.
    """
    if status not in STATUSES:
        raise ConfigError(f"status={status!r}; valid: {list(STATUSES)}")
    for n, event in enumerate(events):
        if event.id == event_id:
            events[n] = replace(event, status=status)
            return events[n]
    known = [e.id for e in events]
    raise ConfigError(f"unknown event id {event_id!r}; known: {known[:20]}"
                      + (f" and {len(known) - 20} more" if len(known) > 20 else ""))


# ---------------------------------------------------------------- events on disk
EVENT_COLUMNS = ("id", "window", "kind", "source", "target", "source_ids", "target_ids",
                 "strength", "p_value", "affected", "affected_users", "status")


def write_events(events: Sequence[PersonaEvent], names: dict[int, str], path: str | Path
                 ) -> Path:
    """``events`` as a Parquet table at ``path`` (one row each, ``EVENT_COLUMNS``: persona
    names and ids, the number of affected users and their ids — integers, or text when
    any event's ids are not integers), written to a temporary file first and moved into
    place, so a reader never sees half a file.

    Raises:
        ConfigError: ``path`` cannot be written (the message says why).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = Path(path)
    strings, ints = pa.list_(pa.string()), pa.list_(pa.int64())
    numbered = all(np.issubdtype(np.asarray(e.affected_users).dtype, np.integer)
                   for e in events)          # user ids are integers, else kept as text
    table = pa.table({
        "id": pa.array([e.id for e in events], pa.string()),
        "window": pa.array([e.window for e in events], pa.int64()),
        "kind": pa.array([e.kind for e in events], pa.string()),
        "source": pa.array([[names[i] for i in e.source] for e in events], strings),
        "target": pa.array([[names[i] for i in e.target] for e in events], strings),
        "source_ids": pa.array([list(e.source) for e in events], ints),
        "target_ids": pa.array([list(e.target) for e in events], ints),
        "strength": pa.array([e.strength for e in events], pa.float64()),
        "p_value": pa.array([e.p_value for e in events], pa.float64()),
        "affected": pa.array([len(e.affected_users) for e in events], pa.int64()),
        "affected_users": pa.array(
            [[u if numbered else str(u) for u in np.asarray(e.affected_users).tolist()]
             for e in events], ints if numbered else strings),
        "status": pa.array([e.status for e in events], pa.string())})
    table = table.replace_schema_metadata({"personas": json.dumps(
        {str(k): v for k, v in names.items()})})
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ConfigError(f"cannot write events to {str(path)!r}: {exc}") from None
    return path


def read_events(path: str | Path) -> tuple[list[PersonaEvent], dict[int, str]]:
    """The events and persona names ``write_events`` wrote at ``path``.

    Raises:
        DataError: no such file, not Parquet, or not an events table (the missing columns
            are named).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no events file at {str(path)!r} (experiments.discover writes "
                        "<run dir>/events.parquet)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{str(path)!r} is not a Parquet events file: {exc}") from None
    missing = [c for c in EVENT_COLUMNS if c not in table.column_names]
    meta = table.schema.metadata or {}
    if missing or b"personas" not in meta:
        raise DataError(f"{str(path)!r} is not an events file: missing "
                        f"{missing or ['the personas metadata']}")
    names = {int(k): v for k, v in json.loads(meta[b"personas"]).items()}
    rows = table.to_pylist()
    return [PersonaEvent(id=r["id"], window=r["window"], kind=r["kind"],
                         source=tuple(r["source_ids"]), target=tuple(r["target_ids"]),
                         strength=r["strength"], affected_users=np.asarray(r["affected_users"]),
                         p_value=r["p_value"], status=r["status"]) for r in rows], names


def review_file(path: str | Path, event_id: str, status: str) -> PersonaEvent:
    """Set event ``event_id``'s status in the events file at ``path`` (rewritten whole,
    atomically); returns the updated event.

    Raises:
        DataError: the file cannot be read as events.
        ConfigError: an unknown id or status, or the file cannot be written.
    """
    events, names = read_events(path)
    event = review(events, event_id, status)
    write_events(events, names, path)
    return event


def transition_counts(before: np.ndarray, after: np.ndarray, ids: Sequence[int]
                      ) -> np.ndarray:
    """``(K, K)`` users by persona in ``before`` (rows) and in ``after`` (columns), ``K``
    the persona ids ``ids`` in that order (every label must be one of them)."""
    ids = np.asarray(ids, np.int64)
    position = np.full(ids.max() + 1, -1, np.int64)
    position[ids] = np.arange(len(ids))
    k = len(ids)
    return np.bincount(position[before] * k + position[after], minlength=k * k).reshape(k, k)


def hotelling_p(x: np.ndarray) -> float:
    """The p-value of Hotelling's one-sample T² test (Hotelling 1931) that the rows of
    ``x`` ``(n, p)`` have mean zero: ``T² = n · m' S⁺ m`` with the sample mean ``m`` and
    covariance ``S`` (its pseudo-inverse, so linearly dependent columns — task shares sum
    to one — count once: ``p`` is ``S``'s rank), and ``(n - p) / (p (n - 1)) · T²``
    F-distributed with ``(p, n - p)`` degrees of freedom under the null."""
    from scipy.stats import f
    n = len(x)
    m = x.mean(axis=0)
    s = np.cov(x, rowvar=False)
    p = int(np.linalg.matrix_rank(s))
    if p == 0 or n <= p:
        return 1.0
    t2 = n * float(m @ np.linalg.pinv(s) @ m)
    return float(f.sf((n - p) / (p * (n - 1)) * t2, p, n - p))


@dataclass(frozen=True)
class _Moved:
    """Users of ``sources`` who moved somewhere together (a split or new candidate)."""

    sources: tuple[int, ...]
    users: np.ndarray             # mask over the compared users
    p_value: float


def _gather(places: list[np.ndarray], anchors: list[list[np.ndarray]]) -> list[list[int]]:
    """Candidates whose moved users went to one place, grouped (single linkage): two join
    when their moved users' means ``places`` (standardised) are nearer each other than
    either moved from home (the nearest of its source personas' centroids ``anchors``)."""
    moved = [min(np.linalg.norm(p - a) for a in home) for p, home in zip(places, anchors)]

    def near(i: int, j: int) -> bool:
        return bool(np.linalg.norm(places[i] - places[j]) < max(moved[i], moved[j]))

    groups = [[n] for n in range(len(places))]
    joined = True
    while joined:
        joined = False
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                if any(near(i, j) for i in groups[a] for j in groups[b]):
                    groups[a] += groups.pop(b)
                    joined = True
                    break
            if joined:
                break
    return groups
