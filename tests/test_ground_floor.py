"""The ground floor (``personarl``): random streams by purpose, strict JSON, keyed hashing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from personarl import jsonio
from personarl.errors import ConfigError
from personarl.seeds import (PURPOSES, chunk_seeds, generator, name_key, seed_sequence,
                             stream_seed, stream_seed32)


def test_streams_of_different_purposes_never_coincide():
    # every purpose x seed x key: all distinct, including across seeds (seed + 1 of one
    # purpose is not another purpose's seed, as it was with "seed" and "seed + 1")
    seeds = {(p, s, k): stream_seed(s, p, k) for p in PURPOSES for s in range(20)
             for k in range(3)}
    assert len(set(seeds.values())) == len(seeds)
    first_draws = {key: generator(s, p, k).random() for key in seeds for p, s, k in [key]}
    assert len(set(first_draws.values())) == len(first_draws)
    # a stream never equals the raw seed's own stream (what `default_rng(seed)` would give)
    raw = {np.random.default_rng(s).random() for s in range(20)}
    assert not raw & set(first_draws.values())
    assert len(set(PURPOSES.values())) == len(PURPOSES)


def test_streams_are_reproducible_and_chunks_extend():
    assert stream_seed(7, "truth", 2) == stream_seed(7, "truth", 2)
    assert generator(7, "bootstrap").random(3).tolist() == \
        generator(7, "bootstrap").random(3).tolist()
    assert 0 <= stream_seed32(7, "training") < 2**32
    short, long = chunk_seeds(3, "truth", 5000, 4096), chunk_seeds(3, "truth", 9000, 4096)
    assert [b for _, b in short] == [4096, 904] and long[0] == short[0]
    assert chunk_seeds(3, "logged_users", 5000, 4096)[0][0] != short[0][0]
    assert name_key("greedy") == name_key("greedy") != name_key("random")
    for episodes, batch, message in ((0, 4, "num_episodes=0 "), (5, 0, "batch=0 "),
                                     (10**10, 4, "num_episodes=10000000000 ")):  # not built
        with pytest.raises(ConfigError, match=f"{message}is outside the valid range"):
            chunk_seeds(3, "truth", episodes, batch)


@pytest.mark.parametrize("purpose,seed,message", [
    ("truths", 0, "unknown random-stream purpose 'truths'; valid: .*'truth'"),
    ("truth", -1, r"seed=-1 must be an integer in \[0, 2\*\*63\)"),
    ("truth", 1.5, r"seed=1.5 must be an integer in \[0, 2\*\*63\)"),
    ("truth", 2**63, r"seed=9223372036854775808 must be an integer in \[0, 2\*\*63\)"),
])
def test_bad_stream_arguments_are_named(purpose, seed, message):
    with pytest.raises(ValueError, match=message):
        seed_sequence(seed, purpose)


def _strict(text: str):
    def refuse(token: str):
        raise AssertionError(f"bare {token}")
    return json.loads(text, parse_constant=refuse)


def test_strict_json_writes_non_finite_numbers_as_null():
    value = {"loss": float("nan"), "kl": np.float32("inf"), "n": np.int64(3),
             "curve": np.array([1.0, np.nan, -np.inf]), "nested": [{"x": -math.inf}],
             "pair": (1, 2), "ok": 0.5}
    back = _strict(jsonio.dumps(value, indent=2))
    assert back == {"loss": None, "kl": None, "n": 3, "curve": [1.0, None, None],
                    "nested": [{"x": None}], "pair": [1, 2], "ok": 0.5}
    assert _strict(jsonio.dumps({np.int64(1): np.float64("nan")})) == {"1": None}
    with pytest.raises(TypeError):
        jsonio.dumps({"x": object()})


def test_jsonl_reader_keeps_rows_after_a_corrupt_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"i": 1}\n{"i": 2\n[3]\n\n{"i": 4}\n{"i": 5, "x": NaN}\n'
                     b'{"i": "\xff"}\n' + b"[" * 50_000 + b"\n" + b'gar\rbage\n{"i": ')
    lines = jsonio.read_jsonl(path)
    assert [r["i"] for r in lines.rows] == [1, 4, 5]
    assert lines.numbers == [1, 5, 6]
    assert [n for n, _ in lines.skipped] == [2, 3, 7, 8, 9, 10]  # not UTF-8, deep, CR, torn
    assert lines.skipped[2][1] == b'{"i": "\xff"}'              # kept byte for byte
    assert lines.skipped[4][1] == b"gar\rbage"                   # one line, as it was
    assert "skipped 6 line(s)" in jsonio.skipped_message(path, lines.skipped, 3)
    assert jsonio.read_jsonl(tmp_path / "absent.jsonl").rows == []


def test_identifiers_are_keyed_hashes(monkeypatch):
    import hashlib
    import hmac

    from personarl.identifiers import PII_KEY_VARIABLE, Pseudonymiser

    key = "k" * 32
    pseudonymise = Pseudonymiser(key)
    want = hmac.new(key.encode(), "alice@example.com".encode(), hashlib.sha256).hexdigest()
    assert pseudonymise("alice@example.com") == "hmac-sha256:" + want       # RFC 2104
    assert pseudonymise("alice@example.com") != Pseudonymiser("j" * 32)("alice@example.com")
    assert pseudonymise(None) is None and "k" * 32 not in repr(pseudonymise)
    with pytest.raises(ConfigError, match="has 5 bytes; it needs at least 32"):
        Pseudonymiser("short")
    monkeypatch.delenv(PII_KEY_VARIABLE, raising=False)
    with pytest.raises(ConfigError, match="PERSONARL_PII_KEY is not set"):
        Pseudonymiser.from_env()
    monkeypatch.setenv(PII_KEY_VARIABLE, key)
    assert Pseudonymiser.from_env()("x") == pseudonymise("x")
    e = Pseudonymiser.ephemeral()
    assert e("x") == e("x") != Pseudonymiser.ephemeral()("x")


def test_state_files_round_trip_without_pickle_and_refuse_what_they_cannot_hold(tmp_path):
    from personarl.errors import DataError
    from personarl.statefile import read_state, write_state

    rng = np.random.default_rng(3)
    rng.random(5)
    state = {"rng": rng.bit_generator.state, "obs": np.arange(6, dtype=np.float32).reshape(2, 3),
             "ids": ["a", "b"], "t": 3, "nan": float("nan"), "r": np.float32(1.5),
             "nested": {"empty": {}, "flags": np.array([True, False]), "none": None}}
    back = read_state(write_state(tmp_path / "s.npz", state))
    assert back["obs"].dtype == np.float32 and np.array_equal(back["obs"], state["obs"])
    assert type(back["r"]) is np.float32 and back["r"] == 1.5
    assert np.isnan(back["nan"]) and back["ids"] == ["a", "b"] and back["t"] == 3
    assert back["nested"]["none"] is None and back["nested"]["empty"] == {}
    again = np.random.default_rng()
    again.bit_generator.state = back["rng"]
    assert again.random() == rng.random()                  # the stream continues
    with pytest.raises(TypeError, match=r"state\.bad: an object array"):
        write_state(tmp_path / "o.npz", {"bad": np.array([object()])})
    with pytest.raises(TypeError, match=r"state\.f: builtin_function_or_method cannot be stored"):
        write_state(tmp_path / "f.npz", {"f": len})
    with pytest.raises(TypeError, match="key 1 is not allowed"):
        write_state(tmp_path / "k.npz", {1: 2})
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "f.npz").exists()
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="junk.npz is not a readable state file"):
        read_state(tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", x=np.zeros(2))
    with pytest.raises(DataError, match="no tree.json entry"):
        read_state(tmp_path / "plain.npz")


def test_hostile_state_files_are_data_errors(tmp_path):
    import zipfile

    from personarl.errors import DataError
    from personarl.statefile import read_state

    def archive(name: str, **members: bytes):
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            for member, data in members.items():
                z.writestr(member, data)
        return tmp_path / name

    with pytest.raises(DataError, match="'tree.json' is not an array"):
        read_state(archive("raw.npz", **{"tree.json": b'{"a": 1}'}))
    for tree, msg in ((b'{"a": {"__ndarray__": ["x"]}}', "names an array \\['x'\\]"),
                      (b'{"a": {"__ndarray__": "a9"}}', "names an array 'a9'"),
                      (b'[1, 2]', "not a mapping")):
        np.savez(tmp_path / "t.npz", **{"tree.json": np.frombuffer(tree, np.uint8)})
        with pytest.raises(DataError, match=msg):
            read_state(tmp_path / "t.npz")
    (tmp_path / "zeros.npz").write_bytes(bytes(50))
    with pytest.raises(DataError, match="zeros.npz is not a readable state file"):
        read_state(tmp_path / "zeros.npz")


def test_every_error_the_project_defines_is_in_the_family():
    """Every ``*Error`` class in our packages subclasses ``PersonaRLError`` (what each entry
    point catches to exit 2 with one line), except the internal faults listed here."""
    import ast
    import importlib
    from pathlib import Path

    from personarl.errors import PersonaRLError

    internal = {"agents.serving.loader.ModelOutputError"}     # a bundle's model failing at serve time
    root = Path(__file__).resolve().parents[1]
    found = []
    for package in ("personarl", "synth", "rewards", "envs", "ope", "agents", "experiments"):
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            names = [n.name for n in tree.body if isinstance(n, ast.ClassDef)
                     and n.name.endswith("Error")]
            if names:
                module = ".".join(path.relative_to(root).with_suffix("").parts)
                found += [(f"{module}.{n}", getattr(importlib.import_module(module), n))
                          for n in names]
    assert len(found) >= 8
    outside = [name for name, cls in found
               if not issubclass(cls, PersonaRLError) and name not in internal]
    assert outside == []


def test_softmax_at_any_temperature_is_finite_and_the_boltzmann_law():
    from personarl.stats import softmax

    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    for tau in (1.0, 0.5, 4.0):
        e = np.exp(z / tau)
        assert np.allclose(softmax(z, tau), e / e.sum(axis=1, keepdims=True))
    with np.errstate(all="raise"):
        cold = softmax(np.array([[1.0, 2.0, 2.0], [1e300, -1e300, 0.0]]), 1e-310)
        assert np.array_equal(cold, [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])   # ties share
        assert np.allclose(softmax(z, 1e300), 1 / 3)


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.PCG64DXSM,
                                           np.random.Philox, np.random.MT19937,
                                           np.random.SFC64])
def test_compiled_standard_normals_are_numpys_numbers_and_state(bit_generator):
    from personarl.backend import COMPILED_NORMALS_MIN, numba_available, standard_normal
    if not numba_available():
        pytest.skip("the fast extra (Numba) is not installed")
    ours, numpys = (np.random.Generator(bit_generator(11)) for _ in range(2))
    # the compiled path (a 2-D draw, then into a given array) and the small-array path
    big = (COMPILED_NORMALS_MIN, 3)
    assert np.array_equal(standard_normal(ours, big, backend="numba"),
                          numpys.standard_normal(big))
    out = np.empty(5 * COMPILED_NORMALS_MIN)
    assert standard_normal(ours, out=out, backend="numba") is out
    assert np.array_equal(out, numpys.standard_normal(len(out)))
    assert np.array_equal(standard_normal(ours, 7, backend="numba"), numpys.standard_normal(7))
    # the generators are where NumPy's own draws would have left them
    assert repr(ours.bit_generator.state) == repr(numpys.bit_generator.state)
    assert ours.random() == numpys.random()


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_standard_normal_leaves_what_numpy_refuses_or_reshapes_to_numpy():
    from personarl.backend import COMPILED_NORMALS_MIN, numba_available, standard_normal
    if not numba_available():
        pytest.skip("the fast extra (Numba) is not installed")
    n = 2 * COMPILED_NORMALS_MIN
    read_only = np.empty(n)
    read_only.flags.writeable = False
    unaligned = np.empty(8 * n + 8, np.uint8)[1:1 + 8 * n].view(np.float64)
    cases = {"read-only": ({}, read_only), "unaligned": ({}, unaligned),
             "size disagrees with out": ({"size": 10}, np.empty(n)),
             "a matrix": ({}, np.asmatrix(np.empty((1, n)))),
             "size agrees with out": ({"size": (n,)}, np.empty(n))}
    ours, numpys = np.random.default_rng(2), np.random.default_rng(2)
    for case, (kwargs, out) in cases.items():
        results = []
        for draw in (lambda o: standard_normal(ours, out=o, backend="numba", **kwargs),
                     lambda o: numpys.standard_normal(out=o, **kwargs)):
            try:
                results.append(np.array(draw(out.copy() if out.flags.writeable else out)))
            except (ValueError, TypeError) as error:
                results.append(type(error))
        if isinstance(results[1], type):
            assert results[0] is results[1], case
        else:
            assert np.array_equal(results[0], results[1]), case
        assert repr(ours.bit_generator.state) == repr(numpys.bit_generator.state), case


def test_standard_normal_names_a_bad_backend():
    from personarl.backend import standard_normal
    with pytest.raises(ConfigError, match=r"backend='fast'; valid: \['auto', 'numpy', 'numba'\]"):
        standard_normal(np.random.default_rng(0), 3, backend="fast")


def test_compiled_standard_normals_hold_the_generators_lock_as_numpy_does():
    # two threads drawing from one generator each get a whole block of its sequence (the
    # compiled fill releases the GIL: without the lock the two would interleave draws)
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from personarl.backend import numba_available, standard_normal
    if not numba_available():
        pytest.skip("the fast extra (Numba) is not installed")
    n = 1_000_000
    ours, numpys = np.random.default_rng(5), np.random.default_rng(5)
    standard_normal(ours, 4096, backend="numba"), numpys.standard_normal(4096)  # compiled
    start = threading.Barrier(2)

    def draw(_: int) -> np.ndarray:
        start.wait()
        return standard_normal(ours, n, backend="numba")

    with ThreadPoolExecutor(2) as pool:
        for _ in range(4):                 # a race shows in some rounds, not all
            blocks = list(pool.map(draw, range(2)))
            first, second = numpys.standard_normal(n), numpys.standard_normal(n)
            assert ((np.array_equal(blocks[0], first) and np.array_equal(blocks[1], second))
                    or (np.array_equal(blocks[0], second)
                        and np.array_equal(blocks[1], first)))
    assert repr(ours.bit_generator.state) == repr(numpys.bit_generator.state)


_PROBE_KERNELS = '''
import numpy as np
from personarl.backend import kernel


@kernel
def _weighted(row):
    total = 0.0
    for j in range(row.shape[0]):
        total += row[j] * j
    return total


@kernel
def counted(a, out):
    for i in range(a.shape[0]):
        out[i] = _weighted(a[i])


@kernel(refcounts=False)
def uncounted(a, out):
    for i in range(a.shape[0]):
        out[i] = _weighted(a[i])


@kernel(refcounts=False)
def allocates(n):
    return np.zeros(n).sum()
'''


def test_a_kernel_without_refcounts_computes_the_same_and_calls_no_reference_counting(
        tmp_path, monkeypatch):
    # a fresh module, so the kernels compile here (cached code cannot be inspected)
    import importlib
    from personarl.backend import numba_available
    if not numba_available():
        pytest.skip("the fast extra (Numba) is not installed")
    (tmp_path / "probe_kernels.py").write_text(_PROBE_KERNELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = importlib.import_module("probe_kernels")
    a = np.arange(-3.0, 9.0).reshape(4, 3)
    counted, uncounted = np.zeros(4), np.zeros(4)
    probe.counted(a, counted)
    probe.uncounted(a, uncounted)
    assert np.array_equal(counted, a @ np.arange(3.0))
    assert np.array_equal(uncounted, counted)
    ir = {name: getattr(probe, name).inspect_llvm(getattr(probe, name).signatures[0])
          for name in ("counted", "uncounted")}
    assert "@NRT_" in ir["counted"]                # Numba's runtime: counts, array boxing
    assert "@NRT_" not in ir["uncounted"]          # none of it, row views included
    from numba.core.errors import TypingError
    with pytest.raises(TypingError, match=r"zeros\(int64\)"):
        probe.allocates(3)                         # and it may not allocate


def test_work_records_hold_named_float_arrays_and_refuse_bad_lengths():
    from personarl.backend import work_record
    work = work_record(traits=10, cdf=np.int64(3))
    assert work.shape == (1,)
    assert work[0]["traits"].shape == (10,) and work[0]["cdf"].shape == (3,)
    assert work.dtype["traits"].base == np.float64 and not work[0]["traits"].any()
    for bad in (0, -2, 2.5, True, "3"):
        with pytest.raises(ValueError, match=rf"work array 'cdf' has length {bad!r}; "
                                             r"valid: an int >= 1"):
            work_record(traits=10, cdf=bad)
