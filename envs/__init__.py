"""Gymnasium environments of PersonaRL; importing this package registers them.

Each env module ends with ``register(EnvRecord(...))`` (``envs.registration``): the one
record the rest of the code reads. ``env_ids()`` lists every registered id, including any
registered after import. Imports neither Ray nor torch. ``envs.creator.create_env`` is the
env creator RLlib registers (it returns the native VectorEnv when RLlib passes
``num_envs``); ``envs.contract`` is the contract every registered env keeps.
"""

from envs.registration import EnvRecord, env_ids, record, register
from envs.routing import ENV_ID as ROUTING_ID
from envs.routing import AgentRoutingEnv, AgentRoutingVectorEnv
from envs.adaptation import ENV_ID as ADAPTATION_ID
from envs.adaptation import PersonalityAdaptationEnv, PersonalityAdaptationVectorEnv
from envs.intervention import ENV_ID as INTERVENTION_ID
from envs.intervention import InterventionTimingEnv, InterventionTimingVectorEnv

__all__ = ["AgentRoutingEnv", "AgentRoutingVectorEnv", "InterventionTimingEnv",
           "InterventionTimingVectorEnv", "PersonalityAdaptationEnv",
           "PersonalityAdaptationVectorEnv", "ROUTING_ID", "INTERVENTION_ID", "ADAPTATION_ID",
           "EnvRecord", "register", "record", "env_ids"]
