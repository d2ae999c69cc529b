"""agents.learners.rllib_batched against RLlib's own env runner and learner connectors."""

from __future__ import annotations

import numpy as np
import pytest

AGENT = dict(num_env_runners=0, num_envs_per_env_runner=8, lr=3e-4, gamma=0.9,
             gae_lambda=0.8, clip_param=0.2, entropy_coeff=0.01, vf_loss_coeff=0.5,
             grad_clip=0.5, kl_coeff=0.0, num_epochs=1, train_batch_size=160,
             minibatch_size=160, hidden=[16, 16], activation="tanh")
# 3 days x 2 slots: six-step episodes, so one sample holds finished and unfinished ones
ENV = ("personarl/InterventionTiming-v0", {"days": 3, "slots_per_day": 2})


def gae_by_definition(rewards, values, next_values, lengths, gamma, lam):
    out, start = [], 0
    for n in lengths:
        r, v, nv = (x[start:start + n] for x in (rewards, values, next_values))
        delta = r + gamma * nv - v
        out += [sum((gamma * lam) ** k * delta[t + k] for k in range(n - t)) for t in range(n)]
        start += n
    return np.array(out)


def test_gae_follows_its_definition(rng):
    from agents.learners.rllib_batched import gae

    lengths = np.array([1, 5, 3, 12])
    n = lengths.sum()
    rewards, values, next_values = rng.normal(size=(3, n))
    got = gae(rewards, values, next_values, lengths, 0.9, 0.7)
    want = gae_by_definition(rewards, values, next_values, lengths, 0.9, 0.7)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="sum to 21, but 20 rewards"):
        gae(rewards[:-1], values[:-1], next_values[:-1], lengths, 0.9, 0.7)


def _runner_samples(runner_cls, config, calls=3):
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    runner = runner_cls(config=config)
    try:
        samples = [runner.sample(num_timesteps=160, explore=True) for _ in range(calls)]
        return samples, MetricsLogger.peek_results(runner.get_metrics())
    finally:
        runner.stop()


def _canonical(episodes):
    """Each chunk as comparable arrays, sorted by where it starts (RLlib and we order the
    chunks differently and draw different episode ids)."""
    rows = []
    for e in episodes:
        rows.append(dict(
            t_started=e.t_started, terminated=e.is_terminated, truncated=e.is_truncated,
            obs=e.get_observations(slice(0, len(e) + 1)), actions=e.get_actions(),
            rewards=e.get_rewards(), logp=e.get_extra_model_outputs("action_logp"),
            dist=e.get_extra_model_outputs("action_dist_inputs")))
    return sorted(rows, key=lambda r: (r["t_started"], r["obs"][0].tobytes()))


@pytest.mark.slow
def test_batched_runner_records_the_same_episodes_as_rllibs(ray_session):
    """Same seed, same module: RLlib's per-lane loop and our array loop draw the same
    actions, so every episode chunk is the same, in three consecutive sample() calls."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from agents.learners.rllib_batched import BatchedEnvRunner
    from agents.learners.rllib_env import register_envs
    from agents.learners.rllib_ppo import build_ppo_config

    register_envs()
    config = build_ppo_config(*ENV, {**AGENT, "sampler": "rllib"}, seed=3)
    ours, our_metrics = _runner_samples(BatchedEnvRunner, config)
    theirs, their_metrics = _runner_samples(SingleAgentEnvRunner, config)
    for mine, rllib in zip(ours, theirs):
        a, b = _canonical(mine), _canonical(rllib)
        assert len(a) == len(b) and any(r["terminated"] for r in a)
        assert any(not (r["terminated"] or r["truncated"]) for r in a)     # unfinished
        for x, y in zip(a, b):
            assert x.keys() == y.keys()
            for key in x:
                np.testing.assert_allclose(x[key], y[key], rtol=1e-6, err_msg=key)
    for key in ("episode_return_mean", "episode_len_mean", "num_episodes",
                "num_env_steps_sampled_lifetime"):
        assert our_metrics[key] == pytest.approx(their_metrics[key], rel=1e-6), key


@pytest.mark.slow
def test_batched_gae_gives_rllibs_value_targets_and_advantages(ray_session, tmp_path):
    """On RLlib's own episodes, BatchedGAE's value targets equal those of PPO's default
    learner pipeline; its advantages are those targets minus the values, standardised
    over the real steps (RLlib's also count the artificial bootstrap step it appends)."""
    import copy

    import torch
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.columns import Columns
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from agents.learners.rllib_batched import BatchedGAE
    from agents.learners.rllib_ppo import RLlibPPO, build_ppo_config

    learner = RLlibPPO(build_ppo_config(*ENV, {**AGENT, "sampler": "rllib"}, seed=1),
                       tmp_path / "rllib")
    try:
        learner.train()                              # values that are not all alike
        episodes = learner.algo.env_runner.sample(num_timesteps=160, explore=True)
        assert isinstance(learner.algo.env_runner, SingleAgentEnvRunner)
        local = learner.algo.learner_group._learner
        module = local.module
        ours = BatchedGAE(gamma=AGENT["gamma"], lambda_=AGENT["gae_lambda"])(
            rl_module=module, batch={}, episodes=copy.deepcopy(episodes))[DEFAULT_MODULE_ID]
        theirs = local._learner_connector(rl_module=module, batch={}, episodes=episodes,
                                          shared_data={}, metrics=local.metrics)
        theirs = theirs[DEFAULT_MODULE_ID]
        real = theirs[Columns.LOSS_MASK].numpy().astype(bool)
        for key in (Columns.OBS, Columns.ACTIONS, Columns.ACTION_LOGP,
                    Columns.VALUE_TARGETS):
            np.testing.assert_allclose(ours[key].numpy(), theirs[key].numpy()[real],
                                       rtol=1e-5, atol=1e-6, err_msg=key)
        with torch.no_grad():
            values = module[DEFAULT_MODULE_ID].compute_values(
                {Columns.OBS: ours[Columns.OBS]}).numpy()
        raw = theirs[Columns.VALUE_TARGETS].numpy()[real] - values
        np.testing.assert_allclose(ours[Columns.ADVANTAGES].numpy(),
                                   (raw - raw.mean()) / raw.std(), rtol=1e-4, atol=1e-5)
    finally:
        learner.close()


def test_a_lane_rollout_is_its_episode_chunks():
    """The batched runner hands BatchedGAE one LaneRollout per sample() call (no episode
    objects): the same train batch, bit for bit, as the rollout's RLlib episode chunks.
    The chunks continue across calls (same id, t_started carried on), their ids are
    unique, and where something else reads the samples (an on_sample_end callback) the
    runner hands out the chunks."""
    import torch
    from ray.rllib.callbacks.callbacks import RLlibCallback
    from ray.rllib.core import DEFAULT_MODULE_ID

    from agents.learners.rllib_batched import BatchedEnvRunner, BatchedGAE, LaneRollout

    lean, _, config = _lean_and_stock_learners(AGENT)
    runner = BatchedEnvRunner(config=config)
    gae = BatchedGAE(gamma=AGENT["gamma"], lambda_=AGENT["gae_lambda"])
    try:
        samples = [runner.sample(num_timesteps=160, explore=True) for _ in range(2)]
    finally:
        runner.stop()
    chunks = []
    for sample in samples:
        assert len(sample) == 1 and isinstance(sample[0], LaneRollout)
        rollout = sample[0]
        episodes = rollout.to_episodes()
        assert len(rollout) == sum(len(e) for e in episodes) >= 160
        assert len({e.id_ for e in episodes}) == len(episodes)
        ours = gae(rl_module=lean.module, batch={}, episodes=[rollout])[DEFAULT_MODULE_ID]
        theirs = gae(rl_module=lean.module, batch={}, episodes=episodes)[DEFAULT_MODULE_ID]
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), key
        chunks.append(episodes)
    with pytest.raises(ValueError, match="no timesteps"):
        gae(rl_module=lean.module, batch={}, episodes=[])
    # each lane's unfinished chunk goes on in the next call as the same episode
    unfinished = {e.id_: e for e in chunks[0] if not e.is_done}
    assert 0 < len(unfinished) <= AGENT["num_envs_per_env_runner"]
    continued = [e for e in chunks[1] if e.id_ in unfinished]
    assert len(continued) == len(unfinished)
    for e in continued:
        before = unfinished[e.id_]
        assert e.t_started == before.t_started + len(before)
        assert np.array_equal(e.get_observations(0), before.get_observations(-1))

    class SampleReader(RLlibCallback):
        def on_sample_end(self, **kwargs):
            pass

    runner = BatchedEnvRunner(config=config.copy(copy_frozen=False).callbacks(SampleReader))
    try:
        sample = runner.sample(num_timesteps=160, explore=True)
    finally:
        runner.stop()
    assert sample and not any(isinstance(e, LaneRollout) for e in sample)


def test_the_global_norm_clip_is_rllibs():
    """agents.learners.rllib_batched.clip_gradients changes the gradients and returns the
    norm bit for bit as RLlib's clip_gradients: below and above the clip, with a NaN, an
    infinity and an overflowing norm; the per-tensor modes are RLlib's own."""
    import torch
    from ray.rllib.utils.torch_utils import clip_gradients as rllib_clip

    from agents.learners.rllib_batched import clip_gradients

    gen = torch.Generator().manual_seed(0)
    shapes = [(16, 26), (16,), (16, 16), (16,), (6, 16), (6,)]
    for scale in (1e-3, 1.0, 1e20):
        for bad in (None, "nan", "inf"):
            grads = [torch.randn(s, generator=gen) * scale for s in shapes]
            if bad:
                grads[2].view(-1)[5] = float(bad)
            for mode in ("global_norm", "norm", "value"):
                a = {i: g.clone() for i, g in enumerate(grads)}
                b = {i: g.clone() for i, g in enumerate(grads)}
                norm_a = rllib_clip(a, grad_clip=0.5, grad_clip_by=mode)
                norm_b = clip_gradients(b, grad_clip=0.5, grad_clip_by=mode)
                if mode == "global_norm":
                    assert torch.equal(norm_a, norm_b), (scale, bad)
                for i in a:
                    torch.testing.assert_close(a[i], b[i], rtol=0, atol=0, equal_nan=True,
                                               msg=f"{scale} {bad} {mode}")
            clipped = {i: g.clone() for i, g in enumerate(grads)}
            clip_gradients(clipped, grad_clip=0.5, grad_clip_by="global_norm")
            if bad is None and scale == 1.0:              # above the clip: scaled down to it
                total = torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(g) for g in clipped.values()]))
                assert total.item() == pytest.approx(0.5, rel=1e-4)


def test_the_batched_sampler_falls_back_when_rllib_lacks_what_it_uses(monkeypatch, caplog):
    """The installed Ray has every private member the batched sampler uses; a Ray without
    one gets RLlib's own sampler and one warning naming what is missing."""
    import logging

    from agents.learners import rllib_batched
    from agents.learners.rllib_ppo import build_ppo_config
    from envs import ROUTING_ID

    rllib_batched.missing_rllib_members.cache_clear()
    assert rllib_batched.missing_rllib_members() == ()
    agent = {"lr": 3e-4, "gamma": 0.99, "gae_lambda": 0.95, "clip_param": 0.2,
             "entropy_coeff": 0.0, "vf_loss_coeff": 0.5, "grad_clip": 0.5, "kl_coeff": 0.2,
             "num_epochs": 1, "train_batch_size": 128, "minibatch_size": 64,
             "hidden": [8], "activation": "tanh", "num_envs_per_env_runner": 4,
             "num_env_runners": 0, "sampler": "batched"}
    config = build_ppo_config(ROUTING_ID, {}, agent, 0)
    assert config.env_runner_cls is rllib_batched.BatchedEnvRunner
    assert config.learner_class is rllib_batched.LeanPPOTorchLearner
    members = {**rllib_batched.RLLIB_MEMBERS, "SingleAgentEnvRunner methods":
               (*rllib_batched.RLLIB_MEMBERS["SingleAgentEnvRunner methods"], "_gone_in_ray_9")}
    monkeypatch.setattr(rllib_batched, "RLLIB_MEMBERS", members)
    rllib_batched.missing_rllib_members.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="agents.learners.rllib_ppo"):
            config = build_ppo_config(ROUTING_ID, {}, agent, 0)
    finally:
        monkeypatch.undo()
        rllib_batched.missing_rllib_members.cache_clear()
    assert config.env_runner_cls is not rllib_batched.BatchedEnvRunner
    assert config.learner_class is not rllib_batched.LeanPPOTorchLearner
    warnings = [r.getMessage() for r in caplog.records if "agent.sampler=batched" in
                r.getMessage()]
    assert len(warnings) == 1 and "SingleAgentEnvRunner._gone_in_ray_9" in warnings[0]


def test_cyclic_minibatches_are_rllibs(rng):
    """The same rows in the same order as RLlib's MiniBatchCyclicIterator over a
    SampleBatch, shuffles included (the same NumPy draws), wrapping within a minibatch and
    with a minibatch larger than the batch."""
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
    from ray.rllib.utils.minibatch_utils import MiniBatchCyclicIterator

    from agents.learners.rllib_batched import cyclic_minibatches

    for n, size, epochs, shuffle in [(10, 4, 3, True), (10, 5, 2, True), (7, 16, 3, True),
                                     (9, 4, 2, False)]:
        np.random.seed(n + size)
        batch = MultiAgentBatch({"m": SampleBatch({"row": np.arange(n)})}, n)
        theirs = [mb.policy_batches["m"]["row"] for mb in MiniBatchCyclicIterator(
            batch, num_epochs=epochs, minibatch_size=size, shuffle_batch_per_epoch=shuffle)]
        np.random.seed(n + size)
        ours = list(cyclic_minibatches(n, size, epochs, shuffle))
        assert len(ours) == len(theirs) >= 2
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="got 0 rows, size 4, 1 epochs"):
        next(cyclic_minibatches(0, 4, 1, True))
    with pytest.raises(ValueError, match="got 8 rows, size 4, 0 epochs"):
        next(cyclic_minibatches(8, 4, 0, True))


def _lean_and_stock_learners(agent, env=ENV):
    """A LeanPPOTorchLearner and RLlib's PPOTorchLearner for ``agent`` on ``env``, in the
    same state, and the config they were built from."""
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
    from ray.rllib.core import DEFAULT_MODULE_ID

    from agents.learners.rllib_batched import LeanPPOTorchLearner
    from agents.learners.rllib_env import register_envs
    from agents.learners.rllib_ppo import build_ppo_config
    from envs.creator import create_env

    register_envs()
    config = build_ppo_config(*env, agent, seed=3)
    assert config.learner_class is LeanPPOTorchLearner
    made = create_env(*env)
    spaces = {DEFAULT_MODULE_ID: (made.observation_space, made.action_space)}
    made.close()
    lean = config.build_learner(spaces=spaces)
    stock = (config.copy(copy_frozen=False).learners(learner_class=PPOTorchLearner)
             .build_learner(spaces=spaces))
    assert type(stock) is PPOTorchLearner and type(lean) is LeanPPOTorchLearner
    stock.set_state(lean.get_state())
    return lean, stock, config


def _flat(results, prefix=""):
    """Nested metrics as ``{"a/b/c": value}``."""
    out = {}
    for key, value in results.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _assert_same_weights(a, b, msg=""):
    import torch

    for x, y in zip(a._params.values(), b._params.values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=msg)
    for s, t in zip(a.get_optimizer().state.values(), b.get_optimizer().state.values()):
        for key in s:
            torch.testing.assert_close(s[key], t[key], rtol=0, atol=0, msg=msg)


# a categorical policy and a Gaussian one (the continuous style vector)
LEARNER_ENVS = [ENV, ("personarl/PersonalityAdaptation-v0",
                      {"action_mode": "continuous", "horizon": 6})]


@pytest.mark.parametrize("env", LEARNER_ENVS, ids=["categorical", "gaussian"])
def test_the_lean_learner_updates_as_rllibs_learner(env):
    """The same samples, the same random state: LeanPPOTorchLearner's update leaves the
    same weights, Adam state and adaptive KL coefficient as RLlib's PPOTorchLearner and
    reports the same learner metrics — three updates of three epochs of minibatches that
    wrap around the batch, shuffled."""
    import copy

    import torch
    from ray.rllib.core.learner.training_data import TrainingData
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    from agents.learners.rllib_batched import BatchedEnvRunner

    agent = {**AGENT, "kl_coeff": 0.2}
    lean, stock, config = _lean_and_stock_learners(agent, env)
    runner = BatchedEnvRunner(config=config)
    try:
        for k in range(3):
            episodes = runner.sample(num_timesteps=160, explore=True)
            results = []
            for learner in (lean, stock):
                np.random.seed(k)
                torch.manual_seed(k)
                out = learner.update(
                    training_data=TrainingData(episodes=copy.deepcopy(episodes)),
                    timesteps={"num_env_steps_sampled_lifetime": 160 * (k + 1)},
                    num_epochs=3, minibatch_size=48, shuffle_batch_per_epoch=True)
                results.append(MetricsLogger.peek_results(out))
            _assert_same_weights(lean, stock, f"update {k}")
            mine, theirs = (_flat(r) for r in results)
            assert mine.keys() == theirs.keys() and "default_policy/mean_kl_loss" in mine
            for key in mine:
                if "throughput" not in key and "timer" not in key:
                    assert mine[key] == pytest.approx(theirs[key], rel=1e-6, nan_ok=True), key
        kl = [learner.curr_kl_coeffs_per_module["default_policy"].item()
              for learner in (lean, stock)]
        assert kl[0] == kl[1] != 0.2                    # adapted from the last minibatch
    finally:
        runner.stop()


def test_the_lean_learner_steps_as_rllibs_learner():
    """The same weights given the same gradients: LeanPPOTorchLearner leaves the same
    parameters and Adam state as RLlib's PPOTorchLearner, step after step — finite
    gradients (its own path) and a NaN or an infinity in one tensor (RLlib's handling,
    which zeroes them and still steps)."""
    import torch

    lean, stock, _ = _lean_and_stock_learners(AGENT)
    before = [p.detach().clone() for p in lean._params.values()]
    gen = torch.Generator().manual_seed(0)
    for case in ("finite", "nan", "finite", "inf", "finite"):
        grads = [torch.randn(p.shape, generator=gen) for p in lean._params.values()]
        if case != "finite":
            grads[2].view(-1)[3] = float(case)
        for learner in (lean, stock):
            learner.apply_gradients({pid: g.clone() for pid, g in zip(learner._params, grads)})
        assert all(torch.isfinite(a).all() for a in lean._params.values())
        _assert_same_weights(lean, stock, case)
    assert not any(torch.equal(a, b) for a, b in zip(before, lean._params.values()))


IN_PROCESS_RUN = """
import json, sys
from pathlib import Path
import ray
import torch
torch.set_num_threads(1)
from tests.test_rllib_batched import run_save_restore
print(json.dumps(run_save_restore(Path(sys.argv[1]), ray)))
"""


def run_save_restore(tmp, ray) -> dict:
    """Two iterations, a checkpoint, a restore into a new learner and a third iteration;
    the learning metrics, the final weights and whether Ray ran at each stage."""
    from agents.learners.base import weights_sha256
    from agents.learners.rllib_ppo import RLlibPPO, build_ppo_config

    out = {"ray": []}
    learner = RLlibPPO(build_ppo_config(*ENV, AGENT, seed=3), tmp / "a")
    out["ray"].append(ray.is_initialized())
    try:
        metrics = [learner.train() for _ in range(2)]
        (tmp / "ckpt").mkdir()
        learner.save(tmp / "ckpt")
    finally:
        learner.close()
    resumed = RLlibPPO(build_ppo_config(*ENV, AGENT, seed=3), tmp / "b")
    try:
        resumed.restore(tmp / "ckpt")
        metrics.append(resumed.train())
        out["weights"] = weights_sha256(resumed._learner_module().state_dict())
    finally:
        resumed.close()
    out["ray"].append(ray.is_initialized())
    out["metrics"] = [{k: v for k, v in m.items() if not k.startswith("perf/")}
                      for m in metrics]
    return out


@pytest.mark.slow
def test_ppo_in_this_process_runs_without_ray_as_it_does_with_ray(ray_session, tmp_path):
    """RLlib PPO with every part in this process (num_env_runners=0) trains, checkpoints
    and resumes without starting Ray, and learns exactly what it learns beside a running
    Ray: the same metrics and the same weights."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "alone").mkdir()
    proc = subprocess.run([sys.executable, "-c", IN_PROCESS_RUN, str(tmp_path / "alone")],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    alone = json.loads(proc.stdout.strip().splitlines()[-1])
    assert alone["ray"] == [False, False]
    (tmp_path / "beside").mkdir()
    beside = run_save_restore(tmp_path / "beside", ray_session)
    assert beside["ray"] == [True, True]
    assert len(alone["metrics"]) == len(beside["metrics"]) == 3
    for a, b in zip(alone["metrics"], beside["metrics"]):
        assert a == pytest.approx(b, rel=1e-9)
    assert alone["weights"] == beside["weights"]
