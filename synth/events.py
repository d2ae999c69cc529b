"""Scheduled population events: drift, split, merge and new archetypes.

Events are scheduled on *population time* (the index of the session a user is sampled for)
and never renumber archetypes: ``split`` and ``new`` append a row, ``merge`` pulls two
profiles together, ``drift`` moves proportion from one archetype to another.
``apply_events`` turns a schedule into one archetype table and one set of proportions per
epoch between events, all padded to the same number of rows so users from different epochs
share one array layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from synth.archetypes import (BEHAVIOURS, DEFAULT_ARCHETYPES, TASK_TYPES, TRAITS,
                              ArchetypeSpec, ArchetypeTable)
from personarl.errors import ConfigError, check_int, check_range

__all__ = ["PopulationEvent", "apply_events"]


@dataclass(frozen=True)
class PopulationEvent:
    """A scheduled change of the population.

    Args:
        kind: ``"drift"`` (move ``strength`` of ``source``'s proportion to ``target``),
            ``"split"`` (a new archetype ``name`` branches off ``source`` with traits shifted
            by ``trait_shift`` and takes ``strength`` of its proportion), ``"merge"`` (the
            profiles of ``source`` and ``target`` move ``strength`` of the way to their
            proportion-weighted average) or ``"new"`` (archetype ``spec`` — or, without a
            spec, archetype ``name`` made from ``source``'s profile and the shifts below —
            appears with proportion ``strength``; the others shrink).
        at: population time (session index) from which the event applies.
        source: archetype name (drift, split, merge).
        target: archetype name (drift, merge).
        strength: in (0, 1], see ``kind``.
        name: new archetype name (split; new without a spec).
        trait_shift: trait name -> shift added to the source's trait means (split; new
            without a spec).
        behaviour_shift: behaviour name (``BEHAVIOURS``) -> shift added to the source's
            behaviour (split; new without a spec). Traits are invisible to a platform; a
            behaviour or task shift is what behaviour-based discovery can see.
        task_shift: task type (``TASK_TYPES``) -> probability mass added to the source's
            task preferences, which are then renormalised (split; new without a spec).
        spec: the new archetype (new); an ``ArchetypeSpec`` or a mapping.

    A shifted trait or behaviour outside [0, 1], or a task preference below 0, raises
    ``ConfigError`` naming it (nothing is clipped).
    """

    kind: Literal["drift", "split", "merge", "new"]
    at: int
    source: str | None = None
    target: str | None = None
    strength: float = 1.0
    name: str | None = None
    trait_shift: Mapping[str, float] = field(default_factory=dict)
    behaviour_shift: Mapping[str, float] = field(default_factory=dict)
    task_shift: Mapping[str, float] = field(default_factory=dict)
    spec: ArchetypeSpec | Mapping[str, Any] | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | "PopulationEvent") -> "PopulationEvent":
        """Build from config; unknown keys raise ``ConfigError``."""
        if isinstance(data, PopulationEvent):
            return data
        valid = {"kind", "at", "source", "target", "strength", "name", "trait_shift",
                 "behaviour_shift", "task_shift", "spec"}
        unknown = set(data) - valid
        if unknown:
            raise ConfigError(f"unknown event keys {sorted(unknown)}; valid: {sorted(valid)}")
        return cls(**dict(data))

    @property
    def added(self) -> str | None:
        """The name of the archetype the event adds (split, new), else ``None``."""
        if self.kind == "split" or (self.kind == "new" and self.spec is None):
            return self.name
        if self.kind == "new":
            return self.spec.name if isinstance(self.spec, ArchetypeSpec) else \
                str(self.spec.get("name"))                    # type: ignore[union-attr]
        return None

    @property
    def shifted(self) -> bool:
        """Whether the event carries any trait, behaviour or task shift."""
        return bool(self.trait_shift or self.behaviour_shift or self.task_shift)


def _shift(label: str, shifts: Mapping[str, float], names: Sequence[str]) -> np.ndarray:
    """``shifts`` (name -> amount) as a vector over ``names``; ``ConfigError`` names an
    unknown name or a non-finite amount."""
    out = np.zeros(len(names))
    for key, delta in shifts.items():
        if key not in names:
            raise ConfigError(f"{label} names unknown {key!r}; valid: {list(names)}")
        try:
            value = float(delta)
        except (TypeError, ValueError):
            raise ConfigError(f"{label}[{key!r}]={delta!r} must be a finite number") from None
        if not np.isfinite(value):
            raise ConfigError(f"{label}[{key!r}]={delta!r} must be a finite number")
        out[names.index(key)] = value
    return out


def _shifted(where: str, base: np.ndarray, shifts: Mapping[str, float],
             names: Sequence[str]) -> np.ndarray:
    """``base`` plus ``shifts`` (name -> amount over ``names``); ``ConfigError`` if a value
    leaves [0, 1], naming it."""
    out = base + _shift(where, shifts, names)
    bad = np.flatnonzero((out < 0) | (out > 1))
    if bad.size:
        j = bad[0]
        raise ConfigError(f"{where} moves {names[j]} to {out[j]:.4g}, outside [0, 1] (it "
                          f"was {base[j]:.4g})")
    return out


def _shifted_profile(ev: PopulationEvent, cur: dict[str, np.ndarray], a: int, r: int) -> None:
    """Row ``r`` of the profile arrays ``cur`` := row ``a`` with ``ev``'s shifts."""
    where = f"{ev.kind} event {ev.name!r}"
    for k in cur:
        cur[k][r] = cur[k][a]
    cur["traits"][r] = _shifted(f"{where} trait_shift", cur["traits"][a], ev.trait_shift,
                                TRAITS)
    cur["behaviour"][r] = _shifted(f"{where} behaviour_shift", cur["behaviour"][a],
                                   ev.behaviour_shift, BEHAVIOURS)
    tasks = cur["task_preferences"][a] + _shift(f"{where} task_shift", ev.task_shift,
                                                TASK_TYPES)
    bad = np.flatnonzero(tasks < 0)
    if bad.size or tasks.sum() <= 0:
        j = bad[0] if bad.size else 0
        raise ConfigError(f"{where} task_shift moves {TASK_TYPES[j]} to {tasks[j]:.4g}; "
                          "task preferences cannot be negative and need some mass")
    cur["task_preferences"][r] = tasks / tasks.sum()


def apply_events(base: ArchetypeTable, props: np.ndarray, events: Sequence[PopulationEvent]
                  ) -> tuple[list[ArchetypeTable], np.ndarray, np.ndarray, list[int]]:
    """Per-epoch tables, proportions ``(E, A)``, existence masks ``(E, A)`` and the event
    times that start epochs 1..E-1."""
    added = [e for e in events if e.kind in ("split", "new")]
    width = base.size + len(added)
    names = list(base.names) + [None] * len(added)

    def pad(a: np.ndarray) -> np.ndarray:
        out = np.zeros((width,) + a.shape[1:])
        out[: a.shape[0]] = a
        return out

    cur = dict(traits=pad(base.traits), behaviour=pad(base.behaviour),
               task_preferences=pad(base.task_preferences),
               device_preferences=pad(base.device_preferences))
    # rows that do not exist yet still need valid distributions for einsum-based mixtures
    cur["task_preferences"][base.size:] = 1.0 / cur["task_preferences"].shape[1]
    cur["device_preferences"][base.size:] = 1.0 / cur["device_preferences"].shape[1]
    cur["traits"][base.size:] = 0.5
    p = pad(props[:, None])[:, 0]
    exists = np.zeros(width, bool)
    exists[: base.size] = True

    def snapshot() -> tuple[ArchetypeTable, np.ndarray]:
        label = tuple(n if n is not None else f"_unused{i}" for i, n in enumerate(names))
        return (ArchetypeTable(names=label, **{k: v.copy() for k, v in cur.items()}),
                exists.copy())

    tables, props_out, exists_out, bounds = [], [], [], []
    t0, e0 = snapshot()
    tables.append(t0), props_out.append(p.copy()), exists_out.append(e0)
    next_row = base.size
    for ev in events:
        check_int("event.at", ev.at, 0)
        if ev.kind not in ("drift", "split", "merge", "new"):
            raise ConfigError(f"event kind {ev.kind!r} is not one of drift, split, merge, new")
        s = check_range(f"{ev.kind} event strength", ev.strength, 0, 1, low_open=True)
        idx = {n: i for i, n in enumerate(names) if n is not None}

        def row(name: str | None, role: str) -> int:
            if name not in idx:
                raise ConfigError(f"{ev.kind} event {role}={name!r} is not an archetype; "
                                  f"valid: {sorted(idx)}")
            return idx[name]

        if ev.shifted and ev.kind in ("drift", "merge"):
            raise ConfigError(f"a {ev.kind} event takes no trait/behaviour/task shift (only "
                              "split and new do); its strength says how far it moves")
        if ev.kind == "drift":
            a, b = row(ev.source, "source"), row(ev.target, "target")
            moved = s * p[a]
            p[a] -= moved
            p[b] += moved
        elif ev.kind == "split":
            a = row(ev.source, "source")
            if not ev.name or ev.name in idx:
                raise ConfigError(f"split event needs a new, unused name; got {ev.name!r}")
            r = next_row
            next_row += 1
            names[r] = ev.name
            _shifted_profile(ev, cur, a, r)
            moved = s * p[a]
            p[a] -= moved
            p[r] = moved
            exists[r] = True
        elif ev.kind == "merge":
            a, b = row(ev.source, "source"), row(ev.target, "target")
            total = p[a] + p[b]
            wa = p[a] / total if total > 0 else 0.5
            for k in cur:
                avg = wa * cur[k][a] + (1 - wa) * cur[k][b]
                cur[k][a] += s * (avg - cur[k][a])
                cur[k][b] += s * (avg - cur[k][b])
        elif ev.spec is None:  # new, like an existing archetype but shifted
            if ev.source is None:
                raise ConfigError("a 'new' event needs a 'spec' (an archetype definition) "
                                  "or a 'source' archetype and shifts to derive it from")
            a = row(ev.source, "source")
            if not ev.name or ev.name in idx:
                raise ConfigError(f"new event needs a new, unused name; got {ev.name!r}")
            if not ev.shifted:
                raise ConfigError(f"new event {ev.name!r} derived from {ev.source!r} needs "
                                  "a trait, behaviour or task shift (else it is a copy)")
            r = next_row
            next_row += 1
            names[r] = ev.name
            _shifted_profile(ev, cur, a, r)
            p *= 1 - s
            p[r] = s
            exists[r] = True
        else:  # new, from its spec
            if ev.shifted:
                raise ConfigError(f"new event with a spec takes no shifts (the spec is the "
                                  f"archetype); got a shift for {ev.spec!r:.60}")
            spec = ev.spec if isinstance(ev.spec, ArchetypeSpec) else \
                ArchetypeSpec.from_mapping(ev.spec)
            if spec.name in idx:
                raise ConfigError(f"new archetype name {spec.name!r} already exists")
            ArchetypeTable.from_specs([spec, DEFAULT_ARCHETYPES[0]])  # validates ranges
            r = next_row
            next_row += 1
            names[r] = spec.name
            cur["traits"][r] = spec.traits
            cur["behaviour"][r] = spec.behaviour
            cur["task_preferences"][r] = spec.task_preferences
            cur["device_preferences"][r] = spec.device_preferences
            p *= 1 - s
            p[r] = s
            exists[r] = True
        t, e = snapshot()
        if bounds and bounds[-1] == ev.at:   # several events at the same time: keep the last
            tables[-1], props_out[-1], exists_out[-1] = t, p.copy(), e
        else:
            bounds.append(ev.at)
            tables.append(t), props_out.append(p.copy()), exists_out.append(e)
    return tables, np.stack(props_out), np.stack(exists_out), bounds
