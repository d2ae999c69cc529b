"""The one stepping loop (``envs.rollout``): which rows count, when it stops."""

from __future__ import annotations

import numpy as np

from envs.rollout import Lanes, first_episodes


class Countdown:
    """A NEXT_STEP-autoreset vector env stub: lane ``i``'s episodes last ``lengths[i]`` steps
    and end by truncation (``truncate=True``) or termination; the observation is the step
    count, the reward 1 per counted step, and a restarting lane's step returns reward 0."""

    def __init__(self, lengths: list[int], truncate: bool) -> None:
        self.lengths, self.truncate = np.array(lengths), truncate
        self.t = np.zeros(len(lengths), dtype=np.int64)
        self.restart = np.zeros(len(lengths), dtype=bool)
        self.closed = False

    def reset(self, seed: int | None = None):
        self.t[:] = 0
        return self.t[:, None].astype(np.float32), {}

    def step(self, action):
        reward = np.where(self.restart, 0.0, 1.0)
        self.t = np.where(self.restart, 0, self.t + 1)
        ended = ~self.restart & (self.t >= self.lengths)
        self.restart = ended
        none = np.zeros_like(ended)
        return (self.t[:, None].astype(np.float32), reward,
                none if self.truncate else ended, ended if self.truncate else none, {})

    def close(self) -> None:
        self.closed = True


def test_first_episodes_stop_at_every_lanes_first_end_truncated_or_terminated():
    for truncate in (True, False):
        env = Countdown([1, 3, 2], truncate)
        chunks = list(first_episodes(lambda n: env, 3, seed=0, purpose="truth"))
        assert len(chunks) == 1
        lanes = chunks[0]
        steps = list(lanes.run(lambda obs, info: np.zeros(len(obs), dtype=np.int64)))
        assert len(steps) == 3                               # the longest first episode
        live = np.stack([t.live for t in steps])
        assert (live.sum(axis=0) == [1, 3, 2]).all()         # each lane's first episode only
        assert sum(t.ended.sum() for t in steps) == 3        # each ends once, counted
        assert not lanes.running


def test_lanes_running_on_do_not_count_the_restarting_step():
    env = Countdown([2, 3], truncate=False)
    lanes = Lanes(env, *env.reset(), first_episode_only=False)
    steps = list(lanes.run(lambda obs, info: np.zeros(len(obs), dtype=np.int64), steps=9))
    live = np.stack([t.live for t in steps])
    reward = np.stack([t.reward for t in steps])
    assert (reward[~live] == 0).all() and (reward[live] == 1).all()  # restarts masked off
    assert [int(sum(t.ended[i] for t in steps)) for i in range(2)] == [3, 2]
    # a checkpoint of lanes in flight continues exactly
    again = Lanes(env, lanes.obs, lanes.info, first_episode_only=False, live=lanes.live)
    assert again.running and (again.live == lanes.live).all()


def test_the_chunk_env_is_closed_when_the_caller_moves_on():
    envs_made = []

    def make(n):
        envs_made.append(Countdown([1] * n, truncate=True))
        return envs_made[-1]

    for lanes in first_episodes(make, 5, seed=0, purpose="truth", batch=2):
        for _ in lanes.run(lambda obs, info: np.zeros(len(obs), dtype=np.int64)):
            pass
    assert [len(e.lengths) for e in envs_made] == [2, 2, 1]
    assert all(e.closed for e in envs_made)
