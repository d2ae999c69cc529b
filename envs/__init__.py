"""Gymnasium environments of PersonaRL; importing this package registers them.

Imports neither Ray nor torch. ``envs.creator.create_env`` is the env creator RLlib
registers (it returns the native VectorEnv when RLlib passes ``num_envs``).
"""

import gymnasium as gym

from envs.adaptation import ENV_ID as ADAPTATION_ID
from envs.adaptation import PersonalityAdaptationEnv, PersonalityAdaptationVectorEnv
from envs.intervention import ENV_ID as INTERVENTION_ID
from envs.intervention import InterventionTimingEnv, InterventionTimingVectorEnv
from envs.routing import ENV_ID as ROUTING_ID
from envs.routing import AgentRoutingEnv, AgentRoutingVectorEnv

__all__ = ["AgentRoutingEnv", "AgentRoutingVectorEnv", "InterventionTimingEnv",
           "InterventionTimingVectorEnv", "PersonalityAdaptationEnv",
           "PersonalityAdaptationVectorEnv", "ROUTING_ID", "INTERVENTION_ID", "ADAPTATION_ID",
           "ENV_IDS"]

ENV_IDS: tuple[str, ...] = (ROUTING_ID, ADAPTATION_ID, INTERVENTION_ID)

for _id, _module, _name in ((ROUTING_ID, "envs.routing", "AgentRouting"),
                            (ADAPTATION_ID, "envs.adaptation", "PersonalityAdaptation"),
                            (INTERVENTION_ID, "envs.intervention", "InterventionTiming")):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=f"{_module}:{_name}Env",
                     vector_entry_point=f"{_module}:{_name}VectorEnv")
