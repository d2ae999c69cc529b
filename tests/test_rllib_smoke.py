"""RLlib PPO (new API stack) trains on our native VectorEnvs via vector_entry_point."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray = pytest.importorskip("ray")
    import torch

    torch.set_num_threads(1)
    # a short temp dir: Ray's socket paths must stay under 107 characters
    temp = f"/tmp/ray-{os.getpid()}"
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("env_id, env_config", [
    ("personarl/AgentRouting-v0", {}),
    ("personarl/InterventionTiming-v0", {}),
    ("personarl/PersonalityAdaptation-v0", {}),
    ("personarl/PersonalityAdaptation-v0", {"action_mode": "continuous"}),
])
def test_ppo_trains_two_iterations_on_our_vector_env(ray_session, env_id, env_config):
    from ray.rllib.algorithms.ppo import PPOConfig

    from agents.rllib_env import register_envs
    from envs.batched import CoreVectorEnv

    register_envs()
    config = (
        PPOConfig()
        .environment(env_id, env_config={"info_level": "none", **env_config})
        .env_runners(num_env_runners=0, num_envs_per_env_runner=16,
                     gym_env_vectorize_mode="vector_entry_point")
        .training(train_batch_size_per_learner=512, minibatch_size=128, num_epochs=2)
    )
    algo = config.build_algo()
    try:
        assert isinstance(algo.env_runner.env.unwrapped, CoreVectorEnv)
        assert algo.env_runner.env.unwrapped.num_envs == 16
        steps = []
        for _ in range(2):
            result = algo.train()
            steps.append(result["env_runners"]["num_env_steps_sampled_lifetime"])
        assert steps[0] >= 512 and steps[1] >= steps[0] + 512
        assert result["training_iteration"] == 2
        assert result["env_runners"]["num_episodes_lifetime"] > 0
    finally:
        algo.stop()
