"""Persona archetypes: documented priors over traits and behaviour.

Six archetypes come from the persona fusion write-up (explorer, optimizer, socializer,
achiever, helper, learner). Each is a prior over

* the ten personality traits (means in [0, 1]; users scatter around them in logit space),
* five behaviours in [0, 1]:

  ============================ ==========================================================
  ``engagement_depth``         how far the user reads: scales scroll depth and dwell time
  ``response_timing``          how fast the user answers: median latency 30 s · e^(-3·x)
  ``conversion_propensity``    chance that a fully satisfied interaction converts
  ``sharing``                  chance that a fully satisfied interaction is shared
  ``exploration``              chance of exploring beyond the answer in one interaction
  ============================ ==========================================================

* the task types the user brings (a distribution over ``TASK_TYPES``), and
* the device the user is on (a distribution over ``DEVICES``).

Default values (traits in ``TRAITS`` order)::

                 open consc extra agree neuro humor empat forma direc enthu
    explorer     .85  .40   .60   .55   .40   .70   .50   .30   .50   .80
    optimizer    .45  .85   .40   .45   .35   .25   .35   .65   .85   .45
    socializer   .60  .45   .85   .75   .45   .75   .70   .25   .40   .80
    achiever     .50  .75   .65   .35   .40   .40   .30   .55   .80   .70
    helper       .55  .60   .55   .85   .50   .50   .85   .40   .35   .60
    learner      .75  .70   .35   .60   .45   .40   .55   .60   .50   .55

                 depth timing conversion sharing exploration
    explorer     .45   .60    .30        .40     .75
    optimizer    .35   .85    .55        .15     .20
    socializer   .40   .55    .30        .80     .45
    achiever     .50   .75    .60        .45     .30
    helper       .55   .40    .35        .55     .35
    learner      .65   .25    .40        .25     .55

                 content offer support research analysis | desktop mobile tablet
    explorer     .35     .10   .10     .30      .15      | .40     .50    .10
    optimizer    .10     .35   .10     .15      .30      | .70     .25    .05
    socializer   .45     .15   .20     .10      .10      | .20     .70    .10
    achiever     .20     .35   .10     .10      .25      | .50     .40    .10
    helper       .15     .10   .50     .15      .10      | .40     .40    .20
    learner      .10     .05   .15     .45      .25      | .60     .20    .20

Custom archetypes are ``ArchetypeSpec`` values (or plain dicts from config) passed to
``ArchetypeTable.from_specs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from personarl.errors import ConfigError

__all__ = [
    "TRAITS", "BEHAVIOURS", "TASK_TYPES", "DEVICES", "ARCHETYPE_NAMES",
    "ArchetypeSpec", "ArchetypeTable", "DEFAULT_ARCHETYPES", "default_table",
]

TRAITS: tuple[str, ...] = (
    "openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism",
    "humor", "empathy", "formality", "directness", "enthusiasm",
)
BEHAVIOURS: tuple[str, ...] = (
    "engagement_depth", "response_timing", "conversion_propensity", "sharing", "exploration",
)
TASK_TYPES: tuple[str, ...] = (
    "content_generation", "offer_routing", "support", "research", "analysis",
)
DEVICES: tuple[str, ...] = ("desktop", "mobile", "tablet")


@dataclass(frozen=True)
class ArchetypeSpec:
    """One archetype: a named prior over traits, behaviour, task types and devices.

    Args:
        name: unique name.
        traits: mean of each trait in ``TRAITS`` order, each in [0, 1].
        behaviour: each behaviour in ``BEHAVIOURS`` order, in [0, 1].
        task_preferences: probability of each task type in ``TASK_TYPES`` order (sums to 1).
        device_preferences: probability of each device in ``DEVICES`` order (sums to 1).
    """

    name: str
    traits: tuple[float, ...]
    behaviour: tuple[float, ...]
    task_preferences: tuple[float, ...]
    device_preferences: tuple[float, ...] = field(default=(0.45, 0.45, 0.10))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "ArchetypeSpec":
        """Build a spec from a config mapping; traits/behaviour may be dicts by name."""
        known = {"name", "traits", "behaviour", "task_preferences", "device_preferences"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown archetype keys {sorted(unknown)}; valid keys are {sorted(known)}"
            )
        if "name" not in data:
            raise ConfigError("an archetype needs a 'name'")
        name = str(data["name"])
        kwargs: dict[str, Any] = {"name": name}
        for key, names in (("traits", TRAITS), ("behaviour", BEHAVIOURS),
                           ("task_preferences", TASK_TYPES), ("device_preferences", DEVICES)):
            if key not in data:
                if key == "device_preferences":
                    continue
                raise ConfigError(f"archetype {name!r} needs {key!r} ({', '.join(names)})")
            kwargs[key] = _as_vector(f"{name}.{key}", data[key], names)
        return cls(**kwargs)


def _as_vector(where: str, value: Any, names: Sequence[str]) -> tuple[float, ...]:
    if isinstance(value, Mapping):
        unknown = set(value) - set(names)
        missing = set(names) - set(value)
        if unknown or missing:
            raise ConfigError(
                f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; "
                f"expected exactly {list(names)}"
            )
        return tuple(float(value[n]) for n in names)
    seq = tuple(float(v) for v in value)
    if len(seq) != len(names):
        raise ConfigError(f"{where} has {len(seq)} values; expected {len(names)} ({list(names)})")
    return seq


DEFAULT_ARCHETYPES: tuple[ArchetypeSpec, ...] = (
    ArchetypeSpec("explorer",
                  (.85, .40, .60, .55, .40, .70, .50, .30, .50, .80),
                  (.45, .60, .30, .40, .75), (.35, .10, .10, .30, .15), (.40, .50, .10)),
    ArchetypeSpec("optimizer",
                  (.45, .85, .40, .45, .35, .25, .35, .65, .85, .45),
                  (.35, .85, .55, .15, .20), (.10, .35, .10, .15, .30), (.70, .25, .05)),
    ArchetypeSpec("socializer",
                  (.60, .45, .85, .75, .45, .75, .70, .25, .40, .80),
                  (.40, .55, .30, .80, .45), (.45, .15, .20, .10, .10), (.20, .70, .10)),
    ArchetypeSpec("achiever",
                  (.50, .75, .65, .35, .40, .40, .30, .55, .80, .70),
                  (.50, .75, .60, .45, .30), (.20, .35, .10, .10, .25), (.50, .40, .10)),
    ArchetypeSpec("helper",
                  (.55, .60, .55, .85, .50, .50, .85, .40, .35, .60),
                  (.55, .40, .35, .55, .35), (.15, .10, .50, .15, .10), (.40, .40, .20)),
    ArchetypeSpec("learner",
                  (.75, .70, .35, .60, .45, .40, .55, .60, .50, .55),
                  (.65, .25, .40, .25, .55), (.10, .05, .15, .45, .25), (.60, .20, .20)),
)
ARCHETYPE_NAMES: tuple[str, ...] = tuple(a.name for a in DEFAULT_ARCHETYPES)


@dataclass(frozen=True)
class ArchetypeTable:
    """Archetype priors stacked into arrays (one row per archetype).

    Attributes:
        names: archetype names, row order.
        traits: ``(A, 10)`` trait means.
        behaviour: ``(A, 5)`` behaviour values.
        task_preferences: ``(A, T)`` task-type distributions.
        device_preferences: ``(A, 3)`` device distributions.
    """

    names: tuple[str, ...]
    traits: np.ndarray
    behaviour: np.ndarray
    task_preferences: np.ndarray
    device_preferences: np.ndarray

    @classmethod
    def from_specs(cls, specs: Iterable[ArchetypeSpec | Mapping[str, Any]]) -> "ArchetypeTable":
        """Validate and stack specs; raises ``ConfigError`` naming the bad value."""
        parsed = [s if isinstance(s, ArchetypeSpec) else ArchetypeSpec.from_mapping(s)
                  for s in specs]
        if len(parsed) < 2:
            raise ConfigError(f"need at least 2 archetypes, got {len(parsed)}")
        names = tuple(s.name for s in parsed)
        if len(set(names)) != len(names):
            raise ConfigError(f"archetype names must be unique, got {list(names)}")
        table = cls(
            names=names,
            traits=np.array([s.traits for s in parsed], dtype=np.float64),
            behaviour=np.array([s.behaviour for s in parsed], dtype=np.float64),
            task_preferences=np.array([s.task_preferences for s in parsed], dtype=np.float64),
            device_preferences=np.array([s.device_preferences for s in parsed], dtype=np.float64),
        )
        table.validate()
        return table

    def validate(self) -> None:
        """Raise ``ConfigError`` if any prior is outside its valid range."""
        for label, arr, cols in (("traits", self.traits, TRAITS),
                                 ("behaviour", self.behaviour, BEHAVIOURS)):
            bad = np.argwhere(~((arr >= 0.0) & (arr <= 1.0)))
            if bad.size:
                i, j = bad[0]
                raise ConfigError(
                    f"archetype {self.names[i]!r} {label}.{cols[j]}={float(arr[i, j])!r} "
                    "is outside [0, 1]"
                )
        for label, arr in (("task_preferences", self.task_preferences),
                           ("device_preferences", self.device_preferences)):
            for i, row in enumerate(arr):
                if np.any(row < 0) or not np.isclose(row.sum(), 1.0, atol=1e-6):
                    raise ConfigError(
                        f"archetype {self.names[i]!r} {label}={row.tolist()} must be "
                        "non-negative and sum to 1"
                    )

    @property
    def size(self) -> int:
        """Number of archetypes."""
        return len(self.names)

    def index(self, name: str) -> int:
        """Row of archetype ``name``; ``ConfigError`` lists the valid names otherwise."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ConfigError(
                f"unknown archetype {name!r}; valid archetypes are {list(self.names)}"
            ) from None


def default_table() -> ArchetypeTable:
    """The six documented archetypes."""
    return ArchetypeTable.from_specs(DEFAULT_ARCHETYPES)
