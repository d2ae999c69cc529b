"""Synthetic users: archetypes, populations, drift, behaviour and persona fusion.

Needs only NumPy. Import names from here or from the submodules.
"""

from synth.archetypes import (ARCHETYPE_NAMES, BEHAVIOURS, DEVICES, TASK_TYPES, TRAITS,
                              ArchetypeSpec, ArchetypeTable, default_table)
from personarl.errors import (ConfigError, InvalidActionError, PersonaRLError,
                              ResetNeededError)
from synth.population import (HYBRID_THRESHOLD, Population, PopulationConfig,
                              PopulationEvent, PopulationSampler)

__all__ = [
    "ARCHETYPE_NAMES", "BEHAVIOURS", "DEVICES", "TASK_TYPES", "TRAITS",
    "ArchetypeSpec", "ArchetypeTable", "default_table",
    "ConfigError", "InvalidActionError", "PersonaRLError", "ResetNeededError",
    "HYBRID_THRESHOLD", "Population", "PopulationConfig", "PopulationEvent",
    "PopulationSampler",
]
