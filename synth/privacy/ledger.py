"""The privacy ledger of a dataset: every differentially private use of the data, composed,
against a budget that is enforced.

    >>> ledger = PrivacyLedger.open("run/logged.parquet", epsilon=1.0, delta=1e-5)
    >>> with ledger.spend(LaplaceDpEvent(2.0), kind="release", label="count"):
    ...     noisy = mechanism(data)          # runs only if the budget allows it
    >>> ledger.report()["epsilon"]           # PLD figure at the budget's δ

**What is composed.** Each use is a ``dp_accounting`` ``DpEvent`` (Laplace, Gaussian,
Poisson-subsampled, self-composed, composed); the ledger's ε at its δ is that of all of them
composed, under add-or-remove-one-user neighbouring (the privacy unit is a user).

* The reported figure and the enforced one is the privacy-loss-distribution (PLD)
  accountant's (Meiser & Mohammadi 2018; Koskela et al. 2020; Doroshenko et al. 2022, "Connect
  the dots"), pessimistic at discretisation 1e-4 — an upper bound on the true ε.
* RDP (Mironov 2017; Mironov, Talwar & Zhang 2019 for subsampled Gaussians) is the quick
  check: it is also an upper bound, so a use it admits is admitted without computing the
  PLD; one it refuses — or cannot compose, such as a discrete Laplace — is decided by the
  PLD.
* Beside them, for uses that are all pure (Laplace, discrete Laplace): simple composition
  ``Σ ε_i`` and the advanced-composition bound of Dwork, Rothblum & Vadhan (2010, Thm
  III.3; Dwork & Roth 2014, Thm 3.20), ``sqrt(2 ln(1/δ) Σ ε_i²) + Σ ε_i (e^{ε_i} − 1)`` —
  for k equal ε_i it is their ``ε sqrt(2k ln(1/δ)) + k ε (e^ε − 1)``; for unequal ones the
  same proof (Azuma's inequality over the sum of the losses) gives the sums.

**Enforcement.** ``spend`` projects ε with the new use before anything runs and raises
``PrivacyBudgetExceeded`` if it would exceed the budget, leaving the ledger unchanged.
Otherwise it writes the use as ``pending`` first (write-ahead), then runs the caller's
block, then marks it ``committed`` — so a process killed between projecting and committing
(``kill -9`` included) leaves a consistent ledger that still counts the use: a crash, a
failure or an erasure never refunds ε. Every write replaces the file whole (temporary file,
fsync, rename) under an exclusive lock, so two processes spending from one ledger compose.

The ledger lives beside its dataset, ``<dataset>.privacy.json``; the budget is fixed when
it is created (opening it with another budget is refused, never a silent raise). The ledger
goes with its data: a copy of the dataset under another name is the same data and must
carry the ledger along — a fresh ledger beside the copy would start the budget again, and
nothing here can tell a copy from new data.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import dp_accounting as dpa
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from personarl import jsonio
from personarl.errors import ConfigError, DataError, PersonaRLError, check_range
from personarl.files import write_atomic
from personarl.locks import exclusive_lock

__all__ = ["PrivacyLedger", "PrivacyBudgetExceeded", "KINDS", "SUFFIX", "event_to_json",
           "event_from_json", "pure_epsilons", "simple_composition", "advanced_composition",
           "check_budget", "calibrate", "check_ledger", "event_epsilon"]

#: what a ledger entry records: a released statistic, a generator fit, a DP-SGD run
KINDS = ("release", "fit", "dp_sgd")
#: the ledger of ``data.parquet`` is ``data.parquet.privacy.json``
SUFFIX = ".privacy.json"
FORMAT = 1
#: PLD discretisation of the privacy loss (dp-accounting's default; pessimistic rounding)
PLD_INTERVAL = 1e-4
#: the noise multipliers the accountants compose without overflowing (ε from 1e-6 to 1e6)
MIN_NOISE, MAX_NOISE = 1e-6, 1e6
STATUSES = ("pending", "committed", "failed")
_LOCK_WAIT = 30.0


class PrivacyBudgetExceeded(PersonaRLError, RuntimeError):
    """A use of the data would take the ledger's ε beyond its budget; nothing ran and the
    ledger is unchanged."""


def check_budget(epsilon: float, delta: float) -> tuple[float, float]:
    """``(ε, δ)`` as floats if ``ε > 0`` is finite and ``0 < δ < 1``.

    Raises:
        ConfigError: naming the bad value and the valid range.
    """
    return (check_range("epsilon", epsilon, 0.0, math.inf, low_open=True, high_open=True),
            check_range("delta", delta, 0.0, 1.0, low_open=True, high_open=True))


# ---------------------------------------------------------------- events <-> JSON
_LEAVES = {"LaplaceDpEvent": dpa.LaplaceDpEvent, "GaussianDpEvent": dpa.GaussianDpEvent}
_VALID = ("LaplaceDpEvent, DiscreteLaplaceDpEvent, GaussianDpEvent, PoissonSampledDpEvent, "
          "SelfComposedDpEvent, ComposedDpEvent")


def event_to_json(event: dpa.DpEvent) -> dict[str, Any]:
    """A ``DpEvent`` as a JSON object (``event_from_json`` reads it back).

    Raises:
        ConfigError: an event type the ledger does not compose (the message lists them).
    """
    name = type(event).__name__
    if isinstance(event, (dpa.LaplaceDpEvent, dpa.GaussianDpEvent)):
        return {"type": name, "noise_multiplier": float(event.noise_multiplier)}
    if isinstance(event, dpa.dp_event.DiscreteLaplaceDpEvent):
        return {"type": name, "noise_parameter": float(event.noise_parameter),
                "sensitivity": int(event.sensitivity)}
    if isinstance(event, dpa.PoissonSampledDpEvent):
        return {"type": name, "sampling_probability": float(event.sampling_probability),
                "event": event_to_json(event.event)}
    if isinstance(event, dpa.SelfComposedDpEvent):
        return {"type": name, "count": int(event.count), "event": event_to_json(event.event)}
    if isinstance(event, dpa.ComposedDpEvent):
        return {"type": name, "events": [event_to_json(e) for e in event.events]}
    raise ConfigError(f"a {name} cannot be kept in a privacy ledger; valid: {_VALID}")


def event_from_json(data: Mapping[str, Any]) -> dpa.DpEvent:
    """The ``DpEvent`` ``event_to_json`` wrote.

    Raises:
        DataError: an object that is not one (naming what is wrong).
    """
    if not isinstance(data, Mapping):
        raise DataError(f"a ledger event must be a JSON object; got {data!r:.80}")
    try:
        kind = data["type"]
        if kind in _LEAVES:
            return _LEAVES[kind](noise_multiplier=float(data["noise_multiplier"]))
        if kind == "DiscreteLaplaceDpEvent":
            return dpa.dp_event.DiscreteLaplaceDpEvent(float(data["noise_parameter"]),
                                                       int(data["sensitivity"]))
        if kind == "PoissonSampledDpEvent":
            return dpa.PoissonSampledDpEvent(float(data["sampling_probability"]),
                                             event_from_json(data["event"]))
        if kind == "SelfComposedDpEvent":
            return dpa.SelfComposedDpEvent(event_from_json(data["event"]), int(data["count"]))
        if kind == "ComposedDpEvent":
            return dpa.ComposedDpEvent([event_from_json(e) for e in data["events"]])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"a ledger event {data!r:.120} is malformed: {exc}") from None
    raise DataError(f"a ledger event has unknown type {data.get('type')!r}; valid: {_VALID}")


def _real(name: str, value: Any, low: float, high: float, **open_: bool) -> float:
    """``check_range`` of a parameter that must already be a number (not ``"2"``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name}={value!r} must be a number")
    return check_range(name, value, low, high, **open_)


def _check_event(event: dpa.DpEvent) -> None:
    """Refuse events whose parameters are not private or not numbers (noise 0 or beyond
    what the accountants can take, probabilities outside (0, 1], counts below 1) before
    they reach an accountant."""
    if isinstance(event, (dpa.LaplaceDpEvent, dpa.GaussianDpEvent)):
        _real(f"{type(event).__name__}.noise_multiplier", event.noise_multiplier,
              MIN_NOISE, MAX_NOISE)
    elif isinstance(event, dpa.dp_event.DiscreteLaplaceDpEvent):
        _real("DiscreteLaplaceDpEvent.noise_parameter", event.noise_parameter, 1 / MAX_NOISE,
              1 / MIN_NOISE)
        if isinstance(event.sensitivity, bool) or not isinstance(event.sensitivity, int) or \
                event.sensitivity < 1:
            raise ConfigError(f"DiscreteLaplaceDpEvent.sensitivity={event.sensitivity!r} must "
                              "be an integer >= 1")
    elif isinstance(event, dpa.PoissonSampledDpEvent):
        _real("sampling_probability", event.sampling_probability, 0.0, 1.0, low_open=True)
        _check_event(event.event)
    elif isinstance(event, dpa.SelfComposedDpEvent):
        if isinstance(event.count, bool) or not isinstance(event.count, int) or event.count < 1:
            raise ConfigError(f"SelfComposedDpEvent.count={event.count!r} must be an "
                              "integer >= 1")
        _check_event(event.event)
    elif isinstance(event, dpa.ComposedDpEvent):
        for e in event.events:
            _check_event(e)
    else:
        event_to_json(event)                     # raises, listing the valid types


# ---------------------------------------------------------------- composition
def pure_epsilons(event: dpa.DpEvent) -> list[float] | None:
    """The ε of each pure use inside ``event`` — Laplace: 1 / noise multiplier (at
    sensitivity 1); discrete Laplace: noise parameter × sensitivity — or ``None`` if any
    part is not pure (Gaussian, subsampled)."""
    if isinstance(event, dpa.LaplaceDpEvent):
        return [1.0 / event.noise_multiplier]
    if isinstance(event, dpa.dp_event.DiscreteLaplaceDpEvent):
        return [event.noise_parameter * event.sensitivity]
    if isinstance(event, dpa.SelfComposedDpEvent):
        inner = pure_epsilons(event.event)
        return None if inner is None else inner * event.count
    if isinstance(event, dpa.ComposedDpEvent):
        out: list[float] = []
        for e in event.events:
            inner = pure_epsilons(e)
            if inner is None:
                return None
            out += inner
        return out
    return None


def simple_composition(epsilons: list[float]) -> float:
    """``Σ ε_i``: basic composition of pure ε_i-DP uses (Dwork & Roth 2014, Thm 3.16)."""
    return float(math.fsum(epsilons))


def advanced_composition(epsilons: list[float], delta: float) -> float:
    """The advanced-composition bound on ε at ``δ`` for pure ε_i-DP uses:
    ``sqrt(2 ln(1/δ) Σ ε_i²) + Σ ε_i (e^{ε_i} − 1)`` (Dwork, Rothblum & Vadhan 2010,
    Thm III.3, written with sums for unequal ε_i; module doc)."""
    return float(math.sqrt(2.0 * math.log(1.0 / delta) * math.fsum(e * e for e in epsilons))
                 + math.fsum(e * math.expm1(e) for e in epsilons))


def _epsilon(accountant: Any, events: list[dpa.DpEvent], delta: float) -> float:
    """ε at ``delta`` of ``events`` composed (``inf`` if the accountant cannot compose one
    of them, such as RDP a discrete Laplace).

    Raises:
        ConfigError: the accountant fails on a parameter (naming it).
    """
    if not events:
        return 0.0
    event = dpa.ComposedDpEvent(events)
    if not accountant.supports(event):
        return math.inf
    try:
        accountant.compose(event)
        return float(accountant.get_epsilon(delta))
    except (ValueError, OverflowError, ZeroDivisionError, FloatingPointError) as exc:
        raise ConfigError(f"the {type(accountant).__name__} cannot compose "
                          f"{[event_to_json(e) for e in events][-1]}: {exc}") from None


def _pld_epsilon(events: list[dpa.DpEvent], delta: float) -> float:
    return _epsilon(pld_privacy_accountant.PLDAccountant(
        value_discretization_interval=PLD_INTERVAL), events, delta)


def _rdp_epsilon(events: list[dpa.DpEvent], delta: float) -> float:
    return _epsilon(rdp_privacy_accountant.RdpAccountant(), events, delta)


def event_epsilon(event: dpa.DpEvent, delta: float) -> float:
    """ε at ``delta`` of ``event`` alone, by the PLD accountant the ledger enforces with."""
    return _pld_epsilon([event], delta)


#: the ε a calibrated mechanism may be asked for, and the noise range searched
MIN_TARGET, MAX_TARGET = 1e-3, 100.0
CALIBRATION_NOISE = (0.2, 1e5)


def calibrate(make_event: Callable[[float], dpa.DpEvent], epsilon: float,
              delta: float) -> float:
    """The smallest noise parameter ``s`` at which ``make_event(s)``'s ε at ``delta``, by
    the ledger's PLD accountant, is at most ``epsilon``: a bracket found by doubling or
    halving from 1 within ``CALIBRATION_NOISE``, then dp-accounting's
    ``calibrate_dp_mechanism`` (Brent's method) in it; the result is checked and nudged up
    until the event fits, so that the ledger never finds it over.

    Args:
        make_event: noise parameter -> the mechanism's ``DpEvent`` (ε falls as it grows).

    Raises:
        ConfigError: ``epsilon`` outside [1e-3, 100], or no noise in ``CALIBRATION_NOISE``
            meets it.
    """
    from dp_accounting import mechanism_calibration as mc

    epsilon = check_range("epsilon", epsilon, MIN_TARGET, MAX_TARGET)
    fits = lambda s: event_epsilon(make_event(s), delta) <= epsilon  # noqa: E731
    low, high = CALIBRATION_NOISE
    s = 1.0
    if fits(s):
        while s / 2 >= low and fits(s / 2):
            s /= 2
        bracket = (s / 2, s) if s / 2 >= low else None
    else:
        while s < high and not fits(s):
            s *= 2
        bracket = (s / 2, s) if fits(s) else None
    if bracket is None:
        raise ConfigError(f"no noise in [{low:g}, {high:g}] gives epsilon={epsilon} at "
                          f"delta={delta} (the search stopped at {s:g}); ask for another "
                          "epsilon")
    fresh = lambda: pld_privacy_accountant.PLDAccountant(  # noqa: E731
        value_discretization_interval=PLD_INTERVAL)
    s = float(mc.calibrate_dp_mechanism(fresh, make_event, epsilon, delta,
                                        mc.ExplicitBracketInterval(*bracket), tol=1e-6))
    while not fits(s):
        s *= 1 + 1e-5
    return s


def check_ledger(ledger: Any, what: str) -> "PrivacyLedger":
    """``ledger`` if it is a ``PrivacyLedger``.

    Raises:
        ConfigError: naming ``what`` needs one and how to open it.
    """
    if not isinstance(ledger, PrivacyLedger):
        raise ConfigError(f"{what} spends from a privacy ledger; got ledger={ledger!r}. Open "
                          "the dataset's: PrivacyLedger.open(<dataset path>, epsilon=..., "
                          "delta=...)")
    return ledger


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---------------------------------------------------------------- the ledger
class PrivacyLedger:
    """The privacy ledger of one dataset (``<dataset>.privacy.json``).

    Use ``PrivacyLedger.open``; the constructor takes the ledger file's path.

    Attributes:
        path: the ledger file.
        epsilon, delta: the budget (fixed at creation).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        state = self._read()
        self.epsilon, self.delta = float(state["epsilon"]), float(state["delta"])
        self.dataset = state["dataset"]

    # -------------------------------------------------------------- opening
    @classmethod
    def path_for(cls, dataset: str | Path) -> Path:
        """Where the ledger of ``dataset`` lives: beside it."""
        dataset = Path(dataset)
        return dataset.with_name(dataset.name + SUFFIX)

    @classmethod
    def open(cls, dataset: str | Path, epsilon: float | None = None,
             delta: float | None = None) -> "PrivacyLedger":
        """The ledger of ``dataset``, created with budget ``(epsilon, delta)`` if it has
        none yet.

        Raises:
            ConfigError: a bad budget (ε ≤ 0 or not finite, δ ∉ (0, 1)); no budget for a
                new ledger; a budget other than the existing ledger's (naming both — a
                budget is never raised by reopening).
            DataError: the existing ledger file is unreadable.
        """
        path = cls.path_for(dataset)
        if (epsilon is None) != (delta is None):
            raise ConfigError(f"give both epsilon and delta (a new ledger's budget), or "
                              f"neither (to open {path.name}); got epsilon={epsilon!r} "
                              f"delta={delta!r}")
        given = None if epsilon is None else check_budget(epsilon, delta)
        if not path.parent.is_dir():
            raise ConfigError(f"the directory of {str(dataset)!r} does not exist")
        with cls._locked(path):
            if not path.exists():
                if given is None:
                    raise ConfigError(f"{dataset} has no privacy ledger yet; give its budget "
                                      "(epsilon > 0 and delta in (0, 1), e.g. epsilon=1.0 "
                                      "delta=1e-5)")
                state = {"format": FORMAT, "dataset": Path(dataset).name,
                         "epsilon": given[0], "delta": given[1],
                         "neighbouring": "add_or_remove_one_user", "created": _now(),
                         "entries": []}
                write_atomic(path, jsonio.dumps(state, indent=1) + "\n")
        ledger = cls(path)
        if given is not None and given != (ledger.epsilon, ledger.delta):
            raise ConfigError(f"the privacy ledger {path} has budget epsilon={ledger.epsilon} "
                              f"delta={ledger.delta}; epsilon={given[0]} delta={given[1]} "
                              "differs (a budget is fixed when the ledger is created)")
        return ledger

    @staticmethod
    @contextlib.contextmanager
    def _locked(path: Path) -> Iterator[None]:
        lock = exclusive_lock(path.with_name(path.name + ".lock"),
                              "the privacy ledger in {path} is held by {holder}",
                              wait=_LOCK_WAIT)
        try:
            yield
        finally:
            lock.close()

    def _read(self) -> dict[str, Any]:
        try:
            state = jsonio.loads_strict(self.path.read_bytes())
        except FileNotFoundError:
            raise DataError(f"no privacy ledger at {self.path}") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"the privacy ledger {self.path} is unreadable: {exc}") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(
                state.get("entries"), list) or not isinstance(state.get("dataset"), str):
            raise DataError(f"{self.path} is not a privacy ledger (format {FORMAT})")
        try:
            check_budget(state.get("epsilon"), state.get("delta"))
        except ConfigError as exc:
            raise DataError(f"{self.path}: its budget is invalid ({exc})") from None
        seen = set()
        for i, e in enumerate(state["entries"]):
            ok = isinstance(e, dict) and isinstance(e.get("id"), int) and \
                e.get("kind") in KINDS and e.get("status") in STATUSES and e["id"] not in seen
            if not ok:
                raise DataError(f"{self.path}: entry {i} is not a ledger entry (an object "
                                f"with a unique integer id, kind in {list(KINDS)} and status "
                                f"in {list(STATUSES)}): {e!r:.120}")
            seen.add(e["id"])
            try:
                _check_event(event_from_json(e.get("event")))
            except (ConfigError, DataError) as exc:
                raise DataError(f"{self.path}: entry {e['id']}'s event is invalid: "
                                f"{exc}") from None
        return state

    def _write(self, state: Mapping[str, Any]) -> None:
        write_atomic(self.path, jsonio.dumps(state, indent=1) + "\n")

    # -------------------------------------------------------------- reading
    @property
    def entries(self) -> list[dict[str, Any]]:
        """Every use so far, oldest first (a fresh read of the file)."""
        return self._read()["entries"]

    @staticmethod
    def _events(entries: list[Mapping[str, Any]]) -> list[dpa.DpEvent]:
        return [event_from_json(e["event"]) for e in entries]

    def spent(self, delta: float | None = None) -> float:
        """ε spent so far at ``delta`` (default: the budget's), by the PLD accountant."""
        delta = self.delta if delta is None else check_budget(1.0, delta)[1]
        return _pld_epsilon(self._events(self.entries), delta)

    def remaining(self) -> float:
        """The budget's ε minus ``spent()`` (never below 0)."""
        return max(self.epsilon - self.spent(), 0.0)

    def report(self, delta: float | None = None) -> dict[str, Any]:
        """The ledger in figures at ``delta`` (default: the budget's δ).

        Returns:
            ``budget`` (ε, δ), ``epsilon`` (PLD: the figure reported and enforced),
            ``epsilon_rdp``, ``remaining``, and when every use is pure (Laplace)
            ``epsilon_simple`` and ``epsilon_advanced`` (else ``None``); ``uses`` and
            ``pending`` (uses whose process has not committed them: counted), ``stale_fits``.
        """
        delta = self.delta if delta is None else check_budget(1.0, delta)[1]
        entries = self.entries
        events = self._events(entries)
        pure = pure_epsilons(dpa.ComposedDpEvent(events)) if events else []
        pld = _pld_epsilon(events, delta)
        return dict(
            budget=dict(epsilon=self.epsilon, delta=self.delta), delta=delta, epsilon=pld,
            epsilon_rdp=None if math.isinf(rdp := _rdp_epsilon(events, delta)) else rdp,
            epsilon_simple=None if pure is None else simple_composition(pure),
            epsilon_advanced=None if pure is None else advanced_composition(pure, delta),
            remaining=max(self.epsilon - pld, 0.0) if delta == self.delta else None,
            uses=len(entries), pending=sum(e["status"] == "pending" for e in entries),
            stale_fits=sum(bool(e.get("stale")) for e in entries if e["kind"] == "fit"))

    # -------------------------------------------------------------- projecting
    def project(self, event: dpa.DpEvent, replace: int | None = None) -> float:
        """ε at the budget's δ if ``event`` were added (or put in place of entry id
        ``replace``) — the RDP figure when that already fits the budget, else the PLD's.

        Raises:
            ConfigError: an event the ledger cannot compose, or with a noise of 0.
        """
        _check_event(event)
        return self._project(self._read(), event, replace)

    def _project(self, state: Mapping[str, Any], event: dpa.DpEvent,
                 replace: int | None) -> float:
        events = [event_from_json(e["event"]) for e in state["entries"] if e["id"] != replace]
        events.append(event)
        quick = _rdp_epsilon(events, self.delta)
        if quick <= self.epsilon:
            return quick
        return _pld_epsilon(events, self.delta)

    def _refuse(self, projected: float, kind: str, label: str) -> None:
        raise PrivacyBudgetExceeded(
            f"{kind} {label!r} refused: it would take the privacy ledger of "
            f"{self.dataset} to epsilon={projected:.6g} at delta={self.delta:g}, beyond its "
            f"budget epsilon={self.epsilon:g} (spent now: {self.spent():.6g}); nothing was "
            "run and the ledger is unchanged")

    # -------------------------------------------------------------- spending
    @contextlib.contextmanager
    def spend(self, event: dpa.DpEvent, kind: str, label: str) -> Iterator[dict[str, Any]]:
        """Run the block only if ``event`` fits the budget; record it.

        The use is written ``pending`` before the block runs and ``committed`` after it
        (``failed`` if the block raised — still counted: its noise may have been drawn).

        Args:
            event: what the block will do, as a ``DpEvent`` (sensitivity 1 per user).
            kind: ``release``, ``fit`` or ``dp_sgd``.
            label: what is released or fitted, for the ledger's reader.

        Yields:
            the entry as written (``id``, ``kind``, ``label``, ``event``, ``status``, …).

        Raises:
            PrivacyBudgetExceeded: the use would cross the budget (before the block runs).
            ConfigError: an unknown ``kind`` or an event the ledger cannot compose.
        """
        entry = self._reserve(event, kind, label)
        try:
            yield entry
        except BaseException:
            self._close(entry["id"], "failed")
            raise
        self._close(entry["id"], "committed")

    def _reserve(self, event: dpa.DpEvent, kind: str, label: str) -> dict[str, Any]:
        if kind not in KINDS:
            raise ConfigError(f"kind={kind!r}; valid: {list(KINDS)}")
        _check_event(event)
        with self._locked(self.path):
            state = self._read()
            projected = self._project(state, event, None)
            if projected > self.epsilon:
                self._refuse(projected, kind, label)
            entry = dict(id=1 + max((e["id"] for e in state["entries"]), default=0),
                         kind=kind, label=str(label), event=event_to_json(event),
                         status="pending", opened=_now(), closed=None, stale=False)
            state["entries"].append(entry)
            self._write(state)
        return entry

    def _entry(self, state: Mapping[str, Any], entry_id: int,
               pending: bool = False) -> dict[str, Any]:
        """Entry ``entry_id`` of ``state`` (a still-``pending`` one if asked).

        Raises:
            ConfigError: no such entry, or it is closed already.
        """
        for e in state["entries"]:
            if e["id"] == entry_id:
                if pending and e["status"] != "pending":
                    raise ConfigError(f"ledger entry {entry_id} is {e['status']} already; a "
                                      "closed use cannot grow")
                return e
        raise ConfigError(f"the privacy ledger {self.path} has no entry {entry_id!r}; its "
                          f"entries: {[e['id'] for e in state['entries']]}")

    def _close(self, entry_id: int, status: str) -> None:
        with self._locked(self.path):
            state = self._read()
            entry = self._entry(state, entry_id)
            entry["status"], entry["closed"] = status, _now()
            self._write(state)

    def extend(self, entry_id: int, event: dpa.DpEvent, label: str) -> None:
        """Replace entry ``entry_id``'s event by ``event`` (a longer DP-SGD run: one more
        step) if the result fits the budget; the entry stays ``pending`` until ``close``.

        Raises:
            PrivacyBudgetExceeded: it would not fit (the ledger is unchanged).
        """
        _check_event(event)
        with self._locked(self.path):
            state = self._read()
            entry = self._entry(state, entry_id, pending=True)
            projected = self._project(state, event, entry_id)
            if projected > self.epsilon:
                self._refuse(projected, entry["kind"], label)
            entry["event"] = event_to_json(event)
            self._write(state)

    def open_entry(self, event: dpa.DpEvent, kind: str, label: str) -> dict[str, Any]:
        """Write ``event`` as a ``pending`` use if it fits (``spend`` without the block:
        for uses that grow step by step, with ``extend`` and ``close``).

        Raises:
            PrivacyBudgetExceeded: it would not fit (the ledger is unchanged).
        """
        return self._reserve(event, kind, label)

    def close(self, entry_id: int, status: str = "committed") -> None:
        """Mark entry ``entry_id`` ``committed`` (or ``failed``); it stays counted."""
        if status not in ("committed", "failed"):
            raise ConfigError(f"status={status!r}; valid: ['committed', 'failed']")
        self._close(entry_id, status)

    def mark_stale(self, reason: str) -> int:
        """Mark every generator fit in the ledger stale (its data changed, e.g. a user was
        erased); returns how many. ε is not refunded."""
        with self._locked(self.path):
            state = self._read()
            fits = [e for e in state["entries"] if e["kind"] == "fit" and not e.get("stale")]
            for e in fits:
                e["stale"], e["stale_reason"] = True, reason
            if fits:
                self._write(state)
        return len(fits)

    def __repr__(self) -> str:
        return (f"PrivacyLedger({str(self.path)!r}, epsilon={self.epsilon}, "
                f"delta={self.delta})")

