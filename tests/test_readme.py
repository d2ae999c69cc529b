"""Every command line of the README is run as written by some test, or says why not; every
``python -m experiments.<app>`` line composes and passes its app's checks."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from hydra import compose, initialize_config_dir

from tests.readme import ROOT, lines, matches, overrides

#: README lines no test runs, and why (a fragment, as ``tests.readme.line`` takes it)
NOT_RUN = {
    "make run": "the main job, ≈ 4½ min on 2 cores: its time and results are measured in "
                "BENCHMARKS.md; its parts (train, export, evaluation, report) run here at "
                "smoke budgets through the same code (experiments.job)",
    "make test": "this suite",
    "export PERSONARL_PII_KEY": "shell set-up: the tests that serve set the variable",
    "export RAY_AUTH_MODE": "shell set-up: tests/test_sweep.py starts a token-authenticated "
                            "head the same way",
    "ray start --head": "tests/test_sweep.py starts a head on a free port and a temp dir of "
                        "its own (2 CPUs: this machine's)",
    "ray start --address": "a second machine",
    "ray.address=<head-ip>:6379 sweep.max_concurrent=8": "tests/test_sweep.py runs a sweep "
                                                        "on its own head (2 CPUs)",
    "train ray.address=": "as the sweep on a cluster: tests/test_sweep.py",
    "curl -s localhost:8000/v1/policy": "the same request through httpx: tests/test_server.py",
    "curl -s localhost:8000/v1/act": "the same request through httpx: tests/test_server.py",
    "kill %1": "the served journey stops its server with SIGTERM, as kill does",
    "env=intervention behaviour=greedy episodes=1000": "the InterventionTiming OPE journey "
        "(≈ 17 s): python -m experiments.bench ope --parts journeys runs it and BENCHMARKS.md "
        "records its time",
    "train persona.generator=": "PPO on a generator's users (minutes): tests/"
                                "test_generators.py builds the envs from persona.generator",
    "experiments.preferences$": "the defaults (210,000 pairs, ≈ 40 s): tests/"
        "test_preferences.py trains on 110,000 pairs in-process and holds the accuracy to "
        "the ceiling; the lines with options run at small budgets",
    "ci.refit=true": "refits FQE in 200 resamples per policy (minutes): its coverage is "
                     "measured by python -m experiments.bench ope",
}
#: how a test names the README line it runs (tests.readme)
_CALL = re.compile(r"""\b(?:command|overrides|lines_with)\(\s*(?:#[^\n]*\n\s*)?["']([^"']+)["']""")


def _fragments() -> dict[str, list[str]]:
    """Fragment -> the test files that run the README lines it matches."""
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for fragment in _CALL.findall(path.read_text()):
            out.setdefault(fragment, []).append(path.name)
    return out


def test_every_readme_command_is_run_by_a_test_or_says_why_not():
    runs = _fragments()
    missing, both = [], []
    for text in lines():
        run = [f for f in runs if matches(f, text)]
        skipped = [f for f in NOT_RUN if matches(f, text)]
        if not run and not skipped:
            missing.append(text)
        if run and skipped:
            both.append(text)
    assert missing == [], ("README command lines no test runs (run them through "
                           "tests.readme.command, or add them to NOT_RUN with the reason)",
                           missing)
    assert both == [], ("lines both run and excused", both)
    stale = [f for f in NOT_RUN if not any(matches(f, x) for x in lines())]
    assert stale == [], ("NOT_RUN names lines the README no longer has", stale)


def _composable(text: str) -> tuple[str, list[str]]:
    """``(config name, overrides)`` of a ``python -m experiments.<app>`` line with its
    placeholders given stand-in values: a grid's first value, no ``hydra.*`` key."""
    words = shlex.split(re.sub(r"<[^>]*>", "x", text.replace("<head-ip>", "127.0.0.1")))
    app = words[words.index("-m") + 1].removeprefix("experiments.")
    args = [w for w in words[words.index("-m") + 2:] if w != "-m"
            and not w.startswith("hydra.")]
    if app == "report" and args and "=" not in args[0]:
        args[0] = f"dir={args[0]}"                       # its positional directory
    grid = "-m" in words[words.index("-m") + 2:]
    out = []
    for arg in args:
        if grid and "," in arg and "[" not in arg:
            arg = arg.split(",")[0]
        out.append(arg)
    return app, out


@pytest.mark.parametrize("text", [x for x in lines() if " -m experiments." in x])
def test_every_experiments_line_composes_and_passes_its_checks(text):
    """Keys, types and options as the schemas declare; a training or sweep line also
    passes every range check that runs before Ray starts (``wiring.validate``; the sweep's
    space). What a line names on disk is the user's: only its syntax is checked here."""
    from experiments.schema import register_configs
    from experiments.sweep import check_space
    from experiments.wiring import validate

    register_configs()
    app, args = _composable(text)
    # the config the app's own entry point composes
    name = re.search(r'config_name="(\w+)"', (ROOT / "experiments" / f"{app}.py").read_text())
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(name.group(1), overrides=args)
    # a generator or reward-model file is what an earlier run wrote: validating would load
    # the stand-in
    written = cfg.persona.generator is not None or "model" in cfg.reward if app in (
        "train", "sweep") else False
    if app in ("train", "sweep") and not written:
        validate(cfg)
    if app == "sweep":
        check_space(cfg)


def test_the_readme_baselines_run_as_written(tmp_path):
    """The README's baselines without training, their budgets shrunk to seconds."""
    from experiments.job import train

    shrink = ["budget=2048", "logger=none", "progress=false", "eval.episodes=64",
              "eval.baseline_warmup_steps=50", "eval.baseline_warmup_envs=64"]
    for agent, args in (
            ("persona_router", overrides("agent=persona_router budget=200000", extra=shrink)),
            ("greedy", overrides("agent=greedy budget=200000 persona=custom_example",
                                 extra=shrink))):
        with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("train", overrides=args)
        result = train(cfg, tmp_path / agent)
        assert all(p["trained"] == agent for p in result["populations"].values())
        assert (tmp_path / agent / "report.html").stat().st_size > 0
        summary = json.loads((tmp_path / agent / "summary.json").read_text())
        assert summary["meta"]["agent"] == agent
