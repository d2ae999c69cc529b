"""Users who stay: a population observed over consecutive time windows.

Discovery and its evolution events are measured on users that persist: ``n`` users are
drawn once (``PopulationSampler.sample``, a cohort at population time 0), then each call of
``PersistentPopulation.window(interactions)`` plays every user's next ``interactions``
interactions (``synth.behaviour.sample_interaction``) while their mixtures drift
(``synth.population.drift_trajectory``, continuing from the last window), and returns
them with the window's truth.

**Time.** Here population time counts windows: window ``w`` runs under the archetype table
in force at population time ``w`` (``PopulationSampler.epoch``), so an event with ``at=w``
first shows in window ``w``. An event also moves the users who are already there, in the
sense of its proportions (``synth.events``):

* ``drift`` (``source`` → ``target``, strength ``s``): every user moves ``s`` of their
  weight on ``source`` to ``target``;
* ``split`` (``source`` → new ``name``, ``s``): each user, with probability ``s`` (one
  uniform each), moves all their weight on ``source`` to the new archetype;
* ``new`` (``s``): each user, with probability ``s``, is redrawn with the new archetype as
  primary (``PopulationSampler.sample_weights``);
* ``merge``: nobody moves; the two archetypes' profiles converge in the table.

Users are simulated ``_BLOCK`` at a time (the drift trajectory and the interaction draws of
a block), so memory stays bounded; the draws come from the generator given at construction,
in a fixed order: the same seed gives the same windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personarl.errors import check_int
from synth.behaviour import BehaviourModel, sample_interaction
from synth.features import expected_behaviour_features
from synth.population import Population, PopulationSampler, drift_trajectory

__all__ = ["Window", "PersistentPopulation"]

_BLOCK = 4096


@dataclass(frozen=True)
class Window:
    """One window of ``n`` users × ``m`` interactions, and its truth.

    Attributes:
        index: the window's number (its population time).
        table_id: the epoch in force (index into ``PopulationSampler.tables``).
        task, latency, explore: ``(n, m)`` each interaction's task type, latency (s) and
            exploring flag — what a platform logs.
        mean_weights: ``(n, A)`` each user's latent mixture averaged over the window.
        primary: ``(n,)`` the latent primary archetype: the argmax of ``mean_weights``
            (the label discovery is scored against).
        expected_features: ``(n, F)`` ``synth.features.expected_behaviour_features``: the
            features infinitely many interactions in this window would give.
        is_bot, metadata_missing: ``(n,)`` the users' flags (bots are in every window).
    """

    index: int
    table_id: int
    task: np.ndarray
    latency: np.ndarray
    explore: np.ndarray
    mean_weights: np.ndarray
    primary: np.ndarray
    expected_features: np.ndarray
    is_bot: np.ndarray
    metadata_missing: np.ndarray

    @property
    def clear_cut(self) -> np.ndarray:
        """``(n,)`` users whose primary archetype holds at least 0.7 of their mean mixture
        (the issue's *clear-cut* users)."""
        return self.mean_weights.max(axis=1) >= 0.7

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(user, task, latency, explore)`` as ``(n·m,)`` interaction columns (a log's
        layout; users are ``0..n-1``)."""
        n, m = self.task.shape
        return (np.repeat(np.arange(n), m), self.task.ravel(), self.latency.ravel(),
                self.explore.ravel())


class PersistentPopulation:
    """``num_users`` users observed window after window (module doc).

    Args:
        sampler: the population, its events scheduled in windows.
        num_users: ``n``, at least 1.
        rng: every draw comes from it.
        behaviour: the per-interaction behaviour model.

    Raises:
        ConfigError: ``num_users`` is not a positive integer.
    """

    def __init__(self, sampler: PopulationSampler, num_users: int, rng: np.random.Generator,
                 behaviour: BehaviourModel = BehaviourModel()) -> None:
        self.sampler, self.rng, self.behaviour = sampler, rng, behaviour
        self.num_users = check_int("num_users", num_users, 1)
        self.users: Population = sampler.sample(self.num_users, rng, 0, cohort=True)
        self.weights = self.users.weights.copy()     # the mixture before the next window
        self.index = 0

    def window(self, interactions: int) -> Window:
        """The next window: every user's next ``interactions`` interactions.

        Raises:
            ConfigError: ``interactions`` is not a positive integer.
        """
        m = check_int("interactions", interactions, 1)
        sampler, users, n = self.sampler, self.users, self.num_users
        epoch = int(sampler.epoch(self.index))
        self._apply_events(epoch)
        A = self.weights.shape[1]
        task, explore = np.empty((n, m), np.int64), np.empty((n, m), bool)
        latency, mean = np.empty((n, m)), np.empty((n, A))
        for lo in range(0, n, _BLOCK):
            rows = slice(lo, min(lo + _BLOCK, n))
            b = rows.stop - lo
            # the trajectory starts one drift step after the last window's end
            noise = self.rng.standard_normal((b, m, A))
            w = drift_trajectory(self.weights[rows], noise, sampler.drift_rate)[:, 1:]
            u, z = self.rng.random((b, m, 3)), self.rng.standard_normal((b, m))
            _, task[rows], latency[rows], explore[rows] = sample_interaction(
                sampler, w, epoch, users.is_bot[rows, None], users.slow_bot[rows, None],
                u, z, self.behaviour)
            mean[rows] = w.mean(axis=1)
            self.weights[rows] = w[:, -1]
        expected = expected_behaviour_features(sampler, mean, epoch, users.is_bot,
                                               users.slow_bot, self.behaviour)
        window = Window(index=self.index, table_id=epoch, task=task, latency=latency,
                        explore=explore, mean_weights=mean, primary=mean.argmax(axis=1),
                        expected_features=expected, is_bot=users.is_bot.copy(),
                        metadata_missing=users.metadata_missing.copy())
        self.index += 1
        return window

    def _apply_events(self, epoch: int) -> None:
        """Move the users by every event that starts at this window (module doc)."""
        sampler = self.sampler
        names = list(sampler.tables[epoch].names)
        w = self.weights
        for ev in sampler.events:
            if ev.at != self.index or self.index == 0:
                continue
            s = ev.strength
            if ev.kind == "drift":
                a, b = names.index(ev.source), names.index(ev.target)
                moved = s * w[:, a]
                w[:, a] -= moved
                w[:, b] += moved
            elif ev.kind == "split":
                a, r = names.index(ev.source), names.index(ev.added)
                moving = self.rng.random(len(w)) < s
                w[moving, r] += w[moving, a]
                w[moving, a] = 0.0
            elif ev.kind == "new":
                r = names.index(ev.added)
                moving = np.flatnonzero(self.rng.random(len(w)) < s)
                w[moving] = sampler.sample_weights(np.full(len(moving), r),
                                                   np.full(len(moving), epoch), self.rng)
