"""Random streams derived from a run's seed by purpose.

A run has one seed (``seed`` in its config). Every random number it draws comes from a
stream named by what it is for: the users a dataset is logged on, the users its true value
is simulated on, the held-out users every policy is evaluated on, the bootstrap, a sweep's
re-run seeds, … A stream is a NumPy ``SeedSequence`` whose spawn key starts with the
purpose's code, so streams of different purposes (or of one purpose with different keys)
are independent for any pair of seeds — the guarantee NumPy's ``SeedSequence`` gives
spawned children (O'Neill 2015; NumPy, "Parallel random number generation"). Within one
purpose the stream depends only on the seed and the key, so every policy evaluated with
the same seed sees the same users: paired comparisons stay paired.

    >>> from personarl.seeds import generator, stream_seed
    >>> rng = generator(0, "bootstrap")               # a numpy Generator
    >>> env.reset(seed=stream_seed(0, "truth", 3))    # chunk 3 of the truth's users

``stream_seed`` returns a 128-bit integer (for APIs that take an int seed, such as
Gymnasium's ``reset``); ``stream_seed32`` a 32-bit one for APIs that cannot take more
(``np.random.seed`` inside RLlib, a sweep's run seeds). Codes are fixed: a new purpose gets
a new code, an old code is never reused.
"""

from __future__ import annotations

import zlib

import numpy as np

from personarl.errors import ConfigError, check_int

__all__ = ["PURPOSES", "MAX_SEED", "MAX_EPISODES", "seed_sequence", "generator", "stream_seed", "stream_seed32",
           "chunk_seeds", "name_key"]

#: seeds and keys are below this (two 32-bit words of entropy, so no two (seed, purpose,
#: key) triples can assemble the same SeedSequence entropy)
MAX_SEED = 2**63
#: the most episodes one call simulates: far beyond memory already (a billion logged
#: AgentRouting episodes are ~2.5 TB), a bound so an absurd count is refused, not allocated
MAX_EPISODES = 10**9

#: purpose -> fixed code (the first element of the stream's spawn key)
PURPOSES: dict[str, int] = {
    "training": 1,            # users and network initialisation while a learner trains
    "evaluation_users": 2,    # held-out users every policy is evaluated on (paired)
    "logged_users": 3,        # users of a logged dataset (experiments.collect)
    "behaviour": 4,           # a behaviour policy's exploration draws while logging
    "truth": 5,               # users the on-policy Monte-Carlo truth is simulated on
    "evaluation_actions": 6,  # a stochastic evaluation policy's own draws
    "bootstrap": 7,           # bootstrap resamples
    "cross_fit": 8,           # fold assignment of cross-fitted models
    "warmup": 9,              # users a learning baseline learns from before it is frozen
    "policy": 10,             # a policy's own randomness (exploration, tie-breaking)
    "trial_seeds": 11,        # the seeds of a sweep's re-runs
    "search": 12,             # a sweep's search algorithm (Optuna's sampler)
    "export": 13,             # observations of an export's parity check
    "serving": 14,            # a server's exploration and traffic-split draws
    "discovery_users": 15,    # the persisting users of experiments.discover and their windows
    "discovery_reference": 16,  # the typical users behind the known archetypes' centroids
    "preference_users": 17,   # users whose turns are compared (key 0) or scored on (key 1)
    "annotation": 18,         # annotators (key 0), candidates and labels (1), held-out split (2)
    "optimisation": 19,       # best-of-n samples (0), RL samples (1), PPO (2), reward models (3)
    "experiment_users": 20,   # the users of a simulated online experiment (every arm's)
    "experiment_sessions": 21,  # a user's other sessions: the per-step noise of a pre-period
    "assignment": 22,         # which arm each user is in; resampled readouts of a study
}


def seed_sequence(seed: int, purpose: str, *key: int) -> np.random.SeedSequence:
    """The stream of ``purpose`` (with optional integer ``key``s, e.g. a chunk index) of a
    run seeded ``seed``.

    Raises:
        ConfigError: ``seed`` or a key is not a non-negative integer, or ``purpose`` is not
            in ``PURPOSES`` (the message lists them); a ``ValueError`` too.
    """
    if purpose not in PURPOSES:
        raise ConfigError(f"unknown random-stream purpose {purpose!r}; valid: "
                         f"{sorted(PURPOSES)}")
    for name, value in (("seed", seed), *((f"key[{i}]", k) for i, k in enumerate(key))):
        if isinstance(value, bool) or not hasattr(value, "__index__") or \
                not 0 <= int(value) < MAX_SEED:
            raise ConfigError(f"{name}={value!r} must be an integer in [0, 2**63)")
    return np.random.SeedSequence(int(seed),
                                  spawn_key=(PURPOSES[purpose], *(int(k) for k in key)))


def generator(seed: int, purpose: str, *key: int) -> np.random.Generator:
    """A ``numpy.random.Generator`` on the stream (``seed_sequence``)."""
    return np.random.default_rng(seed_sequence(seed, purpose, *key))


def stream_seed(seed: int, purpose: str, *key: int) -> int:
    """The stream as one 128-bit integer seed (Gymnasium's ``reset(seed=...)`` takes it)."""
    words = seed_sequence(seed, purpose, *key).generate_state(4, dtype=np.uint32)
    return int.from_bytes(words.astype("<u4").tobytes(), "little")


def stream_seed32(seed: int, purpose: str, *key: int) -> int:
    """The stream as a 32-bit integer seed, for APIs limited to ``[0, 2**32)``."""
    return int(seed_sequence(seed, purpose, *key).generate_state(1, dtype=np.uint32)[0])


def name_key(name: str) -> int:
    """A stable integer key for a name (CRC-32 of its UTF-8 bytes): streams keyed by names,
    such as each policy's own, stay the same when other names are added."""
    return zlib.crc32(name.encode("utf-8"))


def chunk_seeds(seed: int, purpose: str, num_episodes: int, batch: int
                ) -> list[tuple[int, int]]:
    """``(reset seed, size)`` of the batches of at most ``batch`` episodes that make up
    ``num_episodes`` episodes of ``purpose``; chunk ``i`` resets with
    ``stream_seed(seed, purpose, i)``, so the first chunks of a longer run are the same
    users as a shorter run's.

    Raises:
        ConfigError: ``num_episodes`` not an integer in [1, ``MAX_EPISODES``], ``batch``
            not an integer >= 1.
    """
    check_int("num_episodes", num_episodes, 1, MAX_EPISODES)
    check_int("batch", batch, 1)
    out, done, i = [], 0, 0
    while done < num_episodes:
        b = min(batch, num_episodes - done)
        out.append((stream_seed(seed, purpose, i), b))
        done, i = done + b, i + 1
    return out
