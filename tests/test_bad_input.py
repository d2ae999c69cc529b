"""Every app × every kind of bad input: exit 2, one line ``cannot <action>: …`` naming the
bad value, no traceback, no run directory left behind.

The apps run in this process (``runpy`` as ``__main__``, exactly what ``python -m`` runs)
so that the whole matrix costs seconds; ``tests/test_cli.py`` runs a few of the same cases
as real processes. A kind that an app has no input for is absent from its row
(``N/A`` below says why).
"""

from __future__ import annotations

import logging
import logging.config
import runpy
import sys
import warnings
from pathlib import Path

import pytest

#: apps that are commands, not runs: they write no run directory (``hydra.run.dir: .``)
COMMANDS = ("report", "registry")
KINDS = ("missing", "unknown_key", "wrong_type", "out_of_range", "huge_number",
         "missing_file", "existing_output", "other_env_bundle", "continuous_actions",
         "renamed")

#: app -> kind -> (arguments, what the one line must contain); {routing}, {adaptation}
#: (bundles) and {data} (a routing log) are filled in by the fixtures
MATRIX: dict[str, dict[str, tuple[list[str], str]]] = {
    "train": {   # N/A: no required argument, no bundle
        "unknown_key": (["env.horizonn=3"], "'horizonn' not in 'RoutingEnvSchema'"),
        "wrong_type": (["agent.lr=fast"], "agent.lr=fast"),
        "out_of_range": (["agent.lr=-1", "logger=none"], "agent.lr=-1"),
        "missing_file": (["resume=true", "logger=none"], "holds no run (no run.json)"),
        "renamed": (["env=adaptation", "reward=adaptation", "env.max_turns=8"],
                    "('env.max_turns' was renamed 'env.horizon' with env=adaptation)"),
    },
    "sweep": {   # N/A: no file, no bundle
        "missing": (["logger=none"], "sweep=<name>"),
        "unknown_key": (["sweep=routing_small", "sweep.trials=3"], "'trials'"),
        "wrong_type": (["sweep=routing_small", "sweep.num_samples=many"],
                       "sweep.num_samples=many"),
        "out_of_range": (["sweep=routing_small", "sweep.num_samples=0", "logger=none"],
                         "sweep.num_samples=0"),
    },
    "collect": {  # N/A: no required argument (behaviour has a default)
        "unknown_key": (["episodez=3"], "episodez"),
        "wrong_type": (["episodes=lots"], "episodes=lots"),
        "out_of_range": (["episodes=0"], "episodes=0"),
        "missing_file": (["behaviour=/nonexistent/bundle"], "'/nonexistent/bundle'"),
        "other_env_bundle": (["behaviour={adaptation}"], "is a bundle for "
                                                          "personarl/PersonalityAdaptation-v0"),
        "huge_number": (["exploration.temperature=1" + "0" * 400],
                        "exploration.temperature=<a 401-digit number> is too large for a "
                        "float"),
        "existing_output": (["out={data}"], "already exists; choose another out= or pass "
                                             "overwrite=true"),
        "continuous_actions": (["env=adaptation", "reward=adaptation",
                                "env.action_mode=continuous"],
                               "configured with continuous actions"),
        "renamed": (["behaviour=random", "exploration.mode=softmax"],
                    "exploration.mode='softmax'; valid: ['greedy', 'sample', 'epsilon'] "
                    "('softmax' was renamed 'sample')"),
    },
    "evaluate": {
        "missing": ([], "give exactly one of data=<a logged.parquet file or a server's "
                        "decision_logs dir> or registry=<dir> with model=<name>"),
        "unknown_key": (["data={data}", "gama=0.9"], "gama"),
        "wrong_type": (["data={data}", "gamma=high"], "gamma=high"),
        "out_of_range": (["data={data}", "gamma=2"], "gamma=2"),
        "missing_file": (["data=/nonexistent/log.parquet"], "/nonexistent/log.parquet"),
        "other_env_bundle": (["data={data}", "policies=[{adaptation}]"],
                             "is a bundle for personarl/PersonalityAdaptation-v0"),
        "renamed": (["data={data}", "mode=stochastic"],
                    "('mode' was renamed 'exploration.mode')"),
    },
    "simulate_users": {  # N/A: no required argument, no bundle, no output file
        "unknown_key": (["episodez=3"], "episodez"),
        "wrong_type": (["episodes=lots"], "episodes=lots"),
        "out_of_range": (["episodes=0"], "episodes=0"),
        "missing_file": (["url=http://127.0.0.1:9"], "http://127.0.0.1:9/v1/policy: cannot "
                                                     "reach the server"),
    },
    "report": {  # N/A: no bundle
        "missing": ([], "missing required argument(s): dir=<value>"),
        "unknown_key": (["dir=.", "bootstrapp=3"], "bootstrapp"),
        "wrong_type": (["dir=.", "bootstrap=many"], "bootstrap=many"),
        "out_of_range": (["dir={tmp}", "bootstrap=0"], "bootstrap=0"),
        "missing_file": (["dir=/nonexistent/sweep"], "/nonexistent/sweep"),
    },
    "serve": {
        "missing": ([], "bundle="),
        "unknown_key": (["bundle={routing}", "prot=80"], "prot"),
        "wrong_type": (["bundle={routing}", "port=http"], "port=http"),
        "out_of_range": (["bundle={routing}", "port=70000"], "port=70000"),
        "missing_file": (["bundle=/nonexistent/bundle"], "/nonexistent/bundle"),
        "other_env_bundle": (["bundle={routing}", "traffic.mode=ab",
                              "traffic.candidate={adaptation}"],
                             "personarl/PersonalityAdaptation-v0"),
        "renamed": (["bundle={routing}", "exploration.mode=stochastic"],
                    "('stochastic' was renamed 'sample')"),
    },
    "registry": {
        "missing": (["registry={tmp}/reg", "action=register", "name=routing"], "bundle="),
        "unknown_key": (["colour=red"], "colour"),
        "wrong_type": (["action=promote", "name=routing", "version=latest"],
                       "version=latest"),
        "out_of_range": (["registry={tmp}/reg", "action=promote", "name=routing",
                          "version=0"], "version=0"),
        "missing_file": (["registry={tmp}/reg", "action=register", "name=routing",
                          "bundle=/nonexistent/bundle"], "/nonexistent/bundle"),
        "other_env_bundle": (["registry={reg}", "action=register", "name=routing",
                              "bundle={adaptation}"],
                             "is a policy for personarl/PersonalityAdaptation-v0"),
    },
    "export": {  # N/A: no numeric argument; the checkpoint's run names its env
        "missing": ([], "missing required argument(s): checkpoint=<value>"),
        "unknown_key": (["checkpoint=x", "outt=y"], "outt"),
        "wrong_type": (["checkpoint=x", "overwrite=maybe"], "overwrite=maybe"),
        "missing_file": (["checkpoint=/nonexistent/iter_000001"],
                         "'/nonexistent/iter_000001' is not a complete training checkpoint"),
    },
}
CASES = [(app, kind) for app, row in MATRIX.items() for kind in KINDS if kind in row]


@pytest.fixture(scope="module")
def inputs(tiny_bundles, tmp_path_factory):
    """Bundles of two envs, a routing log and a registry holding a routing policy."""
    from hydra import compose, initialize_config_dir

    from agents.serving.registry import Registry
    from experiments.collect import collect_data

    root = tmp_path_factory.mktemp("bad_input")
    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(str(configs), version_base="1.3"):
        cfg = compose("collect", overrides=["behaviour=greedy", "episodes=64",
                                            "warmup_steps=0"])
    collect_data(cfg, root / "log.parquet")
    Registry(root / "registry").register(tiny_bundles["discrete"], "routing")
    return dict(routing=str(tiny_bundles["discrete"]), adaptation=str(tiny_bundles["continuous"]),
                data=str(root / "log.parquet"), reg=str(root / "registry"))


def run_in_process(app: str, args: list[str], monkeypatch) -> int:
    """``python -m experiments.<app> <args>`` in this process; its exit status. Hydra's
    global state and the logging it configured (handlers on the run's log file) are
    put back afterwards, so later tests are not affected."""
    from hydra.core.global_hydra import GlobalHydra

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # Hydra configures logging with dictConfig, which closes every handler alive in the
    # process — in a test process that includes handlers other libraries (Ray) opened on
    # pytest's capture files; a real `python -m` process has none. Forget them instead.
    monkeypatch.setattr(logging.config, "_clearExistingHandlers",
                        lambda: (logging._handlers.clear(), logging._handlerList.clear()))
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", [f"experiments/{app}.py", *args])
    try:
        with pytest.raises(SystemExit) as exited, warnings.catch_warnings():
            # runpy notes the module was imported before (by an earlier case): harmless
            warnings.filterwarnings("ignore", message=".*found in sys.modules",
                                    category=RuntimeWarning)
            runpy.run_module(f"experiments.{app}", run_name="__main__", alter_sys=False)
    finally:
        GlobalHydra.instance().clear()
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    return exited.value.code


@pytest.mark.parametrize("app,kind", CASES, ids=[f"{a}-{k}" for a, k in CASES])
def test_bad_input_exits_2_with_one_line_naming_it(app, kind, inputs, tmp_path, monkeypatch,
                                                   capfd):
    args, fragment = MATRIX[app][kind]
    fill = dict(inputs, tmp=str(tmp_path))
    args = [a.format(**fill) for a in args]
    run_dir = tmp_path / "run"
    if app not in COMMANDS:
        args.append(f"hydra.run.dir={run_dir}")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    code = run_in_process(app, args, monkeypatch)
    out = capfd.readouterr()
    text = out.out + out.err
    lines = [x for x in text.splitlines() if "cannot " in x]
    assert code == 2, text[-2000:]
    assert len(lines) == 1 and fragment.format(**fill) in lines[0], text[-2000:]
    assert "Traceback" not in text
    assert not run_dir.exists()                    # Hydra's directory went with the failure


def test_an_internal_fault_keeps_its_traceback(monkeypatch, capfd, tmp_path):
    """Not a user's mistake: no ``cannot …`` line, no exit 2; the traceback is shown."""
    from agents.serving.registry import Registry

    def broken(self, name=None):
        raise RuntimeError("an internal fault")

    monkeypatch.setattr(Registry, "versions", broken)
    monkeypatch.setattr(Registry, "models", lambda self: ["routing"])
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    code = run_in_process("registry", [f"registry={tmp_path}/reg"], monkeypatch)
    out = capfd.readouterr()
    text = out.out + out.err
    assert code not in (0, 2) and "cannot " not in text
    assert "Traceback" in text and "RuntimeError: an internal fault" in text


def test_a_failed_command_never_removes_what_it_did_not_write(monkeypatch, capfd, tmp_path):
    """The user's own directory keeps its files, and is not removed when it was empty."""
    notes = tmp_path / "mine" / "experiment_notes.log"
    notes.parent.mkdir()
    notes.write_text("notes")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    for run_dir in (notes.parent, empty):
        assert run_in_process("train", ["budget=-1", f"hydra.run.dir={run_dir}"],
                              monkeypatch) == 2
    capfd.readouterr()
    assert notes.read_text() == "notes"
    assert empty.is_dir() and list(empty.iterdir()) == []     # what the run wrote is gone


def test_serve_refuses_an_address_in_use_before_writing_anything(inputs, monkeypatch, capfd,
                                                                  tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run_dir = tmp_path / "run"
        monkeypatch.chdir(Path(__file__).resolve().parents[1])
        code = run_in_process("serve", [f"bundle={inputs['routing']}", f"port={port}",
                                        f"hydra.run.dir={run_dir}"], monkeypatch)
    text = "".join(capfd.readouterr())
    assert code == 2 and f"port={port}: cannot listen there" in text
    assert not run_dir.exists()
