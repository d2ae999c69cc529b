"""The contract suite (``envs.contract``) over every registered id × action mode × check,
as Gymnasium's own tests parametrise over every spec; plus the state refusals."""

from __future__ import annotations

import copy
import dataclasses

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.contract import CHECKS, _equal
from envs.registration import backends
from envs.creator import create_env
from personarl.errors import ConfigError

# every backend an env can be stepped by (None: a core without a backend argument)
CASES = [(env_id, mode, backend, check) for env_id in envs.env_ids()
         for mode in envs.record(env_id).action_modes
         for backend in (backends(env_id) or (None,)) for check in CHECKS]


@pytest.mark.parametrize("env_id,mode,backend,check", CASES,
                         ids=[f"{i.split('/')[1]}-{m}-{b or 'numpy'}-{c}"
                              for i, m, b, c in CASES])
def test_every_registered_env_keeps_the_contract(env_id, mode, backend, check):
    kwargs = dict(envs.record(env_id).action_modes[mode])
    CHECKS[check](env_id, kwargs if backend is None else {**kwargs, "backend": backend})


def test_the_contract_catches_what_it_promises_to(monkeypatch):
    """Each kind of breach fails its check: an env that hands out a view of its state,
    one whose vector face ignores the seed, one whose expected reward is off."""
    from envs import contract
    from envs.batched import CoreEnv, CoreVectorEnv

    monkeypatch.setattr(CoreEnv, "_info", lambda self, stepped: {"obs": self._core.obs[0]})
    with pytest.raises(AssertionError, match="changed later"):
        contract.check_owned(envs.ADAPTATION_ID, {})
    monkeypatch.undo()
    real_reset = CoreVectorEnv.reset
    monkeypatch.setattr(CoreVectorEnv, "reset",
                        lambda self, seed=None, options=None: real_reset(self, seed=0))
    with pytest.raises(AssertionError, match="another seed reproduced"):
        contract.check_seeds(envs.ADAPTATION_ID, {})
    monkeypatch.undo()
    real_infos = CoreVectorEnv._infos

    def biased(self, restart):
        info = real_infos(self, restart)
        if "expected_reward" in info:
            info["expected_reward"] = info["expected_reward"] + 0.05
        return info

    monkeypatch.setattr(CoreVectorEnv, "_infos", biased)
    with pytest.raises(AssertionError, match="differs from the sum of expected rewards"):
        contract.check_expected_reward(envs.INTERVENTION_ID, {}, lanes=4000)


def test_a_state_from_another_env_is_refused_and_changes_nothing():
    routing = create_env(envs.ROUTING_ID, {"num_envs": 4})
    routing.reset(seed=0)
    other = create_env(envs.INTERVENTION_ID, {"num_envs": 4})
    other.reset(seed=0)
    before = copy.deepcopy(other.get_state())
    with pytest.raises(ConfigError, match="cannot restore an InterventionCore from this state"):
        other.set_state(routing.get_state())
    assert _equal(other.get_state(), before)
    with pytest.raises(ConfigError, match=r"cannot restore 8 lanes from a state whose "
                                          r"needs_reset is bool of shape \(4,\)"):
        create_env(envs.ROUTING_ID, {"num_envs": 8}).set_state(routing.get_state())
    with pytest.raises(ConfigError, match="valid: \\['MT19937'"):
        routing.set_state({**routing.get_state(), "np_random": {"bit_generator": "Pickle"}})
    with pytest.raises(ConfigError, match="not a PCG64 generator state"):
        routing.set_state({**routing.get_state(),
                           "np_random": {"bit_generator": "PCG64", "state": "x"}})
    with pytest.raises(ConfigError, match=r"expected a mapping with keys \['core', "):
        routing.set_state({"core": {}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        routing.set_state([1, 2])
    # another configuration of the same env, whether or not its lanes' shapes differ
    short = create_env(envs.ROUTING_ID, {"num_envs": 4, "horizon": 5})
    short.reset(seed=0)
    with pytest.raises(ConfigError, match=r"saved under another configuration of the env "
                                          r"\(dims, horizon differ\)"):
        routing.set_state(short.get_state())
    for env_id, kwargs in ((envs.ADAPTATION_ID, {"horizon": 8}),
                           (envs.ADAPTATION_ID, {"action_mode": "continuous"}),
                           (envs.INTERVENTION_ID, {"model": {"shock_rate": 0.2}}),
                           (envs.INTERVENTION_ID, {"population": {"consent_rate": 0.5}}),
                           (envs.ROUTING_ID, {"population": {"bot_fraction": 0.5}}),
                           (envs.ROUTING_ID, {"fusion_prior_strength": 50.0})):
        saved = create_env(env_id, {"num_envs": 4, **kwargs})
        saved.reset(seed=0)
        target = create_env(env_id, {"num_envs": 4})
        target.reset(seed=0)
        before = copy.deepcopy(target.get_state())
        with pytest.raises(ConfigError, match="saved under another configuration"):
            target.set_state(saved.get_state())
        assert _equal(target.get_state(), before)
    single = gym.make(envs.INTERVENTION_ID).unwrapped
    single.reset(seed=1)
    before = copy.deepcopy(single.get_state())
    broken = copy.deepcopy(before)
    broken["core"]["lanes"] = np.zeros(3, dtype=before["core"]["lanes"].dtype)
    with pytest.raises(ConfigError, match="'lanes' has shape \\(3,\\), this core's is "
                                          "\\(1,\\)"):
        single.set_state(broken)
    broken = copy.deepcopy(before)                           # a generator state that is not
    broken["core"]["exo_rng"] = {"bit_generator": "PCG64", "state": "x"}  # one
    with pytest.raises(ConfigError, match="'exo_rng': not a PCG64 generator state"):
        single.set_state(broken)
    assert _equal(single.get_state(), before)                # nothing changed


@pytest.mark.parametrize("env_id, field, value, valid", [
    (envs.ROUTING_ID, "task", 1000, "0..4"), (envs.ROUTING_ID, "t", -3, "0..20"),
    (envs.ADAPTATION_ID, "t", 500, "0..16"), (envs.INTERVENTION_ID, "table_id", 50, "0..0")])
def test_a_state_whose_indices_are_out_of_range_is_refused(env_id, field, value, valid):
    """A hand-edited or corrupted state: NumPy would fail on it, compiled code would read
    past an array."""
    env = create_env(env_id, {"num_envs": 4})
    env.reset(seed=0)
    env.step(np.zeros(4, dtype=np.int64))
    before = copy.deepcopy(env.get_state())
    broken = copy.deepcopy(before)
    broken["core"]["lanes"][field][1] = value
    with pytest.raises(ConfigError, match=f"'lanes' field '{field}' holds .*; valid: {valid}"):
        env.set_state(broken)
    assert _equal(env.get_state(), before)


def test_registration_refuses_what_it_cannot_use():
    rec = envs.record(envs.ROUTING_ID)
    assert envs.register(rec) is rec                         # the same record again: no-op
    assert rec.version == 0
    with pytest.raises(ConfigError, match="already registered with another record"):
        envs.register(dataclasses_replace(rec, reward_arg="other"))
    with pytest.raises(ConfigError, match=r"unknown env id 'personarl/Nope-v0'; valid: "
                                          r"\['personarl/AgentRouting-v0'"):
        envs.record("personarl/Nope-v0")
    with pytest.raises(ConfigError, match="env_config.id defaults to "
                                          "'personarl/AgentRouting-v0', not the id"):
        envs.register(dataclasses_replace(rec, id="personarl/Copy-v0"))
    config = dataclasses.make_dataclass("CopyConfig", [("id", str, "personarl/Copy-v0")])
    copy_ = dataclasses_replace(rec, id="personarl/Copy-v0", env_config=config)
    with pytest.raises(ConfigError, match="config_name 'routing' is already"):
        envs.register(copy_)
    with pytest.raises(ConfigError, match="not 'module:attribute'"):
        envs.register(dataclasses_replace(copy_, config_name="copy",
                                          build_core="envs.routing.build_core"))
    no_default = dataclasses.make_dataclass("NoDefault", [("id", str)])
    bad = dataclasses_replace(copy_, config_name="copy", entry_point=None, safety_keys="x",
                              action_modes=["discrete"], reward_config=rec.reward_config(),
                              env_config=no_default)
    with pytest.raises(ConfigError) as caught:
        envs.register(bad)
    for fragment in ("entry_point=None is not 'module:attribute'", "safety_keys='x'",
                     "action_modes=['discrete']", "reward_config=", "the class, not an "
                     "instance", "env_config.id has no default; give it 'personarl/Copy-v0'"):
        assert fragment in str(caught.value)
    with pytest.raises(ConfigError, match="id=5 is not a Gymnasium id"):
        envs.register(dataclasses_replace(rec, id=5))
    with pytest.raises(ConfigError, match="config_name=7 is not a config option name"):
        envs.register(dataclasses_replace(copy_, config_name=7))
    with pytest.raises(ConfigError, match="takes an EnvRecord; got dict"):
        envs.register({"id": "personarl/Copy-v0"})
    with pytest.raises(ConfigError, match=r"modes='discrete'; valid: a list of \['discrete'\]"):
        __import__("envs.contract").contract.check_contract(envs.ROUTING_ID, modes="discrete")
    assert "personarl/Copy-v0" not in envs.env_ids()


def dataclasses_replace(rec, **changes):
    return dataclasses.replace(rec, **changes)
