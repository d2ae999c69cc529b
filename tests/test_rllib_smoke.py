"""RLlib PPO (new API stack) trains on our native VectorEnvs via vector_entry_point."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

AGENT = dict(num_env_runners=0, num_envs_per_env_runner=16, lr=3e-4, gamma=0.99,
             gae_lambda=0.95, clip_param=0.2, entropy_coeff=0.01, vf_loss_coeff=0.5,
             grad_clip=0.5, kl_coeff=0.2, num_epochs=2, train_batch_size=512, minibatch_size=128,
             hidden=[32, 32], activation="tanh")


@pytest.mark.parametrize("env_id, env_config", [
    ("personarl/AgentRouting-v0", {}),
    ("personarl/InterventionTiming-v0", {}),
    ("personarl/PersonalityAdaptation-v0", {}),
    ("personarl/PersonalityAdaptation-v0", {"action_mode": "continuous"}),
])
def test_ppo_trains_two_iterations_on_our_vector_env(ray_session, tmp_path, env_id,
                                                     env_config):
    from agents.learners.rllib_ppo import RLlibPPO, build_ppo_config
    from envs.batched import CoreVectorEnv

    learner = RLlibPPO(build_ppo_config(env_id, env_config, AGENT, seed=0), tmp_path / "rllib")
    try:
        env = learner.algo.env_runner.env.unwrapped
        assert isinstance(env, CoreVectorEnv) and env.num_envs == 16
        steps = []
        for _ in range(2):
            metrics = learner.train()
            steps.append(learner.env_steps)
        assert steps[0] >= 512 and steps[1] >= steps[0] + 512
        assert learner.iteration == 2
        assert metrics["charts/episodes"] >= 0 and "losses/policy_loss" in metrics
        assert any((tmp_path / "rllib").iterdir())        # RLlib's log dir is ours
        obs = env.observation_space.sample()[:5]
        action = learner.policy().act(obs)
        assert len(action) == 5 and env.single_action_space.contains(
            action[0].astype(env.single_action_space.dtype))
    finally:
        learner.close()


def test_rllib_rejects_an_impossible_combination_with_its_own_message():
    from agents.learners.rllib_ppo import build_ppo_config
    from personarl.errors import ConfigError

    with pytest.raises(ConfigError, match="minibatch_size"):
        build_ppo_config("personarl/AgentRouting-v0", {},
                         {**AGENT, "minibatch_size": 4096}, seed=0)
