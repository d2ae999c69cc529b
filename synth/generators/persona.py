"""The latent persona table the envs consume, and a generator of it as a population.

``persona_table`` turns a ``Population`` into one row per user (``persona_spec``):

==================  ===========  ======================================================
``w_<archetype>``   weight       the archetype mixture (one column per latent archetype)
``offset_<trait>``  continuous   the per-user logit-space trait offset, public bounds
                                 ``±max(6 · trait_noise, 0.05)`` of the population config
``group``           categorical  the demographic group
``device``          categorical  ``synth.archetypes.DEVICES``
``age_band``        categorical  ``synth.demographics.AGE_BANDS``
``region``          categorical  the region of the user's city (``REGIONS``)
``bot``             categorical  ``human``, ``bot`` or ``slow_bot``
==================  ===========  ======================================================

plus ``consent`` (the fit keeps only consenting users) — the table a platform would hold of
its users if it knew their personas; "real" is a population sampled from the simulator.

``population_from_rows`` turns generated rows back into a ``Population``: primary = the
largest weight, traits ``sigmoid(logit(w @ trait_means) + offset)`` with the sampler's
archetype table (``PopulationSampler.traits_of``), the city drawn within the generated
region by the published city shares (``synth.demographics.CITY_SHARES``: public
geography, not data); consent and missing metadata — settings of the simulator, not facts
about a user a generator learnt — are drawn at the population config's rates. A population
config with ``generator: <file>`` (the ``persona`` config option, ``synth.population``)
samples its users this way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from personarl.errors import ConfigError
from synth.archetypes import DEVICES, TRAITS
from synth.demographics import AGE_BANDS, CITY_REGION, CITY_SHARES, REGIONS
from synth.generators.table import Column, TableSpec

__all__ = ["persona_spec", "persona_table", "population_from_rows", "load_population_generator",
           "BOT_KINDS"]

BOT_KINDS = ("human", "bot", "slow_bot")


def persona_spec(sampler) -> TableSpec:  # noqa: ANN001 (PopulationSampler)
    """The persona table's columns for ``sampler``'s archetypes and groups."""
    bound = max(6.0 * sampler.trait_noise, 0.05)
    return TableSpec(tuple(
        [Column(f"w_{a}", "weight") for a in sampler.tables[0].names]
        + [Column(f"offset_{t}", "continuous", (-bound, bound)) for t in TRAITS]
        + [Column("group", "categorical", categories=sampler.group_names),
           Column("device", "categorical", categories=DEVICES),
           Column("age_band", "categorical", categories=AGE_BANDS),
           Column("region", "categorical", categories=REGIONS),
           Column("bot", "categorical", categories=BOT_KINDS)]))


def persona_table(pop, sampler) -> pd.DataFrame:  # noqa: ANN001
    """One row per user of ``pop`` (module doc), with ``consent``."""
    names = sampler.tables[0].names
    out = {f"w_{a}": pop.weights[:, i] for i, a in enumerate(names)}
    out.update({f"offset_{t}": pop.trait_offset[:, i] for i, t in enumerate(TRAITS)})
    out["group"] = np.asarray(sampler.group_names, dtype=object)[pop.group]
    out["device"] = np.asarray(DEVICES, dtype=object)[pop.device]
    out["age_band"] = np.asarray(AGE_BANDS, dtype=object)[pop.age_band]
    out["region"] = np.asarray(REGIONS, dtype=object)[CITY_REGION[pop.city]]
    out["bot"] = np.asarray(BOT_KINDS, dtype=object)[pop.is_bot.astype(np.int64) + pop.slow_bot]
    out["consent"] = np.asarray(pop.consent, dtype=bool)
    return pd.DataFrame(out)


#: each region's cities and their shares within it
_REGION_CITIES = [np.flatnonzero(CITY_REGION == r) for r in range(len(REGIONS))]
_REGION_CDF = [np.cumsum(CITY_SHARES[c]) / CITY_SHARES[c].sum() for c in _REGION_CITIES]


def population_from_rows(rows: pd.DataFrame, sampler, rng: np.random.Generator,  # noqa: ANN001
                         time: np.ndarray):  # noqa: ANN201 (Population)
    """The ``Population`` of generated persona rows (module doc); ``time`` ``(n,)``."""
    from synth.population import Population

    n = len(rows)
    names = sampler.tables[0].names
    w = rows[[f"w_{a}" for a in names]].to_numpy(dtype=np.float64)
    offset = rows[[f"offset_{t}" for t in TRAITS]].to_numpy(dtype=np.float64)
    table_id = np.zeros(n, dtype=np.int64)

    def code(column: str, categories: Sequence[str]) -> np.ndarray:
        return pd.Categorical(rows[column], categories=categories).codes.astype(np.int64)

    region = code("region", REGIONS)
    u = rng.random((n, 4))
    city = np.empty(n, dtype=np.int64)
    for r, (cities, cdf) in enumerate(zip(_REGION_CITIES, _REGION_CDF)):
        mine = region == r
        city[mine] = cities[np.minimum(np.searchsorted(cdf, u[mine, 0], side="right"),
                                       len(cities) - 1)]
    bot = code("bot", BOT_KINDS)
    is_bot = bot > 0
    cfg = sampler.config
    missing_rate = np.where(is_bot, cfg.bot_missing_metadata, cfg.human_missing_metadata)
    return Population(
        weights=w, primary=w.argmax(axis=1), trait_offset=offset,
        traits=sampler.traits_of(w, np.exp(offset), table_id),
        group=code("group", list(sampler.group_names)), consent=u[:, 1] < cfg.consent_rate,
        is_bot=is_bot, slow_bot=bot == 2, device=code("device", DEVICES),
        metadata_missing=u[:, 2] < missing_rate, time=np.asarray(time), table_id=table_id,
        age_band=code("age_band", AGE_BANDS), city=city)


def load_population_generator(path: str | Path, sampler):  # noqa: ANN001, ANN201
    """The generator at ``path``, checked to make ``sampler``'s persona table.

    Raises:
        ConfigError: the sampler has scheduled events (a generator samples one fixed
            population), or the generator's columns are not the persona table's for this
            population (naming the difference: other archetypes or groups).
            Also for a file that is not a generator (``load_generator``), or one of
            another table.
    """
    from personarl.errors import DataError
    from synth.generators.base import load_generator

    if sampler.events:
        raise ConfigError("a population sampled from a generator has no scheduled events; "
                          "remove persona.events or persona.generator")
    try:
        gen = load_generator(path)
    except DataError as exc:
        raise ConfigError(f"persona.generator={str(path)!r}: {exc}") from None
    want = persona_spec(sampler)
    if not any(c.kind == "weight" for c in gen.spec.columns):
        raise ConfigError(f"persona.generator={str(path)!r} generates another table "
                          f"({', '.join(gen.spec.names[:4])}, ...), not personas: fit one "
                          "with python -m experiments.synthesize table=persona")
    shape = lambda spec: [(c.name, c.kind, c.categories) for c in spec.columns]  # noqa: E731
    if shape(gen.spec) != shape(want):
        have = {c.name: (c.kind, c.categories) for c in gen.spec.columns}
        need = {c.name: (c.kind, c.categories) for c in want.columns}
        diff = sorted(k for k in set(have) | set(need) if have.get(k) != need.get(k))
        raise ConfigError(f"generator {str(path)!r} does not model this population's persona "
                          f"table: columns {diff} differ (it models {gen.spec.names}); fit "
                          "it with python -m experiments.synthesize table=persona and the "
                          "same persona config")
    return gen
