"""The behaviour-feature table of persona discovery, as a table generators are fitted to.

``behaviour_table(users, seed, interactions)`` simulates ``users`` users of a population
over one window of ``interactions`` interactions (``synth.windows.PersistentPopulation``)
and returns their observed behaviour features (``ope.features.window_features``: the
``synth.features.BEHAVIOUR_FEATURES`` — five task shares, mean and SD of log latency,
exploring rate) with each user's ``consent``; ``behaviour_spec()`` declares them with
public bounds: shares in [0, 1], the mean of log latency in [−3, 7] log seconds (0.05 s to
18 minutes) and its SD in [0, 3].
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from synth.features import BEHAVIOUR_FEATURES
from synth.generators.table import Column, TableSpec

__all__ = ["behaviour_spec", "behaviour_table", "BOUNDS"]

BOUNDS = {"log_latency_mean": (-3.0, 7.0), "log_latency_sd": (0.0, 3.0)}


def behaviour_spec() -> TableSpec:
    """The behaviour features' columns (module doc)."""
    return TableSpec(tuple(Column(name, "continuous", BOUNDS.get(name, (0.0, 1.0)))
                           for name in BEHAVIOUR_FEATURES))


def behaviour_table(users: int, seed: int = 0, interactions: int = 50,
                    sampler=None) -> pd.DataFrame:  # noqa: ANN001 (PopulationSampler)
    """``users`` users' observed behaviour features over one window, and their consent
    (module doc); ``sampler`` defaults to the default population.

    Raises:
        ConfigError: ``users`` or ``interactions`` not a positive integer.
    """
    from ope.features import window_features
    from synth.population import PopulationSampler
    from synth.windows import PersistentPopulation

    sampler = sampler or PopulationSampler()
    population = PersistentPopulation(sampler, users, np.random.default_rng(seed))
    features, _ = window_features(population.window(interactions))
    table = pd.DataFrame(features.values, columns=list(features.names))
    table["consent"] = population.users.consent
    return table
