"""A server's decision logs as episodes (``ope.served``): what is rebuilt, what is counted
as not rebuilt, what refuses the log, and the propensities of a sticky traffic split."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from agents.serving.decision_log import DecisionLog, read_log  # noqa: E402
from agents.serving.exploration import Exploration  # noqa: E402
from agents.serving.loader import load_policy  # noqa: E402
from agents.serving.server import ServerSettings, create_app  # noqa: E402
from agents.serving.traffic import Arm, Decider  # noqa: E402
from ope.data import DataError  # noqa: E402
from ope.served import from_decision_logs  # noqa: E402

EPS = Exploration("epsilon", epsilon=0.3)


def serve(decider, root):
    return TestClient(create_app(decider, ServerSettings(log_dir=root)),
                      raise_server_exceptions=False)


def obs(rng):
    return rng.random(34).round(3).tolist()


def test_episodes_are_rebuilt_from_episode_id_and_step_and_the_rest_is_counted(
        tiny_bundles, tmp_path):
    decider = Decider(Arm("primary", "v1", load_policy(tiny_bundles["discrete"])),
                      exploration=EPS, seed=0)
    rng = np.random.default_rng(0)
    # (episode, step, feedback reward or None, done)
    plan = [("whole", 0, 0.1, False), ("whole", 1, 0.2, False), ("whole", 2, 0.3, True),
            ("unfinished", 0, 1.0, False), ("unfinished", 1, 1.0, False),
            ("lost", 0, 1.0, False), ("lost", 1, None, False),
            ("reordered", 1, 0.5, True), ("reordered", 0, 0.4, False),
            ("gap", 0, 1.0, False), ("gap", 2, 1.0, True),
            ("early", 0, 1.0, True), ("early", 1, 1.0, True),
            ("twice", 0, 1.0, False), ("twice", 1, 1.0, True),      # one id, two episodes
            ("twice", 0, 1.0, False), ("twice", 1, 1.0, True),
            (None, 0, 1.0, True)]
    served = {}
    with serve(decider, tmp_path / "logs") as c:
        for episode, step, reward, done in plan:
            body = {"observation": obs(rng), "user_id": f"u-{episode}", "step": step}
            if episode is not None:
                body["episode_id"] = episode
            d = c.post("/v1/act", json=body).json()
            served.setdefault((episode, step), d)
            if reward is not None:
                c.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                             "reward": reward, "done": done})
    data = from_decision_logs(tmp_path / "logs")
    assert data.n_episodes == 2 and data.n == 5
    assert data.meta["not_reconstructed"] == {"no_episode_id": 1, "not_finished": 1,
                                              "no_feedback": 1, "steps": 1, "done_early": 1,
                                              "reused_episode_id": 1}
    assert data.meta["env_config"] == {} and data.meta["horizon"] == 20
    assert data.meta["exploration"] == "epsilon" and data.meta["epsilon"] == 0.3
    assert data.step.tolist() == [0, 1, 2, 0, 1]
    assert data.reward.tolist() == [0.1, 0.2, 0.3, 0.4, 0.5]         # reordered by step
    assert data.done.tolist() == [False, False, True, False, True]
    assert list(data.row_labels[3:]) == [served[("reordered", s)]["decision_id"]
                                         for s in (0, 1)]
    assert np.allclose(data.propensity, [served[k]["propensity"] for k in [
        ("whole", 0), ("whole", 1), ("whole", 2), ("reordered", 0), ("reordered", 1)]])


def test_a_step_at_the_horizon_or_no_episode_ids_refuse_the_log(tiny_bundles, tmp_path):
    decider = Decider(Arm("primary", "v1", load_policy(tiny_bundles["discrete"])),
                      exploration=EPS, seed=0)
    rng = np.random.default_rng(0)
    with serve(decider, tmp_path / "past") as c:
        # the server refuses a step at or past the horizon of its bundle's env
        r = c.post("/v1/act", json={"observation": obs(rng), "episode_id": "e", "step": 20})
        assert r.status_code == 422 and "less than 20" in r.text
        d = c.post("/v1/act", json={"observation": obs(rng), "episode_id": "e",
                                    "step": 19}).json()
    # a log that holds one anyway (another server's, or edited) is not from that env
    log = DecisionLog(tmp_path / "past", "decisions")
    log.append([dict(read_log(tmp_path / "past", "decisions").to_pylist()[0],
                     decision_id="late", step=20)])
    log.close()
    with pytest.raises(DataError, match=r"decision 'late' has step 20, but "
                       r"personarl/AgentRouting-v0 .* within 20 decisions"):
        from_decision_logs(tmp_path / "past")
    assert d["decision_id"]
    with serve(decider, tmp_path / "anonymous") as c:
        d = c.post("/v1/act", json={"observation": obs(rng)}).json()
        c.post("/v1/feedback", json={"decision_id": d["decision_id"], "reward": 1.0,
                                     "done": True})
    with pytest.raises(DataError, match="no decision has an episode_id.*up to 20 decisions"):
        from_decision_logs(tmp_path / "anonymous")
    (tmp_path / "anonymous" / "servings.jsonl").unlink()
    with pytest.raises(DataError, match="has no servings.jsonl"):
        from_decision_logs(tmp_path / "anonymous")
    with pytest.raises(DataError, match="holds no decisions/ folder"):
        from_decision_logs(tmp_path)


def _canary(tiny_bundles, tmp_path, candidate_config):
    from envs import ROUTING_ID
    from tests.conftest import onnx_bundle

    other = onnx_bundle(tmp_path / "other", ROUTING_ID, candidate_config, seed=7)
    primary = Arm("primary", "v1", load_policy(tiny_bundles["discrete"]))
    candidate = Arm("candidate", "v2", load_policy(other))
    decider = Decider(primary, candidate, mode="canary", share=0.4, exploration=EPS, seed=0)
    rng = np.random.default_rng(1)
    xs = {}
    with serve(decider, tmp_path / "logs") as c:
        for user in range(40):
            for step in range(3):
                x = obs(rng)
                d = c.post("/v1/act", json={"observation": x, "user_id": f"user{user}",
                                            "episode_id": f"e{user}", "step": step}).json()
                xs[d["decision_id"]] = (x, d["action"], d["arm"])
                c.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                             "reward": 1.0, "done": step == 2})
    return primary, candidate, xs


def test_a_sticky_split_is_one_behaviour_whose_episode_probability_is_the_arm_mixture(
        tiny_bundles, tmp_path):
    """The per-decision propensities multiply to Σ_arm share · Π_t b_arm(a_t | x_t) over
    each episode — the probability of the episode's actions when a user keeps an arm —
    not to the product of the logged per-decision mixtures."""
    primary, candidate, xs = _canary(tiny_bundles, tmp_path, {})
    data = from_decision_logs(tmp_path / "logs")
    assert data.n_episodes == 40 and data.action_probs is None
    b = {arm.name: arm.policy for arm in (primary, candidate)}
    share = {"primary": 0.6, "candidate": 0.4}
    arms_used = set()
    for e in range(data.n_episodes):
        rows = np.flatnonzero(data.episode == e)
        labels = data.row_labels[rows]
        arms_used |= {xs[label][2] for label in labels}
        truth = sum(share[name] * np.prod([
            EPS.probs(b[name].action_probs(np.array(xs[label][0], np.float32)[None]))[
                0, xs[label][1]] for label in labels]) for name in share)
        assert np.prod(data.propensity[rows]) == pytest.approx(truth, rel=1e-5)
    assert arms_used == {"primary", "candidate"}
    only = from_decision_logs(tmp_path / "logs", arm="candidate")
    assert only.meta["not_reconstructed"]["other_arm"] == 40 - only.n_episodes
    assert {xs[label][2] for label in only.row_labels} == {"candidate"}
    for label, p in zip(only.row_labels, only.propensity):
        x, a, _ = xs[label]
        assert p == pytest.approx(EPS.probs(candidate.policy.action_probs(
            np.array(x, np.float32)[None]))[0, a], rel=1e-5)
    with pytest.raises(DataError, match=r"arm='shadow' served no decision.*\['candidate', "
                                        r"'primary'\]"):
        from_decision_logs(tmp_path / "logs", arm="shadow")


def test_arms_built_for_different_env_configs_are_refused(tiny_bundles, tmp_path):
    _canary(tiny_bundles, tmp_path, {"horizon": 5})
    with pytest.raises(DataError, match="arms were built for different envs or env configs"
                                        r".*'horizon': 5.*arm=<name>"):
        from_decision_logs(tmp_path / "logs")
    assert from_decision_logs(tmp_path / "logs", arm="primary").meta["env_config"] == {}


def test_a_log_dir_restarted_with_another_envs_bundle_is_refused_saying_so(tiny_bundles,
                                                                          tmp_path):
    from envs import ROUTING_ID
    from tests.conftest import onnx_bundle

    rng = np.random.default_rng(0)
    for bundle in (tiny_bundles["discrete"], onnx_bundle(tmp_path / "h5", ROUTING_ID,
                                                         {"horizon": 5})):
        decider = Decider(Arm("primary", "v1", load_policy(bundle)), exploration=EPS, seed=0)
        with serve(decider, tmp_path / "logs") as c:
            d = c.post("/v1/act", json={"observation": obs(rng), "episode_id": str(bundle),
                                        "step": 0}).json()
            c.post("/v1/feedback", json={"decision_id": d["decision_id"], "reward": 1.0,
                                         "done": True})
    with pytest.raises(DataError, match="server was started on these logs with bundles built "
                                        "for different envs.*its own log_dir"):
        from_decision_logs(tmp_path / "logs")


def test_evaluate_reads_a_file_or_a_log_directory_and_names_what_it_cannot(tmp_path):
    from omegaconf import OmegaConf

    from experiments.evaluate import _read_data
    from personarl.errors import ConfigError

    (tmp_path / "log.parquet").write_bytes(b"")
    for data, arm, message in [
            (tmp_path / "nowhere", None, "does not exist; give a Parquet file from python -m "
                                         "experiments.collect, or a server's decision_logs"),
            (tmp_path / "log.parquet", "candidate", "arm='candidate' selects an arm of a "
                                                    "server's decision logs"),
            (tmp_path, 3, "arm=3 must be an arm's name")]:
        with pytest.raises(ConfigError, match=message):
            _read_data(OmegaConf.create({"data": str(data), "arm": arm, "registry": None}))
    with pytest.raises(DataError, match="holds no decisions/ folder"):
        _read_data(OmegaConf.create({"data": str(tmp_path), "arm": None, "registry": None}))


def test_serve_refuses_arms_of_different_envs_and_restarts_draw_afresh(tiny_bundles, tmp_path):
    """A candidate built for another env config is refused before serving (however the
    configs are spelled: {} and {horizon: 20} are one env), and each start on a log
    directory explores with its own stream."""
    from omegaconf import OmegaConf

    from envs import ROUTING_ID
    from experiments.schema import ServeSchema
    from experiments.serve import ServeConfigError, build_decider
    from tests.conftest import onnx_bundle

    short = onnx_bundle(tmp_path / "h5", ROUTING_ID, {"horizon": 5})
    spelled = onnx_bundle(tmp_path / "h20", ROUTING_ID, {"horizon": 20}, seed=2)
    cfg = OmegaConf.structured(ServeSchema(bundle=str(tiny_bundles["discrete"])))
    canary = OmegaConf.merge(cfg, {"traffic": {"mode": "canary", "candidate": str(short)}})
    with pytest.raises(ServeConfigError, match=r"with env config \{'horizon': 5\}.*"
                                               r"dims, horizon differ"):
        build_decider(canary)
    same = OmegaConf.merge(canary, {"traffic": {"candidate": str(spelled)}})
    assert build_decider(same).candidate is not None
    x = np.random.default_rng(0).random((200, 34), dtype=np.float32)
    eps = OmegaConf.merge(cfg, {"exploration": {"mode": "epsilon", "epsilon": 0.5}})
    first, again, restart = (build_decider(eps, start=k).decide(x, [None] * 200).action
                             for k in (0, 0, 1))
    assert np.array_equal(first, again) and not np.array_equal(first, restart)


def test_the_client_names_what_is_wrong_with_a_server_or_a_value():
    import httpx

    from agents.serving.client import PolicyClient
    from personarl.errors import ConfigError

    with pytest.raises(ConfigError, match="printable ASCII"):
        PolicyClient("http://x", api_key="bad key é")
    client = PolicyClient("http://x")
    for answer, message in ((httpx.Response(200, text="<html>"), "not JSON"),
                            (httpx.Response(200, json={"ok": 1}), "without bundles.primary"),
                            (httpx.Response(503, text="not ready"), "answered 503: not ready")):
        client._http = httpx.Client(base_url="http://x",
                                    transport=httpx.MockTransport(lambda r, a=answer: a))
        with pytest.raises(ConfigError, match=message):
            client.policy()
    with pytest.raises(ConfigError, match="must be finite"):
        client.feedback("d1", float("nan"))


def test_a_bundle_built_for_another_env_config_is_evaluated_with_a_warning(tiny_bundles):
    from experiments.evaluate import _trained_elsewhere

    policy = load_policy(tiny_bundles["discrete"])                  # built with {}
    same = _trained_elsewhere({"p": (policy, None)}, "personarl/AgentRouting-v0",
                              {"horizon": 20})
    other = _trained_elsewhere({"p": (policy, None)}, "personarl/AgentRouting-v0",
                               {"horizon": 5})
    assert same == {} and "dims, horizon differ" in other["p"][0]


def test_a_start_after_a_torn_servings_line_is_still_read(tmp_path):
    from agents.serving.decision_log import (SERVINGS, DataWarning, read_servings,
                                             record_serving)

    record_serving(tmp_path, {"time": 1.0, "arms": []})
    with open(tmp_path / SERVINGS, "a") as f:
        f.write('{"time": 2.0, "ar')                      # a crash mid-line
    record_serving(tmp_path, {"time": 3.0, "arms": []})
    with pytest.warns(DataWarning, match=r"skipped 1 line\(s\).*line 2"):
        assert [e["time"] for e in read_servings(tmp_path)] == [1.0, 3.0]


def test_a_registry_version_is_evaluated_from_every_log_dir_it_was_served_into(
        tiny_bundles, tmp_path, monkeypatch):
    """Servers started from a registry record their log directories in it; evaluate
    registry=… model=… version=N joins every whole episode version N served there, with
    its own propensities (the full distribution only where it served alone)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from agents.serving.registry import Registry, RegistryError
    from envs import ROUTING_ID
    from experiments.evaluate import _read_data
    from experiments.schema import EvaluateSchema
    from experiments.serve import open_server
    from personarl.errors import ConfigError
    from tests.conftest import onnx_bundle
    from tests.readme import ROOT, overrides

    monkeypatch.setenv("PERSONARL_PII_KEY", "k" * 64)
    registry = Registry(tmp_path / "registry")
    registry.register(tiny_bundles["discrete"], "routing")
    registry.promote("routing", 1)
    registry.register(onnx_bundle(tmp_path / "b2", ROUTING_ID, {}, seed=1), "routing")
    registry.set_stage("routing", 2, "staging")
    registry.register(onnx_bundle(tmp_path / "b3", ROUTING_ID, {}, seed=2), "routing")
    rng = np.random.default_rng(0)
    logged = {}
    fill = {"outputs/registry": registry.root}

    def start(name: str, args: list[str], users: int) -> None:
        with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("serve", overrides=args + [
                "port=0", f"log_dir={tmp_path / name}", "exploration.mode=epsilon",
                "exploration.epsilon=0.3"])
        _, _, app = open_server(cfg, tmp_path)
        with TestClient(app) as c:
            for user in range(users):
                for step in range(3):
                    d = c.post("/v1/act", json={"observation": obs(rng), "step": step,
                                                "user_id": f"{name}{user}",
                                                "episode_id": f"{name}{user}"}).json()
                    logged[d["decision_id"]] = d
                    c.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                                 "reward": 1.0, "done": step == 2})

    # the README's two servers from the registry: production alone, then a 10% canary
    start("single", overrides("model=routing$", fill), 6)
    start("canary", overrides("traffic.mode=canary traffic.candidate=staging", fill), 60)
    assert registry.log_dirs("routing", 1) == [tmp_path / "single", tmp_path / "canary"]
    assert registry.log_dirs("routing", 2) == [tmp_path / "canary"]

    def read(**keys):
        return _read_data(OmegaConf.merge(OmegaConf.structured(EvaluateSchema), {
            "registry": str(registry.root), "model": "routing", **keys}))

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):   # the README's
        v2 = _read_data(compose("evaluate", overrides("model=routing version=2", fill)))
    v1 = read(version=1)
    by_arm = {v: sum(d["version"] == f"routing:v{v}" for d in logged.values()) // 3
              for v in (1, 2)}
    assert (v1.n_episodes, v2.n_episodes) == (by_arm[1], by_arm[2]) and by_arm[2] > 0
    assert v1.meta["log_dirs"] == [str(tmp_path / "single"), str(tmp_path / "canary")]
    assert "routing v1 in registry" in v1.meta["registry"]
    own = {row["decision_id"]: row["arm_propensity"] for name in ("single", "canary")
           for row in read_log(tmp_path / name, "decisions").to_pylist()}
    for data in (v1, v2):          # each decision's own arm's probability, not the mixture
        assert np.allclose(data.propensity, [own[i] for i in data.row_labels])
        assert data.action_probs is None            # v1 shared the traffic with v2 in one
    assert v2.meta["not_reconstructed"] == {"other_arm": by_arm[1] - 6}
    alone = _read_data(OmegaConf.merge(OmegaConf.structured(EvaluateSchema),
                                       {"data": str(tmp_path / "single")}))
    assert alone.action_probs is not None and alone.n_episodes == 6
    # mistakes name what is wrong
    with pytest.raises(ConfigError, match="routing v3 has no decision logs.*version=3"):
        read(version=3)
    with pytest.raises(RegistryError, match="has no version 4"):
        read(version=4)
    with pytest.raises(RegistryError, match="no registry at .*nowhere"):
        read(version=1, registry=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="needs version=<number> or stage="):
        read()
    with pytest.raises(ConfigError, match="give exactly one of data="):
        read(version=1, data=str(tmp_path / "single"))
    import shutil
    shutil.rmtree(tmp_path / "single")             # a recorded directory gone: the others
    assert read(version=1).n_episodes == by_arm[1] - 6
