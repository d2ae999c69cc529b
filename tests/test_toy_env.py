"""A fourth env added entirely from inside this test — its module (this file), one
registration, one baselines entry and its config (through Hydra's ConfigStore) — goes the
whole way: the contract suite, the baselines, the paired final evaluation, two iterations
of RLlib PPO and an exported bundle that serves. Nothing else in the code base names it.

``toy/PreferenceGuess-v0``: each user prefers one of three actions (their primary archetype
modulo 3; a bot a random one). Each step shows a hint — the preferred action with
probability ``hint_accuracy``, else a random one — and the step's share of the session;
choosing the preferred action pays 1 with probability ``reward.match``, else with
``reward.miss``. Every random number a user needs is drawn when the user arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pytest

from agents.baselines.policies import FixedPolicy
from envs.batched import (BaseCore, CoreEnv, CoreVectorEnv, DiscreteActions,
                          check_info_level, coerce_config, coerce_population, column_slices)
from envs.registration import EnvRecord
from personarl.errors import check_int, check_range

TOY_ID = "toy/PreferenceGuess-v0"
K = 3


@dataclass
class ToyConfig:
    id: str = TOY_ID
    horizon: int = 4
    hint_accuracy: float = 0.7


@dataclass(frozen=True)
class ToyReward:
    match: float = 0.8
    miss: float = 0.2


def layout(kwargs: Mapping[str, Any]) -> dict[str, slice]:
    return column_slices([("hint", K), ("progress", 1)])


class ToyCore(BaseCore):
    state_fields = ("pref", "primary", "is_bot", "hint_u", "hint_random", "reward_u", "t",
                    "obs", "started", "population_time", "step_info")

    def __init__(self, num_lanes: int, *, sampler: Any, horizon: int, hint_accuracy: float,
                 reward: ToyReward, with_truth: bool) -> None:
        B, H = num_lanes, horizon
        self.B, self.horizon, self.sampler, self.with_truth = B, H, sampler, with_truth
        self.accuracy, self.reward = hint_accuracy, reward
        self.actions = DiscreteActions(K, [f"a{i}" for i in range(K)])
        self.cols = layout({})
        self.obs_size = self.cols["progress"].stop
        self.pref, self.primary = np.zeros(B, np.int64), np.zeros(B, np.int64)
        self.is_bot = np.zeros(B, bool)
        self.hint_u, self.hint_random = np.zeros((B, H + 1)), np.zeros((B, H + 1), np.int64)
        self.reward_u = np.zeros((B, H))
        self.t, self.rows = np.zeros(B, np.int64), np.arange(B)
        self.obs = np.zeros((B, self.obs_size), dtype=np.float32)
        self.started, self.population_time = False, 0
        self.step_info: dict[str, np.ndarray] = {}

    def reset_lanes(self, lanes: np.ndarray, rng: np.random.Generator) -> None:
        m, H = len(lanes), self.horizon
        pop = self.sampler.sample(m, rng, start_time=self.population_time)
        self.population_time += m
        bot_pref = rng.integers(0, K, m)
        self.primary[lanes], self.is_bot[lanes] = pop.primary, pop.is_bot
        self.pref[lanes] = np.where(pop.is_bot, bot_pref, pop.primary % K)
        self.hint_u[lanes] = rng.random((m, H + 1))
        self.hint_random[lanes] = rng.integers(0, K, (m, H + 1))
        self.reward_u[lanes] = rng.random((m, H))
        self.t[lanes] = 0
        self._observe(lanes)

    def _observe(self, lanes: np.ndarray) -> None:
        t = self.t[lanes]
        right = self.hint_u[lanes, t] < self.accuracy
        hint = np.where(right, self.pref[lanes], self.hint_random[lanes, t])
        o = np.zeros((len(lanes), self.obs_size), dtype=np.float32)
        o[np.arange(len(lanes)), hint] = 1.0
        o[:, self.cols["progress"].start] = t / self.horizon
        self.obs[lanes] = o

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        matched = action == self.pref
        p = np.where(matched, self.reward.match, self.reward.miss)
        reward = (self.reward_u[self.rows, self.t] < p).astype(np.float64)
        self.t = self.t + 1
        terminated = self.t >= self.horizon
        self._observe(self.rows[~terminated])
        self.step_info = {"matched": matched.astype(np.float64)}
        return reward, terminated

    def info(self) -> dict[str, np.ndarray]:
        self.require_truth()
        expected = np.full((self.B, K), self.reward.miss)
        expected[self.rows, self.pref] = self.reward.match
        return {"latent_primary": self.primary, "is_bot": self.is_bot,
                "expected_reward": expected, "oracle_action": self.pref.copy()}


def build_core(num_lanes: int, *, horizon: int = 4, hint_accuracy: float = 0.7,
               population: Any = None, reward: ToyReward | Mapping | None = None,
               info_level: str = "full") -> ToyCore:
    return ToyCore(check_int("num_envs", num_lanes, 1),
                   sampler=coerce_population(population),
                   horizon=check_int("horizon", horizon, 1, 1000),
                   hint_accuracy=check_range("hint_accuracy", hint_accuracy, 0, 1),
                   reward=coerce_config(reward, ToyReward, "reward"),
                   with_truth=check_info_level(info_level) == "full")


class ToyEnv(CoreEnv):
    def __init__(self, *, info_level: str = "full", **kwargs: Any) -> None:
        super().__init__(build_core(1, info_level=info_level, **kwargs), info_level)


class ToyVectorEnv(CoreVectorEnv):
    def __init__(self, num_envs: int = 1, *, info_level: str = "full",
                 autoreset_mode: str = "next_step", **kwargs: Any) -> None:
        super().__init__(build_core(num_envs, info_level=info_level, **kwargs), info_level,
                         autoreset_mode)


class HintFollower(FixedPolicy):
    """Acts on the hint (the toy's observed greedy)."""

    name = "greedy"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(K)

    def action_probs(self, obs: np.ndarray, info: Mapping[str, Any] | None = None
                     ) -> np.ndarray:
        return np.eye(K)[obs[:, :K].argmax(axis=1)]


def toy_baselines(core: Any) -> dict[str, Any]:
    return {"greedy": lambda seed=0, **kw: HintFollower(seed=seed, **kw)}


RECORD = EnvRecord(
    id=TOY_ID, entry_point=f"{__name__}:ToyEnv", vector_entry_point=f"{__name__}:ToyVectorEnv",
    build_core=f"{__name__}:build_core", config_name="toy", env_config=ToyConfig,
    reward_arg="reward", reward_config=ToyReward, observation_layout=layout,
    baselines=f"{__name__}:toy_baselines")


@pytest.fixture(scope="module")
def toy():
    """Register the env and its config (ConfigStore: env/toy, reward/toy); both are
    removed again afterwards, so no later test sees a fourth env."""
    from hydra.core.config_store import ConfigStore

    import envs
    from envs.registration import unregister
    from experiments.schema import register_configs

    envs.register(RECORD)
    register_configs()                    # the schemas now include schema/env/toy
    cs = ConfigStore.instance()
    for group in ("env", "reward"):       # what configs/<group>/<name>.yaml would hold
        cs.store(group=group, name="toy",
                 node={"defaults": [{f"/schema/{group}@_here_": "toy"}, "_self_"]})
    yield RECORD
    unregister(TOY_ID)
    for group in ("env", "reward"):
        cs.repo[group].pop("toy.yaml", None)
        cs.repo["schema"][group].pop("toy.yaml", None)


def compose_train(*overrides: str):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(str(configs), version_base="1.3"):
        return compose("train", overrides=["env=toy", *overrides])


def test_the_toy_env_keeps_the_whole_contract(toy):
    from envs.contract import check_contract

    check_contract(TOY_ID)


def test_the_toy_env_gets_baselines_and_the_paired_evaluation(toy):
    from agents.baselines.factory import baselines_for, make_policy
    from experiments.final_eval import evaluate_policies
    from experiments.wiring import validate

    assert baselines_for(TOY_ID, {}) == ["random", "linucb", "thompson", "oracle", "greedy"]
    run = validate(compose_train("agent=greedy", "eval.episodes=4000",
                                 "eval.baseline_warmup_steps=50", "logger=none"))
    assert run.env_kwargs["reward"] == {"match": 0.8, "miss": 0.2}
    summary = evaluate_policies(run, make_policy(TOY_ID, "greedy", run.env_kwargs))
    for pop in summary.values():
        means = {n: p["mean"] for n, p in pop["policies"].items()}
        # 4 steps: the oracle 4 × 0.8, random 4 × 0.4, the hint follower 4 × (0.8·0.8 + …)
        assert means["oracle"] == pytest.approx(3.2, abs=0.06)
        assert means["random"] == pytest.approx(4 * (0.8 + 2 * 0.2) / 3, abs=0.06)
        assert means["random"] < means["greedy"] < means["oracle"]
        assert pop["reference"] == "oracle" and pop["trained"] == "greedy"
        paired = {(p["better"], p["worse"]): p for p in pop["paired"]}
        assert paired[("greedy", "random")]["ci_low"] > 0


@pytest.mark.slow
def test_the_toy_env_trains_with_rllib_ppo_and_exports_a_serving_bundle(toy, ray_session,
                                                                        tmp_path):
    from agents.serving.loader import load_policy
    from envs.creator import create_env
    from experiments.job import train

    cfg = compose_train("agent=ppo", "agent.train_batch_size=256", "agent.minibatch_size=64",
                        "agent.num_envs_per_env_runner=16", "agent.num_epochs=1",
                        "agent.hidden=[16]", "budget=512", "eval.episodes=256",
                        "eval.baseline_warmup_steps=10", "eval.baselines=[random,oracle]",
                        "logger=none", "progress=false")
    result = train(cfg, tmp_path / "run")
    assert result["meta"]["iterations"] == 2 and result["meta"]["env_id"] == TOY_ID
    policy = load_policy(result["bundle"])
    assert policy.env_id == TOY_ID
    env = create_env(TOY_ID, {"num_envs": 8})
    obs, _ = env.reset(seed=0)
    action = policy.act(obs)
    assert action.shape == (8,) and ((action >= 0) & (action < K)).all()
