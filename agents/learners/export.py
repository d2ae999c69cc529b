"""Export a trained PPO policy (RLlib or SB3, discrete or continuous) to a policy bundle.

RLlib checkpoints are for resuming training; a bundle (``agents.serving.bundle``) is what leaves the
lab: ``model.onnx`` (torch's ``torch.export``-based ONNX exporter, which needs ``onnx`` and
``onnxscript``; one file, dynamic batch dimension), ``policy.json`` and ``manifest.json``.
The graph is the policy's actor only — raw flat observation in, distribution parameters out (``logits``, or
``mean`` and ``log_std``); our observations need no preprocessing (every feature is already
in [0, 1]), which ``policy.json`` declares. After writing, the exporter runs the ONNX model
on observations sampled from the observation space and refuses the bundle if it disagrees
with the torch policy.

    actor, source = actor_from_checkpoint(checkpoint, agent_cfg, env_id, env_config)
    write_bundle(actor, out, env_id=..., env_config=..., source=source, training=...)

Export never unpickles: the actor is rebuilt from the run's config and loaded from the
checkpoint's ``policy_weights.pt`` (``torch.load(weights_only=True)``); RLlib's
``class_and_ctor_args.pkl`` and SB3's ``model.zip`` are not opened.

``experiments.export`` is the command line; ``experiments.train`` calls it at the end of a run.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
import numpy as np
import torch

from agents.serving.bundle import (FORMAT_VERSION, MODEL_FILE, SPEC_FILE, BundleError,
                                   env_spec, sha256_file, write_atomic, write_manifest)
from agents.learners.base import WEIGHTS_FILE, load_weights, weights_sha256
from envs.creator import create_env
from personarl import jsonio
from personarl.seeds import generator

__all__ = ["actor_from_checkpoint", "write_bundle", "LEARNERS", "PARITY_TOLERANCE"]

#: the learners a bundle can be exported from: agent name -> what ``policy.json`` calls it
LEARNERS = {"ppo": "rllib_ppo", "sb3_ppo": "sb3_ppo"}
#: the exporter's self-check: largest |ONNX − torch| allowed on sampled observations
PARITY_TOLERANCE = 1e-4


class _RLlibActor(torch.nn.Module):
    """An RLlib RLModule's inference forward pass, split into named distribution inputs."""

    def __init__(self, module: torch.nn.Module, discrete: bool) -> None:
        super().__init__()
        self.module, self.discrete = module, discrete

    def forward(self, obs: torch.Tensor) -> Any:
        z = self.module.forward_inference({"obs": obs})["action_dist_inputs"]
        if self.discrete:
            return z
        mean, log_std = torch.chunk(z, 2, dim=1)    # RLlib's TorchDiagGaussian layout
        return mean, log_std


class _SB3Actor(torch.nn.Module):
    """An SB3 ``ActorCriticPolicy``'s actor: features -> policy MLP -> action net."""

    def __init__(self, policy: torch.nn.Module, discrete: bool) -> None:
        super().__init__()
        self.policy, self.discrete = policy, discrete

    def forward(self, obs: torch.Tensor) -> Any:
        p = self.policy
        features = p.extract_features(obs, p.pi_features_extractor)
        out = p.action_net(p.mlp_extractor.forward_actor(features))
        if self.discrete:
            return out
        return out, p.log_std.expand_as(out)      # state-independent log-std


def actor_from_checkpoint(checkpoint: Path, agent: Mapping[str, Any], env_id: str,
                          env_config: Mapping[str, Any], expected_sha256: str | None = None
                          ) -> tuple[torch.nn.Module, dict]:
    """The trained actor in a training checkpoint (``experiments.train``'s
    ``checkpoints/iter_NNNNNN/``) and what the bundle records about its source.

    Nothing the framework pickled is read: the network is rebuilt from the run's config
    (``agent``, ``env_id``, ``env_config``: ``run.json``) and its weights are loaded from
    ``policy_weights.pt`` with ``torch.load(weights_only=True)`` — after checking the
    file's SHA-256 against ``expected_sha256`` when that is given (the run's record).

    Raises:
        BundleError: an agent that has no bundle format, a checkpoint without
            ``policy_weights.pt``, a weights file that is unreadable, differs from
            ``expected_sha256`` or does not fit the config's network, or an unreadable
            ``meta.json``.
    """
    name = agent["name"]
    if name not in LEARNERS:
        raise BundleError(f"agent {name!r} has no policy bundle; bundles are exported from "
                          f"{sorted(LEARNERS)}")
    checkpoint = Path(checkpoint).resolve()
    weights_file = checkpoint / WEIGHTS_FILE
    if not weights_file.is_file():
        raise BundleError(
            f"{checkpoint} has no {WEIGHTS_FILE}; a bundle is exported from that file only "
            "(never by unpickling the framework's checkpoint). Checkpoints written before it "
            "existed lack it: resume the run (trust_checkpoint=true if it asks) to write one")
    try:
        weights = load_weights(weights_file, sha256=expected_sha256)
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    if name == "ppo":
        import ray

        from agents.learners.rllib_ppo import build_module

        module = build_module(env_id, env_config, agent)
        framework = f"ray[rllib] {ray.__version__}"
    else:
        import stable_baselines3

        from agents.learners.sb3_ppo import build_policy

        module = build_policy(env_id, env_config, agent)
        framework = f"stable-baselines3 {stable_baselines3.__version__}"
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{weights_file} does not fit the network of the run's config "
                          f"(agent {name}, hidden {list(agent['hidden'])}): "
                          f"{str(exc).splitlines()[0]}") from None
    discrete = isinstance(module.action_space, gym.spaces.Discrete)
    actor: torch.nn.Module = (_RLlibActor(module, discrete) if name == "ppo"
                              else _SB3Actor(module, discrete))
    actor.eval()
    meta_file = checkpoint / "meta.json"
    try:
        meta = jsonio.loads_strict(meta_file.read_bytes()) if meta_file.is_file() else {}
    except ValueError as exc:
        raise BundleError(f"{meta_file} is not readable JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_file} holds {type(meta).__name__}, not a JSON object")
    source = dict(learner=LEARNERS[name], framework=framework, checkpoint=str(checkpoint),
                  iteration=meta.get("iteration"), env_steps=meta.get("env_steps"),
                  weights_sha256=weights_sha256(weights))
    return actor, source


def write_bundle(actor: torch.nn.Module, out: Path, *, env_id: str,
                 env_config: Mapping[str, Any], source: Mapping[str, Any],
                 training: Mapping[str, Any] | None = None, config_hash: str | None = None,
                 overwrite: bool = False, seed: int = 0) -> Path:
    """Write the bundle of ``actor`` (from ``actor_from_checkpoint``) into directory ``out``.

    The bundle is assembled in a temporary sibling folder and renamed into place, so ``out``
    is either absent, the old bundle or the complete new one.

    Raises:
        BundleError: ``out`` exists and ``overwrite`` is false; or the exported graph
            disagrees with the torch policy by more than ``PARITY_TOLERANCE``.
    """
    out = Path(out).resolve()
    if out.exists() and not overwrite:
        raise BundleError(f"{out} already exists; choose another out= or pass overwrite=true")
    env = create_env(env_id, {**env_config, "info_level": "none"})
    spec = env_spec(env, env_id, env_config)
    discrete = spec["distribution"] == "categorical"
    if discrete != getattr(actor, "discrete", discrete):
        raise BundleError(f"the policy is {'discrete' if actor.discrete else 'continuous'} "
                          f"but {env_id} with {dict(env_config)} is not")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        opset = _export_onnx(actor, tmp / MODEL_FILE, spec)
        _check_parity(actor, tmp / MODEL_FILE, env.observation_space, seed)
        spec = dict(format_version=FORMAT_VERSION, **spec,
                    source=dict(source, torch=torch.__version__, opset=opset,
                                exported_at=time.strftime("%Y-%m-%dT%H:%M:%S%z")),
                    config_hash=config_hash, training=dict(training or {}),
                    model_sha256=sha256_file(tmp / MODEL_FILE))
        write_atomic(tmp / SPEC_FILE, jsonio.dumps(spec, indent=2) + "\n")
        write_manifest(tmp)
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        env.close()
    return out


class _Graph(torch.nn.Module):
    """The exported root: nests the actor so its weights are named ``actor.…`` and never
    collide with the graph's output names (a parameter called ``log_std`` would)."""

    def __init__(self, actor: torch.nn.Module) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor) -> Any:
        return self.actor(obs)


def _export_onnx(actor: torch.nn.Module, path: Path, spec: Mapping[str, Any]) -> int:
    """``actor`` as one ONNX file with a dynamic batch dimension; returns the opset."""
    example = torch.zeros((2, spec["observation"]["dim"]), dtype=torch.float32)
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:                    # the exporter's progress notes are not ours to show
        lg.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(
            _Graph(actor).eval(), (example,), input_names=["obs"], output_names=spec["outputs"],
            dynamic_shapes={"obs": {0: torch.export.Dim("batch")}}, dynamo=True,
            external_data=False, optimize=True, verbose=False)
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    program.save(str(path), external_data=False)
    return int(program.model.opset_imports[""])


def _check_parity(actor: torch.nn.Module, path: Path, space: gym.spaces.Box, seed: int
                  ) -> None:
    """Refuse a graph whose outputs differ from the torch actor's on sampled observations."""
    import onnxruntime as ort

    rng = generator(seed, "export")
    obs = rng.uniform(space.low, space.high, size=(256, space.shape[0])).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"obs": obs})
    with torch.no_grad():
        want = actor(torch.from_numpy(obs))
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    for name, g, w in zip([o.name for o in session.get_outputs()], got, want):
        err = float(np.abs(g - w.detach().numpy()).max())
        if not err <= PARITY_TOLERANCE:
            raise BundleError(f"the exported graph's {name!r} differs from the torch policy by "
                              f"{err:.3g} (> {PARITY_TOLERANCE}); not writing the bundle")


def _replace_dir(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``, replacing an old ``out`` only once ``new`` is in place."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)
