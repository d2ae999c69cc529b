"""Persona evolution (issue 20): drift, split, merge and new personas found between windows
of persisting users, their review, the events file and experiments.discover."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from personarl.errors import ConfigError, DataError
from synth.evolution import (EvolutionTracker, hotelling_p, read_events, review_file,
                             write_events)
from tests.readme import command

CENTRES = np.array([[0.0] * 8, [4.0] + [0.0] * 7, [0.0, 4.0] + [0.0] * 6])
PER = 300                                  # users per blob
NOISE = 0.3                                # each window's noise per feature


def _windows(change=None, windows=6, seed=0):
    """Windows of 900 users in three blobs (8 features); ``change(w, x, truth, rng)`` may
    move users in place from some window on."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(3), PER)
    home = CENTRES[truth] + 0.3 * rng.standard_normal((len(truth), 8))
    for w in range(windows):
        if change is not None:
            change(w, home, truth, rng)
        yield w, home + NOISE * rng.standard_normal(home.shape)


def _track(change=None, windows=6, seed=0):
    tracker = EvolutionTracker(k=3, seed=seed)
    users = np.arange(3 * PER)
    for _, x in _windows(change, windows, seed):
        tracker.update(users, x)
    return tracker


def _kinds(tracker):
    return [(e.window, e.kind) for e in tracker.events]


def test_a_stationary_population_gives_no_events():
    for seed in range(3):
        assert _track(seed=seed).events == []


def test_half_a_persona_moving_somewhere_new_is_a_split():
    def change(w, home, truth, rng):
        if w == 3:
            home[np.flatnonzero(truth == 0)[: PER // 2], 3] += 1.0
    tracker = _track(change)
    assert _kinds(tracker) == [(3, "split")]
    split = tracker.events[0]
    assert split.source == (tracker.personas(CENTRES[:1])[0],)
    assert len(split.target) == 2 and len(tracker.ids) == 4
    assert 0.3 < split.strength <= 0.6 and set(split.affected_users) <= set(range(PER))


def test_users_moving_into_another_persona_are_a_drift():
    def change(w, home, truth, rng):
        if w == 3:
            movers = np.flatnonzero(truth == 0)[: PER // 2]
            home[movers] += CENTRES[1] - CENTRES[0]
    tracker = _track(change)
    drifts = [e for e in tracker.events if e.kind == "drift"]
    assert [e.window for e in tracker.events] == [3] and len(drifts) == 1
    a, b = tracker.personas(CENTRES[:2])
    assert drifts[0].source == (a,) and drifts[0].target == (b,)
    assert drifts[0].strength == pytest.approx(0.5, abs=0.1)


def test_two_personas_moving_together_merge():
    def change(w, home, truth, rng):
        if w == 3:
            middle = 0.5 * (CENTRES[0] + CENTRES[1])
            for blob in (0, 1):
                home[truth == blob] += middle - CENTRES[blob]
    tracker = _track(change)
    assert _kinds(tracker) == [(3, "merge")]
    merge = tracker.events[0]
    assert len(set(merge.source)) == 2 and merge.target == (min(merge.source),)
    assert tracker.personas(CENTRES[:2]).tolist() == [min(merge.source)] * 2
    assert len(tracker.ids) == 2 and merge.strength > 0.8


def test_parts_of_every_persona_meeting_elsewhere_are_new():
    def change(w, home, truth, rng):
        if w == 3:
            movers = np.flatnonzero(rng.random(len(truth)) < 0.2)
            home[movers] = np.array([2.0, 2.0, 3.0] + [0.0] * 5) + 0.3 * rng.standard_normal(
                (len(movers), 8))
    tracker = _track(change)
    assert _kinds(tracker) == [(3, "new")]
    assert len(tracker.events[0].source) >= 2 and len(tracker.ids) == 4


def test_hotelling_rejects_a_shifted_mean_and_not_a_centred_one():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 5))
    assert hotelling_p(x) > 0.01
    assert hotelling_p(x + np.array([0.4, 0, 0, 0, 0])) < 1e-6
    # a column that is the negative sum of the others (shares summing to one) counts once
    dependent = np.column_stack([x, -x.sum(1)])
    assert hotelling_p(dependent) == pytest.approx(hotelling_p(x))


def test_bad_windows_name_the_problem():
    tracker = EvolutionTracker(k=2)
    with pytest.raises(DataError, match="empty window"):
        tracker.update(np.array([], int), np.zeros((0, 8)))
    with pytest.raises(DataError, match="user id 3 appears twice"):
        tracker.update(np.array([3, 3, 4]), np.zeros((3, 8)))
    with pytest.raises(DataError, match="'explore_rate' of user row 1 is nan"):
        x = np.random.default_rng(0).random((20, 8))
        x[1, 7] = np.nan
        tracker.update(np.arange(20), x)
    with pytest.raises(ConfigError, match="no persona model yet"):
        tracker.personas(np.zeros((1, 8)))
    with pytest.raises(DataError, match="'users' has shape \\(2, 2\\)"):
        tracker.update(np.zeros((2, 2), int), np.zeros((4, 8)))
    # a bad window is refused before anything changes: the next good one reads normally
    good = np.random.default_rng(1).random((30, 8))
    tracker.update(np.arange(30), good)
    with pytest.raises(DataError, match="shape \\(30, 7\\)"):
        tracker.update(np.arange(30), good[:, :7])
    tracker.update(np.arange(30), good)
    assert tracker.windows_read == 2 and len(tracker.sizes) == 2
    with pytest.raises(ConfigError, match="alpha=0"):
        EvolutionTracker(alpha=0)


def test_events_file_round_trip_and_review(tmp_path):
    def change(w, home, truth, rng):
        if w == 3:
            home[np.flatnonzero(truth == 0)[: PER // 2], 3] += 1.0
    tracker = _track(change)
    path = write_events(tracker.events, tracker.names, tmp_path / "events.parquet")
    events, names = read_events(path)
    assert names == tracker.names and [e.id for e in events] == ["w3-0"]
    np.testing.assert_array_equal(events[0].affected_users, tracker.events[0].affected_users)
    assert review_file(path, "w3-0", "approved").status == "approved"
    assert read_events(path)[0][0].status == "approved"          # it persists
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="unknown event id 'w9-1'; known: \\['w3-0'\\]"):
        review_file(path, "w9-1", "rejected")
    with pytest.raises(ConfigError, match="status='maybe'; valid"):
        review_file(path, "w3-0", "maybe")
    assert path.read_bytes() == before                           # nothing lost
    (tmp_path / "other.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a Parquet events file"):
        read_events(tmp_path / "other.parquet")
    with pytest.raises(DataError, match="no events file at"):
        read_events(tmp_path / "missing.parquet")


@pytest.mark.slow
def test_discover_command_finds_the_scheduled_split_and_review_persists(tmp_path):
    """The README's discovery command (a smaller population) finds the split it schedules;
    the README's review line approves it and the report shows the new status."""
    run = subprocess.run(command("experiments.discover persona.concentration=0.5", extra=[
        "users=3000", f"hydra.run.dir={tmp_path}"]), capture_output=True, text=True,
        timeout=300)
    assert run.returncode == 0, run.stderr
    events = pq.read_table(tmp_path / "events.parquet").to_pylist()
    splits = [e for e in events if e["kind"] == "split" and e["window"] == 3]
    assert splits and splits[0]["source"] == ["explorer"] and splits[0]["status"] == "pending"
    report = (tmp_path / "report.md").read_text()
    assert "| split | 3 | explorer → tinkerer | 0.50 | " + splits[0]["id"] in report
    assert (tmp_path / "sizes.png").stat().st_size > 0
    review = subprocess.run(command("review.events=", {
        "<run dir>/events.parquet": tmp_path / "events.parquet", "<id>": splits[0]["id"]},
        [f"hydra.run.dir={tmp_path / 'review'}"]), capture_output=True, text=True,
        timeout=120)
    assert review.returncode == 0, review.stderr
    assert pq.read_table(tmp_path / "events.parquet").to_pylist()[
        events.index(splits[0])]["status"] == "approved"
    assert f"| {splits[0]['id']} | 3 | split |" in (tmp_path / "report.md").read_text()
    assert "approved |" in (tmp_path / "report.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "experiments.discover", "k=1", "users=50",
                          f"hydra.run.dir={tmp_path / 'bad'}"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "k=1 is outside the valid range [2, 49]" in bad.stderr
    few = subprocess.run([sys.executable, "-m", "experiments.discover", "users=8",
                          "k_max=10", f"hydra.run.dir={tmp_path / 'few'}"],
                         capture_output=True, text=True, timeout=120)
    assert few.returncode == 2 and "k_max=10 is not below the" in few.stderr
