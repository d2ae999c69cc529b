"""The serving loader: refusals (tampered, wrong version, missing file, bad observations),
its import footprint, the serve extra's dependencies, acting and exploration maths."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from agents.serving.bundle import FORMAT_VERSION, BundleError, write_manifest
from agents.serving import ObservationError, load_policy
from agents.serving.exploration import Exploration, sample_categorical
from personarl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_spec(bundle: Path, edit, *, manifest: bool = True) -> None:
    """Edit ``policy.json`` with ``edit(spec)``; with ``manifest``, rewrite the manifest to
    match (an edit that integrity checks cannot see, so the spec's own checks must)."""
    spec = json.loads((bundle / "policy.json").read_text())
    edit(spec)
    # an infinite bound written as a number literal (1e999) that JSON readers take as inf
    (bundle / "policy.json").write_text(json.dumps(spec).replace("Infinity", "1e999"))
    if manifest:
        write_manifest(bundle)


def test_policy_json_describes_env_spaces_and_checksum(tiny_bundles):
    spec = json.loads((tiny_bundles["discrete"] / "policy.json").read_text())
    assert spec["format_version"] == FORMAT_VERSION
    assert spec["env"] == {"id": "personarl/AgentRouting-v0", "version": 0, "config": {}}
    assert spec["observation"]["dim"] == 34 and spec["observation"]["columns"]["task"] == [0, 5]
    assert spec["action"]["names"] == [f"agent_{k}" for k in range(6)]
    assert spec["distribution"] == "categorical" and spec["outputs"] == ["logits"]
    cont = json.loads((tiny_bundles["continuous"] / "policy.json").read_text())
    assert cont["distribution"] == "diag_gaussian" and cont["action"]["postprocess"] == "clip"
    assert cont["action"]["names"][0] == "openness" and len(cont["action"]["low"]) == 10
    files = sorted(p.name for p in tiny_bundles["discrete"].iterdir())
    assert files == ["manifest.json", "model.onnx", "policy.json"]   # nothing pickled


def test_policy_json_is_strict_json_even_with_a_nan_metric(tmp_path):
    pytest.importorskip("torch")
    from agents.learners.export import write_bundle
    from tests.conftest import TinyActor

    out = write_bundle(TinyActor.make(34, 6, True), tmp_path / "b",
                       env_id="personarl/AgentRouting-v0", env_config={},
                       source={"learner": "test", "checkpoint": None, "iteration": 1,
                               "env_steps": 10},
                       training={"metrics": {"losses/approx_kl": float("nan"),
                                             "charts/episodic_return": float("inf"),
                                             "losses/entropy": 1.5}})

    def refuse(token: str) -> None:
        raise AssertionError(f"policy.json holds a bare {token}")

    spec = json.loads((out / "policy.json").read_text(), parse_constant=refuse)
    assert spec["training"]["metrics"] == {"losses/approx_kl": None,
                                           "charts/episodic_return": None,
                                           "losses/entropy": 1.5}
    assert load_policy(out).spec["training"]["metrics"]["losses/approx_kl"] is None


def test_tampered_model_is_refused(tiny_bundles, tmp_path):
    b = copy_bundle(tiny_bundles["discrete"], tmp_path / "b")
    data = bytearray((b / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (b / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx does not match the manifest"):
        load_policy(b)


def test_wrong_format_version_names_both_versions(tiny_bundles, tmp_path):
    b = copy_bundle(tiny_bundles["discrete"], tmp_path / "b")
    edit_spec(b, lambda spec: spec.update(format_version=99))
    with pytest.raises(BundleError, match=r"format_version 99.*reads format_version 2"):
        load_policy(b)


def test_malformed_policy_json_is_a_bundle_error(tiny_bundles, tmp_path):
    b = copy_bundle(tiny_bundles["discrete"], tmp_path / "b")
    edit_spec(b, lambda spec: spec["observation"].pop("low"))
    with pytest.raises(BundleError, match="observation.low must be a list of 34 finite"):
        load_policy(b)
    (b / "policy.json").write_text("{not json")
    write_manifest(b)
    with pytest.raises(BundleError, match="not valid JSON"):
        load_policy(b)


def test_a_bundle_is_verified_as_a_whole(tiny_bundles, tmp_path):
    b = copy_bundle(tiny_bundles["discrete"], tmp_path / "b")
    # an edit the manifest does not cover is refused, whatever the file
    edit_spec(b, lambda spec: spec["action"].update(names=["a", "b", "c", "d", "e", "f"]),
              manifest=False)
    with pytest.raises(BundleError, match="policy.json does not match the manifest"):
        load_policy(b)
    # an edit with a rewritten manifest passes integrity; the spec's own checks remain
    for edit, message in (
            (lambda s: s["observation"].update(high=[1e309] * 34),
             "observation.high must be a list of 34 finite float32 numbers"),
            (lambda s: s["observation"].update(low=[2.0] * 34),
             r"observation.low\[0\] = 2.0 is above observation.high\[0\]"),
            (lambda s: s["action"].update(names=["a", "b"]),
             "action.names must be 6 distinct non-empty strings"),
            (lambda s: s["action"].update(n=5, names=["a", "b", "c", "d", "e"]),
             r"output 'logits' has shape \[2, 6\].*declares 5 actions"),
            (lambda s: s.update(model_sha256="0" * 64), "records model_sha256 0000")):
        shutil.rmtree(b)
        copy_bundle(tiny_bundles["discrete"], b)
        edit_spec(b, edit)
        with pytest.raises(BundleError, match=message):
            load_policy(b)
    # a file the manifest does not list, a link, a file above the size limit
    shutil.rmtree(b)
    copy_bundle(tiny_bundles["discrete"], b)
    (b / "model.onnx.data").write_bytes(b"\0" * 8)
    with pytest.raises(BundleError, match=r"does not list: \['model.onnx.data'\]"):
        load_policy(b)
    (b / "model.onnx.data").unlink()
    with pytest.raises(BundleError, match=r"policy.json has [\d,]+ bytes, above the limit of "
                                          r"1,000 \(serve config max_bundle_file_bytes\)"):
        load_policy(b, max_file_bytes=1000)
    (tmp_path / "elsewhere.json").write_bytes((b / "policy.json").read_bytes())
    (b / "policy.json").unlink()
    (b / "policy.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(BundleError, match="policy.json is not a regular file"):
        load_policy(b)


def test_a_model_with_external_data_is_refused(tiny_bundles, tmp_path):
    onnx = pytest.importorskip("onnx")
    b = copy_bundle(tiny_bundles["discrete"], tmp_path / "b")
    model = onnx.load(str(b / "model.onnx"))
    # weights moved to a file outside the bundle, which onnxruntime would read from the
    # working directory when it loads the model from bytes
    onnx.save_model(model, str(b / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    (b / "weights.bin").rename(tmp_path / "weights.bin")
    spec = json.loads((b / "policy.json").read_text())
    from agents.serving.bundle import sha256_file
    spec["model_sha256"] = sha256_file(b / "model.onnx")
    (b / "policy.json").write_text(json.dumps(spec))
    write_manifest(b)
    assert (tmp_path / "weights.bin").exists()
    with pytest.raises(BundleError, match="keeps its data outside the model"):
        load_policy(b)


@pytest.mark.parametrize("missing", ["model.onnx", "policy.json", "manifest.json"])
def test_missing_file_is_named(tiny_bundles, tmp_path, missing):
    b = copy_bundle(tiny_bundles["discrete"], tmp_path / "b")
    (b / missing).unlink()
    with pytest.raises(BundleError, match=f"{missing} is missing"):
        load_policy(b)
    with pytest.raises(BundleError, match="not a directory"):
        load_policy(tmp_path / "nowhere")


@pytest.mark.parametrize("obs, message", [
    (np.full(34, np.nan), "NaN or infinite"),
    (np.full(34, np.inf), "NaN or infinite"),
    (np.zeros(33), r"shape \(33,\)"),
    (np.zeros((2, 3, 34)), r"shape \(2, 3, 34\)"),
    (np.zeros((0, 34)), r"batch >= 1"),
    (np.array(["a"] * 34), "dtype <U1"),
    ([[0.1] * 34, [0.2] * 3], "rectangular"),
    (np.full(34, 1.5), r"outside the observation space's bounds \[0, 1\].*'task'"),
])
def test_bad_observations_are_clear_errors(tiny_bundles, obs, message):
    policy = load_policy(tiny_bundles["discrete"])
    with pytest.raises(ObservationError, match=message):
        policy.act(obs)


def test_acting_discrete_and_continuous(tiny_bundles):
    rng = np.random.default_rng(0)
    d = load_policy(tiny_bundles["discrete"], seed=0)
    x = rng.random((64, 34), dtype=np.float32)
    probs = d.action_probs(x)
    assert probs.shape == (64, 6) and np.allclose(probs.sum(axis=1), 1.0)
    assert np.array_equal(d.act_batch(x), probs.argmax(axis=1))
    assert d.act(x[3]) == int(probs[3].argmax()) and isinstance(d.act(x[3]), int)
    with pytest.raises(ObservationError, match="act_batch takes a"):
        d.act_batch(x[0])
    with pytest.raises(TypeError, match="for continuous policies"):
        d.gaussian(x)

    c = load_policy(tiny_bundles["continuous"], seed=0)
    y = rng.random((64, 33), dtype=np.float32)
    mean, log_std = c.gaussian(y)
    assert mean.shape == (64, 10) and np.allclose(log_std, -3.0, atol=1e-6)
    greedy = c.act_batch(y)
    assert np.allclose(greedy, np.clip(mean, 0.0, 1.0))
    sampled = c.act_batch(np.repeat(y[:1], 20000, axis=0), exploration="sample")
    assert sampled.min() >= 0.0 and sampled.max() <= 1.0           # clipped like the env
    inside = (mean[0] > 0.2) & (mean[0] < 0.8)             # std 0.05: clipping rarely bites
    assert inside.sum() >= 2
    assert np.allclose(sampled.mean(axis=0)[inside], mean[0][inside], atol=0.005)


def test_sampled_actions_follow_the_action_probabilities(tiny_bundles):
    policy = load_policy(tiny_bundles["discrete"], seed=3)
    x = np.repeat(np.random.default_rng(1).random((1, 34), dtype=np.float32), 40000, axis=0)
    freq = np.bincount(policy.act_batch(x, exploration="sample"), minlength=6) / len(x)
    assert np.allclose(freq, policy.action_probs(x[0]), atol=0.01)


def test_one_exploration_vocabulary():
    p = np.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]])
    assert np.array_equal(Exploration("greedy").probs(p), [[0, 1, 0], [1, 0, 0]])
    assert Exploration("sample").probs(p) is p                          # τ = 1: the policy
    eps = Exploration("epsilon", epsilon=0.3).probs(p)
    assert np.allclose(eps, [[0.1, 0.8, 0.1], [0.8, 0.1, 0.1]])
    hot = Exploration("sample", temperature=0.5).probs(p)                # ∝ p², renormalised
    assert np.allclose(hot, p**2 / (p**2).sum(axis=1, keepdims=True))
    assert np.allclose(Exploration("sample", temperature=1e3).probs(p), 1 / 3, atol=1e-3)
    for bad, message in ((dict(mode="boltzmann"), r"exploration.mode='boltzmann'; valid: "
                          r"\['greedy', 'sample', 'epsilon'\]$"),
                         (dict(mode="softmax"), "'softmax' was renamed 'sample'"),
                         (dict(mode="stochastic"), "'stochastic' was renamed 'sample'"),
                         (dict(mode="epsilon", epsilon=1.5), r"exploration.epsilon=1.5 is "
                          r"outside the valid range \[0.0, 1.0\]"),
                         (dict(mode="sample", temperature=0), r"exploration.temperature=0 "
                          r"is outside the valid range \[0.001, 1000.0\]"),
                         (dict(mode="sample", temperature=1e-4), "temperature=0.0001 "),
                         (dict(mode="sample", temperature=1e4), "temperature=10000.0 "),
                         (dict(mode="sample", temperature=10**400), "too large for a float"),
                         (dict(mode=["greedy"]), r"exploration.mode=\['greedy'\]; valid"),
                         (dict(mode="sample", temperature=float("nan")), "temperature=nan"),
                         (dict(mode="sample", temperature=float("inf")), "temperature=inf")):
        with pytest.raises(ConfigError, match=message):
            Exploration(**bad)
    cold = Exploration("sample", temperature=1e-3).probs(p)             # no overflow: greedy
    assert np.isfinite(cold).all() and np.array_equal(cold.argmax(axis=1), p.argmax(axis=1))
    assert np.allclose(cold.max(axis=1), 1.0)
    assert Exploration.of({"mode": "epsilon", "epsilon": 0.2}) == Exploration("epsilon", 0.2)
    for odd in (None, 3, {"mode": "sample", "tau": 2}, {"epsilon": 0.1}, ["greedy"]):
        with pytest.raises(ConfigError, match="exploration="):
            Exploration.of(odd)
    draws = sample_categorical(np.repeat(p[:1], 30000, axis=0), np.random.default_rng(0))
    assert np.allclose(np.bincount(draws, minlength=3) / 30000, p[0], atol=0.01)


def test_served_policies_act_under_every_exploration_setting(tiny_bundles):
    discrete = load_policy(tiny_bundles["discrete"], seed=5)
    x = np.repeat(np.random.default_rng(2).random((1, 34), dtype=np.float32), 40000, axis=0)
    p = discrete.action_probs(x[:1])
    for setting in (Exploration("sample", temperature=3.0),
                    Exploration("epsilon", epsilon=0.5)):
        freq = np.bincount(discrete.act_batch(x, exploration=setting), minlength=6) / len(x)
        assert np.allclose(freq, setting.probs(p)[0], atol=0.01)
    assert discrete.act(x[0], exploration="greedy") == int(p.argmax())
    continuous = load_policy(tiny_bundles["continuous"], seed=5)
    y = np.repeat(np.random.default_rng(3).random((1, 33), dtype=np.float32), 40000, axis=0)
    mean, log_std = continuous.gaussian(y[:1])
    inside = (mean[0] > 0.3) & (mean[0] < 0.7)             # std ≤ 0.1: clipping never bites
    assert inside.sum() >= 2
    wide = continuous.act_batch(y, exploration=Exploration("sample", temperature=4.0))
    assert np.allclose(wide.std(axis=0)[inside], 2 * np.exp(log_std[0][inside]), rtol=0.03)
    with pytest.raises(ConfigError, match="'epsilon' is for discrete actions"):
        continuous.act(y[0], exploration=Exploration("epsilon", epsilon=0.1))


def test_a_served_policy_is_a_policy(tiny_bundles):
    """One interface: a loaded bundle runs through the evaluation loop as it is, acting
    greedily (``act(obs, info)`` — the info is ignored, not taken for a setting)."""
    from agents.baselines.evaluation import run_episodes
    from envs import ROUTING_ID
    from envs.creator import vector_maker

    policy = load_policy(tiny_bundles["discrete"], seed=0)
    assert policy.name.startswith("bundle:") and not policy.learning
    batch = run_episodes(policy, vector_maker(ROUTING_ID, {}), 64, seed=0)
    assert batch.returns.shape == (64,) and (batch.lengths >= 1).all()
    again = run_episodes(policy, vector_maker(ROUTING_ID, {}), 64, seed=0)
    assert np.array_equal(batch.returns, again.returns)                # greedy: no draws


def test_the_serving_wing_imports_neither_ray_nor_torch_nor_the_other_wings(tiny_bundles):
    """In a fresh interpreter: every module of ``agents.serving``, the server app, the
    traffic splits, the registry and the ``serve``/``registry`` commands, then a bundle
    loaded and acting — no Ray, no torch, nothing of ``agents.baselines`` or
    ``agents.learners``."""
    code = (
        "import importlib, pkgutil, sys, numpy as np\n"
        "import agents.serving as wing\n"
        "for m in pkgutil.iter_modules(wing.__path__):\n"
        "    importlib.import_module(f'agents.serving.{m.name}')\n"
        "import experiments.serve, experiments.registry\n"
        "from agents.serving import load_policy\n"
        f"p = load_policy({str(tiny_bundles['discrete'])!r})\n"
        "a = p.act(np.full(34, 0.5, dtype=np.float32))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')\n"
        "               or m.startswith(('agents.baselines', 'agents.learners')))\n"
        "print(a, heavy)\n"
        "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("[]")


def test_serve_install_names_neither_ray_nor_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    serve = project["dependencies"] + project["optional-dependencies"]["serve"]
    names = {req.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0]
             .strip().lower() for req in serve}
    assert "onnxruntime" in names and "fastapi" in names
    assert not names & {"ray", "torch", "stable-baselines3"}, names


def _onnx_model(path: Path, *, batch, weight: float = 0.1, out_dim: int = 6) -> None:
    """A one-layer ONNX policy written with onnx.helper: obs (batch, 34) -> logits."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [34, out_dim], [weight] * (34 * out_dim))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "w"], ["logits"])], "policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [batch, 34])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, out_dim])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))


def _with_model(tiny_bundles, tmp_path, **model) -> Path:
    from agents.serving.bundle import sha256_file

    b = copy_bundle(tiny_bundles["discrete"], tmp_path / "m")
    _onnx_model(b / "model.onnx", **model)
    edit_spec(b, lambda spec: spec.update(model_sha256=sha256_file(b / "model.onnx")))
    return b


@pytest.mark.parametrize("model, message", [
    (dict(batch="batch"), None),                                      # the valid control
    (dict(batch=1), r"shape \[batch, 34\] with any batch size"),
    (dict(batch="batch", weight=float("nan")), "NaN or infinite on observations inside"),
    (dict(batch="batch", out_dim=5), r"output 'logits' has shape \[2, 5\]"),
])
def test_a_model_is_run_on_a_batch_before_it_is_served(tiny_bundles, tmp_path, model,
                                                      message):
    b = _with_model(tiny_bundles, tmp_path, **model)
    if message is None:
        assert load_policy(b).act_batch(np.full((3, 34), 0.5)).shape == (3,)
    else:
        with pytest.raises(BundleError, match=message):
            load_policy(b)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["observation"].update(high=[10**400] * 34), "finite float32 numbers"),
    (lambda s: s["observation"].update(high=[1e39] * 34), "finite float32 numbers"),
    (lambda s: s["observation"].update(columns=[["a", 0, 1]]), "observation.columns must"),
    (lambda s: s["observation"].update(columns={"a": [0, 99]}), "observation.columns must"),
    (lambda s: s["action"]["names"].__setitem__(0, "\udc80"), "not valid Unicode"),
    (lambda s: s.update(format_version=2.0), "format_version 2.0"),
    (lambda s: s.update(nested=[[[[]]]] * 2 + ["[" * 100_000]), None),   # a string: fine
])
def test_hostile_specs_are_bundle_errors(tiny_bundles, tmp_path, edit, message):
    b = copy_bundle(tiny_bundles["discrete"], tmp_path / "b")
    edit_spec(b, edit)
    if message is None:
        load_policy(b)
        return
    with pytest.raises(BundleError, match=message):
        load_policy(b)


def test_hostile_manifests_are_bundle_errors(tiny_bundles, tmp_path):
    b = copy_bundle(tiny_bundles["discrete"], tmp_path / "b")
    good = (b / "manifest.json").read_text()
    for text, message in (("[" * 100_000 + "]" * 100_000, "nested too deeply"),
                          ('{"files": {}, "files": {}}', "duplicate key 'files'"),
                          (good.replace('"format_version": 2', '"format_version": 2.0'),
                           "format_version 2.0"),
                          (good.replace(f'"bytes": {(b / "model.onnx").stat().st_size}',
                                        f'"bytes": {(b / "model.onnx").stat().st_size}.0'),
                           "does not match the manifest")):
        (b / "manifest.json").write_text(text)
        with pytest.raises(BundleError, match=message):
            load_policy(b)
    with pytest.raises(ValueError, match="max_file_bytes=None must be an integer"):
        load_policy(tiny_bundles["discrete"], max_file_bytes=None)
