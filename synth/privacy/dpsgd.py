"""DP-SGD (Abadi et al. 2016) under a privacy ledger: every optimiser step is spent from the
ledger, and the step that would cross the budget is refused.

    >>> model, optimizer, loader = PrivacyEngine().make_private(
    ...     module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.1,
    ...     max_grad_norm=1.0)                                   # Opacus, Poisson sampling
    >>> run = LedgerSteps(ledger, optimizer, sample_rate=loader.sample_rate, label="vae")
    >>> ...  # train: optimizer.step() raises PrivacyBudgetExceeded before a step too many
    >>> run.close()

The run is one ledger entry, the event ``SelfComposed(PoissonSampled(q, Gaussian(σ)), T)``.
Steps are reserved in blocks: before a step beyond the reservation, the entry is extended
by a block if that fits the budget (``PrivacyLedger.extend``), else by the most steps that
fit (a binary search on the ledger's projection), else the step is refused. Blocks start at
``block`` steps and double with the steps taken, up to ``MAX_BLOCK``, so a run of T steps
asks the ledger about ``log2(T / block)`` times, not T. ``close`` cuts the entry back to
the steps taken; a run that dies keeps its block counted (never refunded). The check is the ``DPOptimizer``'s step hook, which Opacus calls after clipping
and noising the gradients and before the parameters change, so a refused step changes no
parameter. The hook replaces Opacus's own accountant hook: the ledger is the one account.
"""

from __future__ import annotations

from typing import Any

from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent

from personarl.errors import ConfigError, check_int, check_range
from synth.privacy.ledger import PrivacyBudgetExceeded, PrivacyLedger, event_epsilon

__all__ = ["LedgerSteps", "MAX_BLOCK"]

#: the most steps reserved at once (blocks double from ``block`` up to it)
MAX_BLOCK = 1024


class LedgerSteps:
    """A DP-SGD run's steps, spent from ``ledger`` in blocks (module doc).

    Args:
        ledger: the dataset's ledger.
        optimizer: an Opacus ``DPOptimizer`` (``PrivacyEngine.make_private``'s); its
            ``noise_multiplier`` is read at each step.
        sample_rate: the Poisson sampling rate ``q`` of the data loader (``loader.sample_rate``).
        label: what is trained, for the ledger's reader.
        block: the first block's steps (at least 1).
        epsilon: the run's own cap: a step that would take the run's event alone (PLD, at
            the ledger's δ) beyond it is refused like one beyond the ledger's budget.
            ``None``: only the ledger's budget stops the run.

    Attributes:
        steps: steps taken so far.
        reserved: steps the ledger holds for the run (``steps`` after ``close``).
        entry: the ledger entry's id (``None`` before the first step).

    Raises:
        ConfigError: ``sample_rate`` outside (0, 1], ``block`` < 1, ``epsilon`` not > 0, or
            an optimizer without a ``noise_multiplier`` (not a ``DPOptimizer``).
    """

    def __init__(self, ledger: PrivacyLedger, optimizer: Any, sample_rate: float,
                 label: str, block: int = 32, epsilon: float | None = None) -> None:
        if not hasattr(optimizer, "attach_step_hook") or not hasattr(optimizer,
                                                                     "noise_multiplier"):
            raise ConfigError(f"optimizer {type(optimizer).__name__} is not an Opacus "
                              "DPOptimizer (use PrivacyEngine.make_private)")
        self.ledger, self.optimizer, self.label = ledger, optimizer, label
        self.sample_rate = check_range("sample_rate", sample_rate, 0.0, 1.0, low_open=True)
        self.block = check_int("block", block, 1)
        self.cap = None if epsilon is None else check_range(
            "epsilon", epsilon, 0.0, float("inf"), low_open=True, high_open=True)
        self.steps, self.reserved, self.entry, self.sigma = 0, 0, None, None
        optimizer.attach_step_hook(self._before_update)

    def _event(self, steps: int) -> SelfComposedDpEvent:
        sigma = self.sigma if self.sigma is not None else check_range(
            "noise_multiplier", self.optimizer.noise_multiplier, 0.0, float("inf"),
            low_open=True, high_open=True)
        return SelfComposedDpEvent(PoissonSampledDpEvent(self.sample_rate,
                                                         GaussianDpEvent(sigma)), steps)

    def _before_update(self, optimizer: Any) -> None:
        """Opacus's step hook: spend one more step or raise (the parameters are unchanged)."""
        sigma = optimizer.noise_multiplier
        if self.sigma is not None and sigma != self.sigma:
            raise ConfigError(f"the noise multiplier changed from {self.sigma} to {sigma} "
                              "during the run; one LedgerSteps accounts for one noise "
                              "multiplier (close it and start another)")
        if self.steps >= self.reserved:
            self._reserve()
        self.steps += 1

    def _within_cap(self, steps: int) -> bool:
        return self.cap is None or event_epsilon(self._event(steps),
                                                 self.ledger.delta) <= self.cap

    def _fits(self, steps: int) -> bool:
        if not self._within_cap(steps):
            return False
        if self.entry is None:
            return self.ledger.project(self._event(steps)) <= self.ledger.epsilon
        return self.ledger.project(self._event(steps), replace=self.entry) <= \
            self.ledger.epsilon

    def _reserve(self) -> None:
        """Extend the reservation by a block, or by the most steps that fit; raise
        ``PrivacyBudgetExceeded`` if not one more step fits."""
        target = self.steps + min(max(self.block, self.steps), MAX_BLOCK)   # doubling
        try:
            self._extend_to(target)
        except PrivacyBudgetExceeded:
            low, high = self.steps, target            # fits(low) holds, fits(high) fails
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (mid, high) if self._fits(mid) else (low, mid)
            self._extend_to(max(low, self.steps + 1))  # not one step fits: refused here

    def _extend_to(self, target: int) -> None:
        event = self._event(target)
        if not self._within_cap(target):
            raise PrivacyBudgetExceeded(
                f"dp_sgd {self.label!r}: step {target} refused: the run's own cap "
                f"epsilon={self.cap:g} is reached after {self.steps} steps")
        if self.entry is None:
            self.entry = self.ledger.open_entry(event, "dp_sgd", self.label)["id"]
        else:
            self.ledger.extend(self.entry, event, self.label)
        self.sigma = event.event.event.noise_multiplier
        self.reserved = target

    def close(self) -> None:
        """Cut the entry back to the steps taken and mark it committed (they stay counted;
        an entry whose first step was refused stays as it was written)."""
        if self.entry is None:
            return
        if 0 < self.steps < self.reserved:
            self.ledger.extend(self.entry, self._event(self.steps), self.label)
            self.reserved = self.steps
        self.ledger.close(self.entry)
