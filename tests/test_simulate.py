"""The main job: configs compose, the env is not trivial, bad overrides fail clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from experiments.simulate import simulate, to_markdown
from experiments.wiring import env_kwargs

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="simulate", overrides=list(overrides))


def test_configs_compose_into_env_arguments():
    cfg = compose_cfg("env.horizon=1", "persona.bot_fraction=0.1",
                      "+reward.weights.conversion=0.9")
    kwargs = env_kwargs(cfg)[1]
    assert kwargs["horizon"] == 1 and kwargs["population"]["bot_fraction"] == 0.1
    assert kwargs["signal_weights"] == {"weights": {"conversion": 0.9}, "confidence": {}}
    assert "id" not in kwargs


def test_reward_weights_from_config_change_the_reward():
    from envs import AgentRoutingVectorEnv

    returns = []
    for weights in ({}, {"click": 0.0, "scroll_depth": 0.0, "dwell": 0.0}):
        kwargs = env_kwargs(compose_cfg(*[f"+reward.weights.{k}={v}"
                                          for k, v in weights.items()]))[1]
        env = AgentRoutingVectorEnv(2000, horizon=1, **{k: v for k, v in kwargs.items()
                                                        if k != "horizon"})
        env.reset(seed=0)
        returns.append(env.step(np.zeros(2000, np.int64))[1].mean())
    # dropping the implicit engagement signals removes a positive part of every reward
    assert returns[1] < returns[0] - 0.05


@pytest.mark.slow
def test_oracle_beats_persona_router_beats_random_with_paired_cis():
    cfg = compose_cfg("episodes=4096", "warmup_steps=1500")
    summary = simulate(cfg)
    means = {k: v["mean"] for k, v in summary["policies"].items()}
    assert means["oracle"] > means["persona_router"] > means["random"]
    paired = {(p["better"], p["worse"]): p for p in summary["paired"]}
    for pair in (("oracle", "persona_router"), ("persona_router", "random")):
        assert paired[pair]["ci_low"] > 0, paired[pair]
    report = to_markdown(summary, cfg)
    assert "| oracle − persona_router |" in report and "explorer" in report


def test_main_job_writes_report_and_rejects_bad_override(tmp_path):
    run = tmp_path / "run"
    ok = subprocess.run([sys.executable, "-m", "experiments.simulate", "episodes=256",
                         "warmup_steps=50", "policies=[random,oracle]",
                         f"hydra.run.dir={run}"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["policies"]) == {"random", "oracle"}
    assert (run / "report.md").read_text().startswith("# AgentRouting simulation report")
    bad = subprocess.run([sys.executable, "-m", "experiments.simulate",
                          "persona.bot_fraction=1.5", f"hydra.run.dir={tmp_path / 'bad'}"],
                         capture_output=True, text=True)
    assert bad.returncode != 0
    assert "bot_fraction=1.5" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr


def test_custom_archetypes_and_events_from_hydra_config():
    from envs import AgentRoutingVectorEnv

    kwargs = env_kwargs(compose_cfg("persona=custom_example"))[1]
    env = AgentRoutingVectorEnv(256, **kwargs)
    obs, info = env.reset(seed=0)
    sampler = env._core.sampler
    assert sampler.base.names == ("bargain_hunter", "storyteller")
    assert sampler.tables[-1].names[-1] == "night_owl" and sampler.boundaries == [5000]
    assert obs.shape == (256, env.layout.size) and env.layout.num_archetypes == 2
    assert set(np.unique(info["latent_primary"])) <= {0, 1}
