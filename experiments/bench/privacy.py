"""The privacy primitives against independent implementations, and their cost (issue 21).

* **Accountants.** For a grid of DP-SGD settings (sampling rate ``q``, noise multiplier
  ``σ``, steps ``T``, δ = 1e-5) the ledger's ε (dp-accounting's PLD, the figure it
  enforces; and its RDP) beside Opacus's own PRV and RDP accountants, as ratios, with the
  time one ledger projection takes.
* **DP-SGD overhead.** A small Opacus model (16-32-1 MLP, batches of 100 from 10,000 rows)
  trained for ``steps`` steps with its own accountant, then with ``LedgerSteps`` (the
  ledger's step hook, reserving blocks of 32), three times alternated after a warm-up:
  median seconds per step and the ratio.
* **Erasure.** A run directory with a ``rows``-row logged dataset (one user in 10 rows of
  each 1,000: 10 rows per user), per-user features and a served decision log with its
  feedback: ``scan`` and ``erase`` of one user, in seconds, and the rows per second read.
* **k-anonymity.** ``k_anonymise`` (k = 5) of 1,000 simulated users (where the naive
  release violates k) and of ``users`` over age band, city and group: seconds, the levels
  chosen and the loss.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

GRID = ((0.01, 1.1, 1000), (0.001, 0.8, 10_000), (0.05, 2.0, 1000), (0.01, 1.1, 100),
        (0.004, 1.0, 5000))
DELTA = 1e-5


def accountants(settings: int = len(GRID)) -> list[dict[str, Any]]:
    """The ledger's figures beside Opacus's for the first ``settings`` of ``GRID``."""
    from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent
    from opacus.accountants import PRVAccountant, RDPAccountant

    from synth.privacy.ledger import PrivacyLedger

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (q, sigma, steps) in enumerate(GRID[:settings]):
            ledger = PrivacyLedger.open(Path(tmp) / f"d{i}.parquet", epsilon=100.0,
                                        delta=DELTA)
            event = SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)),
                                        steps)
            start = time.perf_counter()
            with ledger.spend(event, "dp_sgd", "grid"):
                pass
            spend_s = time.perf_counter() - start
            report = ledger.report()
            opacus = {}
            for name, accountant in (("prv", PRVAccountant()), ("rdp", RDPAccountant())):
                accountant.history = [(sigma, q, steps)]
                opacus[name] = float(accountant.get_epsilon(DELTA))
            rows.append(dict(q=q, sigma=sigma, steps=steps, pld=report["epsilon"],
                             rdp=report["epsilon_rdp"], opacus_prv=opacus["prv"],
                             opacus_rdp=opacus["rdp"],
                             pld_over_prv=report["epsilon"] / opacus["prv"],
                             rdp_over_opacus_rdp=report["epsilon_rdp"] / opacus["rdp"],
                             spend_s=spend_s))
    return rows


def dp_sgd(steps: int) -> dict[str, Any]:
    """Seconds per step of a small Opacus model: its own accountant vs ``LedgerSteps``."""
    import torch
    from opacus import PrivacyEngine

    from synth.privacy.dpsgd import LedgerSteps
    from synth.privacy.ledger import PrivacyLedger

    def make() -> tuple[Any, Any, Any]:
        torch.manual_seed(0)
        data = torch.utils.data.TensorDataset(torch.randn(10_000, 16), torch.randn(10_000, 1))
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                    torch.nn.Linear(32, 1))
        return PrivacyEngine().make_private(
            module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
            data_loader=torch.utils.data.DataLoader(data, batch_size=100),
            noise_multiplier=1.1, max_grad_norm=1.0)

    def train(model: Any, optimizer: Any, loader: Any, n: int) -> float:
        done, start = 0, time.perf_counter()
        while done < n:
            for x, y in loader:
                optimizer.zero_grad()
                ((model(x) - y) ** 2).mean().backward()
                optimizer.step()
                done += 1
                if done == n:
                    break
        return (time.perf_counter() - start) / n

    train(*make(), 20)                                  # warm-up: torch's first calls
    opacus_s, ledger_s, epsilon = [], [], 0.0
    for _ in range(3):                                  # alternated; medians kept
        opacus_s.append(train(*make(), steps))
        with tempfile.TemporaryDirectory() as tmp:
            model, optimizer, loader = make()
            ledger = PrivacyLedger.open(Path(tmp) / "d.parquet", epsilon=10.0, delta=DELTA)
            run = LedgerSteps(ledger, optimizer, loader.sample_rate, "bench")
            ledger_s.append(train(model, optimizer, loader, steps))
            run.close()
            epsilon = ledger.report()["epsilon"]
    opacus, ours = float(np.median(opacus_s)), float(np.median(ledger_s))
    return dict(steps=steps, opacus_s_per_step=opacus, ledger_s_per_step=ours,
                overhead=ours / opacus, epsilon=epsilon)


def erasure(rows: int) -> dict[str, Any]:
    """Scan and erase one user from a run directory of ``rows`` logged rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from agents.serving.decision_log import DecisionLog
    from personarl.identifiers import Pseudonymiser
    from synth.privacy.erasure import erase, scan

    pseudonymise = Pseudonymiser("bench-key-" + "0" * 32)
    users = max(rows // 10, 1)
    ids = np.array([pseudonymise(f"u{i}") for i in range(users)], dtype=object)
    user_of_row = np.repeat(np.arange(users), 10)[:rows]
    root = Path(tempfile.mkdtemp())
    try:
        obs = np.random.default_rng(0).random((rows, 8)).astype(np.float32)
        pq.write_table(pa.table({
            "episode": user_of_row, "observation": pa.FixedSizeListArray.from_arrays(
                pa.array(obs.reshape(-1)), 8),
            "reward": np.ones(rows), "user_id": ids[user_of_row],
            "age_band": np.full(rows, "25-34"), "consent": np.ones(rows, bool)}),
            root / "logged.parquet")
        pq.write_table(pa.table({"user_id": ids, "x": np.arange(users, dtype=float)}),
                       root / "features.parquet")
        served = min(rows, 100_000)
        for kind, make_row in (
                ("decisions", lambda i: dict(decision_id=f"d{i}", user_id=ids[i % users],
                                             action=0, step=0)),
                ("feedback", lambda i: dict(decision_id=f"d{i}", reward=1.0, done=True))):
            log = DecisionLog(root / "decision_logs", kind, segment_rows=20_000)
            log.append(make_row(i) for i in range(served))
            log.close()
        target = ids[users // 2]
        start = time.perf_counter()
        found = scan(root, target)
        scan_s = time.perf_counter() - start
        start = time.perf_counter()
        done = erase(root, target)
        erase_s = time.perf_counter() - start
        read = rows + users + 2 * served
        return dict(rows=rows, users=users, served=served, found=found.total,
                    removed=sum(done.rewritten.values()), scan_s=scan_s, erase_s=erase_s,
                    rows_read_per_s=read / scan_s)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def anonymity(users: int) -> dict[str, Any]:
    """``k_anonymise`` (k = 5) of ``users`` simulated users."""
    import pandas as pd

    from synth.demographics import AGE_BANDS, CITIES, hierarchies
    from synth.population import PopulationSampler
    from synth.privacy.anonymity import k_anonymise, smallest_class

    sampler = PopulationSampler()
    pop = sampler.sample(users, np.random.default_rng(0))
    table = pd.DataFrame(dict(age_band=np.array(AGE_BANDS)[pop.age_band],
                              city=np.array(CITIES)[pop.city],
                              group=np.array(sampler.group_names)[pop.group],
                              consent=np.ones(users, bool)))
    start = time.perf_counter()
    result = k_anonymise(table, 5, hierarchies(sampler.group_names))
    seconds = time.perf_counter() - start
    return dict(users=users, seconds=seconds,
                naive_smallest=smallest_class(table, ["age_band", "city", "group"]),
                levels=result.level_names, suppressed=result.suppressed,
                smallest=result.smallest_class, precision_loss=result.loss["precision"],
                c_avg=result.loss["c_avg"])


def run(steps: int = 1000, rows: int = 1_000_000, users: int = 100_000,
        settings: int = len(GRID)) -> dict[str, Any]:
    """Every part, printed and returned."""
    import logging
    import warnings

    # Opacus's notice on every make_private without secure_mode; torch's on a model whose
    # inputs need no gradient; dp-accounting's on RDP orders it leaves out
    warnings.filterwarnings("ignore", "Secure RNG turned off")
    warnings.filterwarnings("ignore", "Full backward hook is firing")
    logging.getLogger("absl").setLevel(logging.ERROR)
    out: dict[str, Any] = {"accountants": accountants(settings)}
    print("DP-SGD ε at δ = 1e-5: the ledger (PLD, RDP) vs Opacus (PRV, RDP)")
    for r in out["accountants"]:
        print(f"  q={r['q']:<6} σ={r['sigma']:<4} T={r['steps']:<6} PLD {r['pld']:.4f} "
              f"(Opacus PRV {r['opacus_prv']:.4f}, ×{r['pld_over_prv']:.4f})  RDP "
              f"{r['rdp']:.4f} (Opacus {r['opacus_rdp']:.4f}, ×{r['rdp_over_opacus_rdp']:.4f})"
              f"  spend {r['spend_s'] * 1e3:.0f} ms")
    out["dp_sgd"] = d = dp_sgd(steps)
    print(f"DP-SGD {d['steps']} steps: Opacus alone {d['opacus_s_per_step'] * 1e3:.2f} ms/step,"
          f" under the ledger {d['ledger_s_per_step'] * 1e3:.2f} ms/step "
          f"(×{d['overhead']:.3f}); ε spent {d['epsilon']:.3f}")
    out["erasure"] = e = erasure(rows)
    print(f"erasure: {e['rows']:,} logged rows, {e['users']:,} users, {e['served']:,} served "
          f"decisions + feedback: scan {e['scan_s']:.2f} s ({e['rows_read_per_s']:,.0f} "
          f"rows/s), erase {e['erase_s']:.2f} s; {e['removed']} rows removed")
    out["anonymity"] = [anonymity(n) for n in sorted({min(1000, users), users})]
    for a in out["anonymity"]:
        print(f"k-anonymity k=5 of {a['users']:,} users: {a['seconds']:.2f} s; smallest "
              f"class {a['naive_smallest']} -> {a['smallest']}, levels {a['levels']}, "
              f"{a['suppressed']} suppressed, precision loss {a['precision_loss']:.3f}")
    return out
