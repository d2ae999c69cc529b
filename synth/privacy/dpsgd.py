"""DP-SGD (Abadi et al. 2016) under a privacy ledger: every optimiser step is projected and
refused if it would cross the budget.

    >>> model, optimizer, loader = PrivacyEngine().make_private(
    ...     module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.1,
    ...     max_grad_norm=1.0)                                   # Opacus, Poisson sampling
    >>> run = LedgerSteps(ledger, optimizer, sample_rate=loader.sample_rate, label="vae")
    >>> ...  # train: optimizer.step() raises PrivacyBudgetExceeded before a step too many
    >>> run.close()

The run is one ledger entry, the event ``SelfComposed(PoissonSampled(q, Gaussian(σ)), T)``
with ``T`` the steps taken; before each step the entry is extended to ``T + 1`` if that fits
(``PrivacyLedger.extend``). The check is the ``DPOptimizer``'s step hook, which Opacus calls
after clipping and noising the gradients and before the parameters change, so a refused
step changes no parameter. The hook replaces Opacus's own accountant hook: the ledger is
the one account.
"""

from __future__ import annotations

from typing import Any

from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent

from personarl.errors import ConfigError, check_range
from synth.privacy.ledger import PrivacyLedger

__all__ = ["LedgerSteps"]


class LedgerSteps:
    """A DP-SGD run's steps, spent from ``ledger`` one at a time.

    Args:
        ledger: the dataset's ledger.
        optimizer: an Opacus ``DPOptimizer`` (``PrivacyEngine.make_private``'s); its
            ``noise_multiplier`` is read at each step.
        sample_rate: the Poisson sampling rate ``q`` of the data loader (``loader.sample_rate``).
        label: what is trained, for the ledger's reader.

    Attributes:
        steps: steps spent so far.
        entry: the ledger entry's id (``None`` before the first step).

    Raises:
        ConfigError: ``sample_rate`` outside (0, 1], or an optimizer without a
            ``noise_multiplier`` (not a ``DPOptimizer``).
    """

    def __init__(self, ledger: PrivacyLedger, optimizer: Any, sample_rate: float,
                 label: str) -> None:
        if not hasattr(optimizer, "attach_step_hook") or not hasattr(optimizer,
                                                                     "noise_multiplier"):
            raise ConfigError(f"optimizer {type(optimizer).__name__} is not an Opacus "
                              "DPOptimizer (use PrivacyEngine.make_private)")
        self.ledger, self.optimizer, self.label = ledger, optimizer, label
        self.sample_rate = check_range("sample_rate", sample_rate, 0.0, 1.0, low_open=True)
        self.steps, self.entry, self.sigma = 0, None, None
        optimizer.attach_step_hook(self._before_update)

    def _event(self, steps: int) -> SelfComposedDpEvent:
        sigma = check_range("noise_multiplier", self.optimizer.noise_multiplier, 0.0,
                            float("inf"), low_open=True, high_open=True)
        if self.sigma is not None and sigma != self.sigma:
            raise ConfigError(f"the noise multiplier changed from {self.sigma} to {sigma} "
                              "during the run; one LedgerSteps accounts for one noise "
                              "multiplier (close it and start another)")
        self.sigma = sigma
        return SelfComposedDpEvent(PoissonSampledDpEvent(self.sample_rate,
                                                         GaussianDpEvent(sigma)), steps)

    def _before_update(self, optimizer: Any) -> None:
        """Opacus's step hook: spend one more step or raise (the parameters are unchanged)."""
        event = self._event(self.steps + 1)
        if self.entry is None:
            self.entry = self.ledger.open_entry(event, "dp_sgd", self.label)["id"]
        else:
            self.ledger.extend(self.entry, event, self.label)
        self.steps += 1

    def close(self) -> None:
        """Mark the run committed (its steps stay counted)."""
        if self.entry is not None:
            self.ledger.close(self.entry)
