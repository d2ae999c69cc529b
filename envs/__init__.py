"""Gymnasium environments of PersonaRL; importing this package registers them.

Imports neither Ray nor torch. ``envs.creator.create_env`` is the env creator RLlib
registers (it returns the native VectorEnv when RLlib passes ``num_envs``).
"""

import gymnasium as gym

from envs.routing import ENV_ID as ROUTING_ID
from envs.routing import AgentRoutingEnv, AgentRoutingVectorEnv

__all__ = ["AgentRoutingEnv", "AgentRoutingVectorEnv", "ROUTING_ID", "ENV_IDS"]

ENV_IDS: tuple[str, ...] = (ROUTING_ID,)

if ROUTING_ID not in gym.registry:
    gym.register(id=ROUTING_ID, entry_point="envs.routing:AgentRoutingEnv",
                 vector_entry_point="envs.routing:AgentRoutingVectorEnv")
