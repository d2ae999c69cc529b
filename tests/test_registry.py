"""The model registry: versions, stages, promote/rollback, refusals, concurrent writers,
and its command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from agents.serving.bundle import BundleError, write_manifest
from agents.serving.registry import Registry, RegistryError
from agents.serving.loader import load_policy
from tests.readme import lines_with



def stages(reg: Registry, name: str = "routing") -> dict[int, str]:
    return {v["version"]: v["stage"] for v in reg.versions(name)}


def _routing_bundles(root: Path, n: int) -> list[Path]:
    """``n`` bundles of AgentRouting policies with different weights (different files)."""
    from envs import ROUTING_ID
    from tests.conftest import onnx_bundle
    return [onnx_bundle(root / f"routing{seed}", ROUTING_ID, {}, seed=seed)
            for seed in range(n)]


def test_versions_stages_promote_and_rollback(tmp_path):
    bundles = _routing_bundles(tmp_path / "bundles", 4)
    reg = Registry(tmp_path / "reg")
    for bundle in bundles[:3]:
        reg.register(bundle, "routing")
    assert stages(reg) == {1: "none", 2: "none", 3: "none"}
    reg.set_stage("routing", 2, "staging")
    reg.promote("routing", 1)
    reg.promote("routing", 2)
    assert stages(reg) == {1: "archived", 2: "production", 3: "none"}
    path, entry = reg.resolve("routing", stage="production")
    assert entry["version"] == 2 and load_policy(path).env_id == "personarl/AgentRouting-v0"
    reg.promote("routing", 3)
    reg.rollback("routing")                            # 3 -> archived, 2 back
    assert stages(reg) == {1: "archived", 2: "production", 3: "archived"}
    reg.rollback("routing")                            # 2 -> archived, 1 back
    assert stages(reg) == {1: "production", 2: "archived", 3: "archived"}
    with pytest.raises(RegistryError, match="no earlier production version"):
        reg.rollback("routing")
    assert reg.register(bundles[1], "routing")["version"] == 2   # the same files: v2
    reg.register(bundles[3], "routing")
    assert max(stages(reg)) == 4                       # numbers only grow


def test_refusals_leave_the_registry_as_it_was(tiny_bundles, tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.register(tiny_bundles["discrete"], "routing")
    reg.promote("routing", 1)
    before = (tmp_path / "reg" / "index.json").read_text()
    cases = [
        (lambda: reg.register(tiny_bundles["discrete"], "Bad Name!"), "model name"),
        (lambda: reg.promote("routing", 7), r"no version 7; versions: \[1\]"),
        (lambda: reg.promote("nope", 1), "no model 'nope'"),
        (lambda: reg.set_stage("routing", 1, "retired"), "stage 'retired' is invalid"),
        (lambda: reg.set_stage("routing", 1, "archived"), "is in production"),
        (lambda: reg.set_stage("routing", 1, "production"), "use promote"),
        (lambda: reg.promote("routing", 1), "already in production"),
        (lambda: reg.resolve("routing", stage="staging"), "no version in stage 'staging'"),
    ]
    for call, message in cases:
        with pytest.raises(RegistryError, match=message):
            call()
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_bundles["discrete"], tampered)
    data = (tampered / "model.onnx").read_bytes()
    (tampered / "model.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(BundleError, match="does not match the manifest"):
        reg.register(tampered, "routing")
    # a bundle whose integrity holds but which cannot be served is refused too
    unservable = tmp_path / "unservable"
    shutil.copytree(tiny_bundles["discrete"], unservable)
    spec = json.loads((unservable / "policy.json").read_text())
    spec["action"].update(n=5, names=spec["action"]["names"][:5])
    (unservable / "policy.json").write_text(json.dumps(spec))
    write_manifest(unservable)
    with pytest.raises(BundleError, match="declares 5 actions"):
        reg.register(unservable, "routing")
    assert (tmp_path / "reg" / "index.json").read_text() == before


def test_a_version_is_served_only_while_its_files_match_the_registration(tiny_bundles,
                                                                          tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.register(tiny_bundles["discrete"], "routing")
    reg.register(tiny_bundles["continuous"], "adapt")
    policy, entry = reg.load("routing", version=1)
    assert policy.digests == entry["files"] and set(entry["files"]) == {
        "model.onnx", "policy.json", "manifest.json"}
    # another bundle's files swapped in together with a consistent manifest: integrity
    # holds, the registry's record does not
    folder = tmp_path / "reg" / "routing" / "v1"
    shutil.rmtree(folder)
    shutil.copytree(tmp_path / "reg" / "adapt" / "v1", folder)
    assert load_policy(folder).env_id == "personarl/PersonalityAdaptation-v0"
    with pytest.raises(BundleError, match="recorded when it was registered"):
        reg.load("routing", version=1)
    with pytest.raises(BundleError, match="recorded when it was registered"):
        reg.promote("routing", 1)                        # nor put into production
    assert reg.get("routing", 1)["stage"] == "none"
    # an index edited to point outside the registry is not followed
    index = json.loads((tmp_path / "reg" / "index.json").read_text())
    index["models"]["adapt"]["versions"][0]["path"] = "../../elsewhere"
    (tmp_path / "reg" / "index.json").write_text(json.dumps(index))
    with pytest.raises(RegistryError, match="'../../elsewhere'.*refusing to follow it"):
        reg.load("adapt", version=1)
    (tmp_path / "reg" / "index.json").write_text("{torn")
    with pytest.raises(RegistryError, match="index.json is not valid JSON"):
        reg.versions()


def _register(root: str, bundle: str) -> int:
    return Registry(root).register(bundle, "routing")["version"]


def test_concurrent_registrations_get_distinct_versions(tmp_path):
    root = str(tmp_path / "reg")
    bundles = [str(b) for b in _routing_bundles(tmp_path / "bundles", 12)]
    with ProcessPoolExecutor(4) as pool:
        versions = list(pool.map(_register, [root] * 12, bundles))
    assert sorted(versions) == list(range(1, 13))
    assert sorted(stages(Registry(root))) == list(range(1, 13))


def test_command_line(tiny_bundles, tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "experiments.registry",
                               f"registry={tmp_path / 'reg'}", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    reg = cli("action=register", f"bundle={tiny_bundles['discrete']}", "name=routing")
    assert reg.returncode == 0, reg.stderr
    assert "routing" in reg.stdout and "v1" in reg.stdout
    assert cli("action=promote", "name=routing", "version=1").returncode == 0
    listed = cli("action=list")
    assert "production" in listed.stdout
    bad = cli("action=rollback", "name=routing")
    assert bad.returncode == 2 and "no earlier production version" in bad.stdout + bad.stderr
    assert cli("action=promote", "name=routing").returncode == 2           # version missing
    assert cli("action=frob").returncode == 2
    assert cli("colour=red").returncode != 0                                # unknown key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg"]            # no run dirs


@pytest.mark.parametrize("edit, message", [
    (lambda ix: ix["models"].update(routing=[]), "must be an object with 'versions'"),
    (lambda ix: ix["models"]["routing"].pop("versions"), "must be an object with 'versions'"),
    (lambda ix: ix["models"]["routing"]["versions"][0].update(version="1"),
     "without an integer 'version'"),
    (lambda ix: ix["models"]["routing"]["versions"][0].pop("stage"), "a 'stage' in"),
    (lambda ix: ix["models"]["routing"].update(production_history="1"),
     "must be an object with 'versions' and 'production_history' lists"),
    (lambda ix: ix["models"].update({"Bad Name": {}}), "model name 'Bad Name' is invalid"),
])
def test_a_hand_edited_index_is_a_registry_error(tiny_bundles, tmp_path, edit, message):
    reg = Registry(tmp_path / "reg")
    reg.register(tiny_bundles["discrete"], "routing")
    index = json.loads((tmp_path / "reg" / "index.json").read_text())
    edit(index)
    (tmp_path / "reg" / "index.json").write_text(json.dumps(index))
    for call in (reg.versions, lambda: reg.load("routing", version=1),
                 lambda: reg.register(tiny_bundles["discrete"], "routing"),
                 lambda: reg.promote("routing", 1)):
        with pytest.raises(RegistryError, match=message):
            call()
    (tmp_path / "reg" / "index.json").unlink()
    (tmp_path / "reg" / "index.json").mkdir()
    with pytest.raises(RegistryError, match="cannot read the registry index"):
        reg.versions()
    (tmp_path / "file").write_text("")
    with pytest.raises(RegistryError, match="cannot be a registry directory"):
        Registry(tmp_path / "file").register(tiny_bundles["discrete"], "routing")


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.registry", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_readme_registry_sequence_runs_as_written(tiny_bundles, tmp_path):
    """The README's registry commands, in order, as written (the serving lines aside), with
    its placeholders filled by two bundles of the same env; the stages after each are the
    ones its comments name."""
    from envs import ROUTING_ID
    from tests.conftest import onnx_bundle

    second = onnx_bundle(tmp_path / "bundles" / "second", ROUTING_ID, {}, seed=1)
    fill = {"outputs/<date>/<time>/policy": str(tiny_bundles["discrete"]),
            "<another run>/policy": str(second)}
    commands = []
    for line in lines_with("-m experiments.registry "):
        for placeholder, path in fill.items():
            line = line.replace(placeholder, path)
        commands.append(line.split())
    expected = [{1: "none"}, {1: "production"}, {1: "production", 2: "none"},
                {1: "production", 2: "staging"}, {1: "archived", 2: "production"},
                {1: "production", 2: "archived"}, {1: "production", 2: "archived"}]
    assert [c[3] for c in commands] == ["action=register", "action=promote", "action=register",
                                        "action=stage", "action=promote", "action=rollback",
                                        "action=list"]
    work = tmp_path / "work"
    work.mkdir()
    for command, stages_after in zip(commands, expected):
        run = _cli(work, *command[3:])
        assert run.returncode == 0, (command, run.stdout, run.stderr)
        assert stages(Registry(work / "outputs" / "registry")) == stages_after, command
    assert run.stdout.splitlines()[0].split()[:3] == ["model", "version", "stage"]


def test_registering_the_same_files_again_returns_that_version(tiny_bundles, tmp_path):
    first = _cli(tmp_path, "action=register", f"bundle={tiny_bundles['discrete']}",
                 "name=routing")
    again = _cli(tmp_path, "action=register", f"bundle={tiny_bundles['discrete']}",
                 "name=routing")
    assert first.returncode == again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines() == [
        again.stdout.strip().splitlines()[0]]                     # one line
    assert "routing v1 already holds these files" in again.stdout
    assert "nothing registered" in again.stdout
    assert stages(Registry(tmp_path / "outputs" / "registry")) == {1: "none"}
    assert sorted(p.name for p in (tmp_path / "outputs" / "registry" / "routing").iterdir()) \
        == ["v1"]
