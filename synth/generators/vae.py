"""A small variational autoencoder over a table's encoded rows (torch), with DP-SGD
(Opacus) stopped by the privacy ledger.

The model (Kingma & Welling 2014, "Auto-encoding variational Bayes"): an encoder MLP
``D → hidden → hidden → 2L`` gives the posterior ``q(z | x) = N(μ, diag σ²)``; a decoder MLP
``L → hidden → hidden`` gives, per numeric column, a Gaussian mean and log standard
deviation, and per categorical column one logit per category. The loss is the negative
ELBO: Gaussian negative log-likelihood of the numeric columns plus the cross-entropy of the
categorical ones plus ``KL(q(z | x) ‖ N(0, I))``, averaged over the batch; Adam optimises it.
Sampling draws ``z ~ N(0, I)``, decodes, adds each numeric column's Gaussian noise and draws
each category from its softmax; the decoder's weights are stored as arrays and run in
NumPy, so loading and sampling need no torch.

**With DP** (``epsilon`` given): DP-SGD (Abadi et al. 2016) through Opacus's
``PrivacyEngine.make_private`` — Poisson sampling at rate ``q = batch_size / n``, per-user
gradients clipped to ``max_grad_norm``, Gaussian noise of multiplier ``σ`` — where ``σ`` is
calibrated so that ``epochs`` epochs (``T = epochs / q`` steps) cost exactly ε by the
ledger's PLD accountant (``synth.privacy.ledger.calibrate``). Training then runs until the
ledger's guard (``synth.privacy.dpsgd.LedgerSteps`` with the run's ε as its cap) refuses a
step: Opacus chooses noise but never stops at a budget, the ledger does. The DP encoder
uses only public facts — each numeric column centred on the middle of its public bounds and
scaled by a quarter of their width — so it spends nothing. The noise comes from torch's
default generator, seeded (Opacus's ``secure_mode`` is off, and ``privacy["secure_rng"]``
says so): reproducible and sound for research; a release of real people's data would want
a cryptographically secure generator.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from personarl.errors import ConfigError, check_int, check_range
from synth.generators.base import MAX_FIT_SEED, Generator, fitting_rows
from synth.generators.table import TableEncoder, TableSpec, check_table

__all__ = ["VAEGenerator", "fit_vae"]


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


class VAEGenerator(Generator):
    """A fitted VAE's decoder: arrays ``w0, b0, w1, b1, w2, b2`` (``x @ w + b`` layers,
    ReLU between them) and ``latent`` (a 0-d array: ``L``)."""

    kind = "vae"

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        a, m = self.arrays, len(self.spec.numeric)
        latent = int(np.asarray(a.get("latent", -1)).reshape(-1)[0]) if "latent" in a else -1
        hidden = np.shape(a.get("b0", ()))[0] if np.ndim(a.get("b0", ())) == 1 else -1
        out = 2 * m + sum(c.width for c in self.spec.categorical)
        return {"latent": (), "w0": (latent, hidden), "b0": (hidden,),
                "w1": (hidden, hidden), "b1": (hidden,), "w2": (hidden, out), "b2": (out,)}

    def _draw(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        a = self.arrays
        h = rng.standard_normal((n, int(a["latent"])))
        h = _relu(h @ a["w0"] + a["b0"])
        h = _relu(h @ a["w1"] + a["b1"])
        out = h @ a["w2"] + a["b2"]
        m = len(self.spec.numeric)
        mean, log_sd = out[:, :m], np.clip(out[:, m:2 * m], -5.0, 3.0)
        numeric = mean + np.exp(log_sd) * rng.standard_normal(mean.shape)
        return self.encoder.decode(np.hstack([numeric, out[:, 2 * m:]]), rng, logits=True)


def _model(width: int, numeric: int, categorical: int, blocks: list[slice], latent: int,
           hidden: int) -> Any:
    """The VAE module; calling it on a batch gives the batch's mean negative ELBO. The
    decoder's output is ``[means (numeric), log sds (numeric), logits (categorical)]``."""
    import torch
    from torch import nn

    class VAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(),
                                         nn.Linear(hidden, hidden), nn.ReLU(),
                                         nn.Linear(hidden, 2 * latent))
            self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(),
                                         nn.Linear(hidden, hidden), nn.ReLU(),
                                         nn.Linear(hidden, 2 * numeric + categorical))

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            mu, log_var = self.encoder(x).chunk(2, dim=-1)
            log_var = log_var.clamp(-8.0, 8.0)
            z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
            out = self.decoder(z)
            mean, log_sd = out[:, :numeric], out[:, numeric:2 * numeric].clamp(-5.0, 3.0)
            nll = (0.5 * ((x[:, :numeric] - mean) / torch.exp(log_sd)) ** 2 + log_sd).sum(1)
            for block in blocks:             # block: the column's slice of x
                logits = out[:, numeric + block.start:numeric + block.stop]
                nll = nll - (x[:, block] * torch.log_softmax(logits, 1)).sum(1)
            kl = -0.5 * (1 + log_var - mu ** 2 - log_var.exp()).sum(1)
            return (nll + kl).mean()

    return VAE()


def fit_vae(table: pd.DataFrame, spec: TableSpec, *, epochs: int = 60, batch_size: int = 128,
            latent: int = 8, hidden: int = 64, learning_rate: float = 1e-3, seed: int = 0,
            epsilon: float | None = None, ledger: Any = None, max_grad_norm: float = 1.0,
            label: str = "vae") -> VAEGenerator:
    """Fit the VAE to ``table``'s ``spec`` columns (module doc).

    Only consenting users are fitted on when the table has a ``consent`` column; a DP fit
    requires one.

    Args:
        epochs: passes over the data (with DP: the planned epochs σ is calibrated for).
        batch_size: rows per step (with DP: the expected batch of Poisson sampling).
        latent, hidden: ``L`` and the MLPs' width.
        epsilon: train with DP-SGD at this ε (δ is the ledger's); ``None``: without.
        ledger: the dataset's ``PrivacyLedger`` — required with ``epsilon``.
        max_grad_norm: DP-SGD's per-user gradient clipping norm.
        label: what the ledger entry is called.

    Raises:
        ConfigError: a bad argument; ``epsilon`` without a ledger or a ledger without it.
        DataError: the table does not fit the spec (``check_table``).
        PrivacyBudgetExceeded: the ledger cannot pay for the planned steps (nothing was
            trained).
    """
    import torch

    epochs = check_int("epochs", epochs, 1, 100_000)
    seed = check_int("seed", seed, 0, MAX_FIT_SEED)
    batch_size = check_int("batch_size", batch_size, 1)
    latent, hidden = check_int("latent", latent, 1, 1024), check_int("hidden", hidden, 1, 4096)
    learning_rate = check_range("learning_rate", learning_rate, 0, 1, low_open=True)
    if epsilon is None and ledger is not None:
        raise ConfigError("a ledger was given but no epsilon: a fit without differential "
                          "privacy spends nothing; give epsilon= to fit with it")
    rows = check_table(fitting_rows(table, private=epsilon is not None), spec)
    if epsilon is None:
        encoder = TableEncoder.fit(spec, rows)
    else:
        low = np.array([c.bounds[0] for c in spec.numeric])
        high = np.array([c.bounds[1] for c in spec.numeric])
        encoder = TableEncoder(spec, (low + high) / 2, (high - low) / 4)
    x = torch.as_tensor(encoder.encode(rows), dtype=torch.float32)
    n, numeric = len(x), len(spec.numeric)
    categorical = sum(c.width for c in spec.categorical)
    torch.manual_seed(seed)
    model = _model(spec.width, numeric, categorical, [b for _, b in spec.blocks()], latent,
                   hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x),
                                         batch_size=min(batch_size, n), shuffle=True,
                                         generator=generator)
    privacy = None
    if epsilon is None:
        for _ in range(epochs):
            for (batch,) in loader:
                optimizer.zero_grad()
                model(batch).backward()
                optimizer.step()
        rows_released: int | None = n
    else:
        privacy = _train_private(model, optimizer, loader, n, epochs, epsilon, ledger,
                                 max_grad_norm, label, seed)
        rows_released = None                 # the exact count is not released
    layers = [m for m in model.decoder if isinstance(m, torch.nn.Linear)]
    arrays = {"latent": np.array(latent)}
    for i, layer in enumerate(layers):
        arrays[f"w{i}"] = layer.weight.detach().numpy().T.astype(np.float64)
        arrays[f"b{i}"] = layer.bias.detach().numpy().astype(np.float64)
    return VAEGenerator(encoder, arrays, rows_released, privacy)


def _train_private(model: Any, optimizer: Any, loader: Any, n: int, epochs: int,
                   epsilon: float, ledger: Any, max_grad_norm: float, label: str,
                   seed: int) -> dict[str, Any]:
    """DP-SGD until the ledger's guard refuses a step (module doc); the fit's privacy."""
    import torch
    from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent
    from opacus import PrivacyEngine

    from synth.privacy.dpsgd import LedgerSteps
    from synth.privacy.ledger import (PrivacyBudgetExceeded, calibrate, check_ledger,
                                      event_epsilon)

    ledger = check_ledger(ledger, "DP-SGD")
    max_grad_norm = check_range("max_grad_norm", max_grad_norm, 0, 1e6, low_open=True)
    q = min(loader.batch_size / n, 1.0)
    planned = max(1, round(epochs / q))
    steps_event = lambda sigma, steps: SelfComposedDpEvent(  # noqa: E731
        PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps)
    sigma = calibrate(lambda s: steps_event(s, planned), epsilon, ledger.delta)
    projected = ledger.project(steps_event(sigma, planned))
    if projected > ledger.epsilon:               # refused whole, before anything runs
        raise PrivacyBudgetExceeded(
            f"dp_sgd {label!r} refused: its {planned} planned steps (epsilon={epsilon:g}) "
            f"would take the privacy ledger of {ledger.dataset} to epsilon={projected:.6g} "
            f"at delta={ledger.delta:g}, beyond its budget epsilon={ledger.epsilon:g} "
            f"(spent now: {ledger.spent():.6g}); nothing was trained and the ledger is "
            "unchanged")
    with warnings.catch_warnings():
        # Opacus warns on every PrivacyEngine without secure_mode: recorded in the fit
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine()
        model, optimizer, private_loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma,
            max_grad_norm=max_grad_norm, poisson_sampling=True,
            noise_generator=torch.Generator().manual_seed(seed + 1))
    run = LedgerSteps(ledger, optimizer, sample_rate=q, label=label, epsilon=epsilon)
    try:
        with warnings.catch_warnings():
            # torch, on Opacus's hooks of a first layer whose input needs no gradient
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for _ in range(4 * epochs):      # the guard stops it at `planned` steps
                for (batch,) in private_loader:
                    optimizer.zero_grad()
                    model(batch).backward()
                    optimizer.step()         # raises before the step the ledger refuses
    except PrivacyBudgetExceeded:
        pass
    finally:
        run.close()
    if run.steps == 0:
        raise PrivacyBudgetExceeded(f"dp_sgd {label!r}: the ledger of {ledger.dataset} "
                                    f"refused the first step (spent: {ledger.spent():.6g} of "
                                    f"{ledger.epsilon:g}); nothing was trained")
    spent = event_epsilon(steps_event(sigma, run.steps), ledger.delta)
    return {"epsilon": float(epsilon), "epsilon_spent": spent, "delta": ledger.delta,
            "ledger": str(ledger.path), "entry": run.entry, "method": "dp-sgd (opacus)",
            "noise_multiplier": sigma, "sample_rate": q, "steps": run.steps,
            "planned_steps": planned,
            "max_grad_norm": max_grad_norm, "secure_rng": False}
