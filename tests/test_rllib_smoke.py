"""RLlib PPO (new API stack) trains on our native VectorEnvs via vector_entry_point."""

from __future__ import annotations

import numpy as np
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


def test_ppo_with_a_remote_env_runner_trains_and_acts(ray_session, tmp_path):
    """With the sampling in a remote env runner the local one holds no env and no module:
    the action space and the policy come from the learner's module."""
    from agents.learners.rllib_ppo import RLlibPPO, build_ppo_config, runs_in_process
    from envs.creator import create_env

    env = create_env("personarl/AgentRouting-v0", {})
    config = build_ppo_config("personarl/AgentRouting-v0", {},
                              {**AGENT, "num_env_runners": 1}, seed=0)
    assert not runs_in_process(config)
    learner = RLlibPPO(config, tmp_path / "rllib")
    try:
        assert learner.algo.env_runner.env is None            # sampling is remote
        learner.train()
        assert learner.env_steps >= 512 and learner.action_space == env.action_space
        obs = np.stack([env.observation_space.sample() for _ in range(3)])
        actions = learner.policy().act(obs)
        assert actions.shape == (3,) and all(env.action_space.contains(a) for a in actions)
    finally:
        learner.close()
        env.close()


def test_rllib_rejects_an_impossible_combination_with_its_own_message():
    from agents.learners.rllib_ppo import build_ppo_config
    from personarl.errors import ConfigError

    with pytest.raises(ConfigError, match="minibatch_size"):
        build_ppo_config("personarl/AgentRouting-v0", {},
                         {**AGENT, "minibatch_size": 4096}, seed=0)
