"""reward=learned (issue 23): a reward model pays instead of the env, the truth is kept."""

from __future__ import annotations

import subprocess

import gymnasium as gym
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from experiments.schema import register_configs
from personarl.errors import ConfigError
from tests.readme import ROOT, command, overrides

ROUTE = "personarl/AgentRouting-v0"


@pytest.fixture(scope="module")
def routing_model(tmp_path_factory):
    """A reward model on AgentRouting's observations, made by the README's command."""
    out = tmp_path_factory.mktemp("preferences")
    done = subprocess.run(command("task=routing context=observation", extra=[
        "pairs=3000", "holdout=500", "model.epochs=3", f"hydra.run.dir={out}"]),
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "Held-out pairs" in (out / "report.md").read_text()
    return out / "reward_model.npz"


def test_the_env_pays_the_model_and_reports_its_own_reward(routing_model):
    from rewards.reward_model import RewardModel

    model = RewardModel.load(routing_model)
    # the users of the persona config the model was trained for (as training builds them)
    population = _validate().env_kwargs["population"]
    make = dict(num_envs=64, vectorization_mode="vector_entry_point", population=population)
    learned = gym.make_vec(ROUTE, **make, learned_reward={"model": str(routing_model)})
    plain = gym.make_vec(ROUTE, **make)
    obs, _ = learned.reset(seed=3)
    obs2, _ = plain.reset(seed=3)
    rng = np.random.default_rng(0)
    restarting = np.zeros(64, dtype=bool)
    for _ in range(30):
        a = rng.integers(0, 6, 64)
        nxt, r, term, _, info = learned.step(a)
        nxt2, r2, term2, _, _ = plain.step(a)
        stepped = ~restarting
        assert np.array_equal(nxt, nxt2) and np.array_equal(term, term2)
        assert np.allclose(r[stepped], model.reward(obs, a)[stepped])
        assert np.allclose(info["true_reward"][stepped], r2[stepped])
        assert np.all(r[restarting] == 0) and np.all(np.isnan(info["true_reward"][restarting]))
        obs, restarting = nxt, term
    assert not np.allclose(r, r2)


def _damaged(directory, model) -> str:
    """The first half of a reward-model file (a copy cut short)."""
    data = model.read_bytes()
    (directory / "cut.npz").write_bytes(data[:len(data) // 2])
    return str(directory / "cut.npz")


def _validate(*extra: str):
    from experiments.wiring import validate

    register_configs()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return validate(compose("train", overrides=["logger=none", *extra]))


def test_bad_learned_rewards_are_refused_before_training(routing_model, tmp_path):
    run = _validate("reward=learned", f"reward.model={routing_model}")
    assert run.env_kwargs["learned_reward"]["model"] == str(routing_model)
    assert all("learned_reward" not in kw for _, kw in run.populations.values())
    for extra, message in [
            ([], r"reward=learned needs reward.model=<reward_model.npz>"),
            ([f"reward.model={tmp_path / 'none.npz'}"], r"no reward model at"),
            ([f"reward.model={routing_model}", "reward.objective=max"],
             r"reward.objective='max'; valid: mean, worst_case"),
            ([f"reward.model={routing_model}", "reward.penalty=-1"], r"reward.penalty=-1"),
            ([f"reward.model={routing_model}", "env=adaptation"],
             r"was trained on 'personarl/AgentRouting-v0', not personarl/PersonalityAd"),
            ([f"reward.model={routing_model}", "env.num_agents=4"],
             r"reads 34 observation columns; this env has 32"),
            ([f"reward.model={routing_model}", "env.world_seed=7"],   # other agents
             r"was trained on another configuration of personarl/AgentRouting-v0 \(tables, "
             r"world differ\)"),
            ([f"reward.model={routing_model}", "reward.objective=uncertainty_weighted",
              "reward.penalty=inf"], r"reward.penalty=inf must be a finite number >= 0"),
            ([f"reward.model={_damaged(tmp_path, routing_model)}"],
             r"is not a reward-model file"),
            (["reward.model=''"], r"reward=learned needs reward.model=")]:
        with pytest.raises(ConfigError, match=message):
            _validate("reward=learned", *extra)
    # a model of continuous styles for the discrete env (the same observation)
    from envs.registration import describe
    from rewards.reward_model import RewardModel

    continuous = _validate("experiment=adaptation_continuous")
    styles = RewardModel([(np.zeros((1, 43, 1)), np.zeros((1, 1)))], np.zeros(33),
                         np.ones(33), None, {
                             "env_id": continuous.env_id, "context": "observation",
                             "env_configuration": describe(
                                 continuous.env_id, continuous.env_kwargs).configuration()})
    path = styles.save(tmp_path / "styles.npz")
    with pytest.raises(ConfigError, match=r"scores Box\(10\) actions; this env acts in "
                                          r"Discrete\(9\) \(action_mode\?\)"):
        _validate("env=adaptation", "reward=learned", f"reward.model={path}")
    assert _validate("experiment=adaptation_continuous", "reward=learned",
                     f"reward.model={path}").env_kwargs["learned_reward"]["model"] == str(path)


@pytest.mark.slow
def test_ppo_trains_against_the_learned_reward(routing_model, tmp_path):
    from experiments.job import train

    register_configs()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            *overrides("train reward=learned", {"outputs/<date>/<time>/reward_model.npz":
                                                routing_model}),
            "experiment=smoke", "logger=none", "agent.train_batch_size=1024",
            "agent.minibatch_size=256", "agent.num_envs_per_env_runner=16",
            "eval.episodes=64"])
    result = train(cfg, tmp_path)
    assert result["meta"]["learned_reward"]["model"] == str(routing_model)
    assert "Trained against the learned reward model" in (tmp_path / "report.md").read_text()
    # the bundle acts without the reward model (served beside policies of the env's reward)
    policy = (tmp_path / "policy" / "policy.json").read_text()
    assert "learned_reward" not in policy and str(routing_model) not in policy
