"""What the readers refuse or skip: ragged and null columns of logged data and decision
logs (a DataError naming the column and the first bad row), corrupt JSON lines in the middle
of a decision-log segment or ``metrics.jsonl`` (every other row read, the rest reported and
kept)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agents.serving.decision_log import DataWarning, DecisionLog, read_log, record_serving
from experiments.run_files import MetricsLog
from ope.data import DataError, LoggedData
from ope.files import read_logged
from ope.served import from_decision_logs


def _table(**overrides) -> pa.Table:
    """A valid four-row one-step log, with columns replaced by ``overrides``."""
    cols = dict(episode=[0, 1, 2, 3], step=[0, 0, 0, 0],
                observation=[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]],
                action=[0, 1, 0, 1], reward=[1.0, 0.0, 1.0, 0.0],
                propensity=[0.5, 0.5, 0.5, 0.5], done=[True] * 4,
                action_probs=[[0.5, 0.5]] * 4)
    cols.update(overrides)
    return pa.table(cols)


def _write(tmp_path, table: pa.Table):
    path = tmp_path / "logged.parquet"
    pq.write_table(table, path)
    return path


def test_a_valid_table_reads(tmp_path):
    data = read_logged(_write(tmp_path, _table()))
    assert data.obs.shape == (4, 2) and data.n_actions == 2


@pytest.mark.parametrize("meta,message", [
    (b"[1, 2]", "metadata must be a JSON object; got list"),
    (b'{"n_actions": "abc"}', r"metadata n_actions='abc' must be an integer >= 1"),
    (b'{"n_actions": 3.7}', r"metadata n_actions=3.7 must be an integer >= 1"),
    (b"{not json", "metadata is not JSON"),
])
def test_bad_metadata_is_named(tmp_path, meta, message):
    table = _table().replace_schema_metadata({b"personarl": meta})
    with pytest.raises(DataError, match=message):
        read_logged(_write(tmp_path, table))


def test_feedback_for_unknown_decisions_is_counted(tmp_path):
    root = _logs(tmp_path, [_decision(0), _decision(1)],
                 [dict(decision_id="d0", reward=1.0), dict(decision_id="ghost", reward=1.0)])
    data = from_decision_logs(root)
    assert data.n == 1 and data.meta["not_reconstructed"] == {"no_feedback": 1}
    assert data.meta["feedback_without_decision"] == 1


@pytest.mark.parametrize("column,values,message", [
    # 3 + 1 + 2 + 2 values used to be regrouped as 2 + 2 + 2 + 2
    ("observation", [[0.1, 0.2, 0.3], [0.4], [0.5, 0.6], [0.7, 0.8]],
     r"column 'observation' row 1 has 1 values, expected 3 \(as row 0\); 3 row\(s\) differ"),
    ("observation", [[0.1, 0.2], None, [0.5, 0.6], [0.7, 0.8]],
     r"column 'observation' is null at row 1"),
    ("observation", [[0.1, 0.2], [0.3, None], [0.5, 0.6], [0.7, 0.8]],
     r"column 'observation' row 1 holds a null value"),
    ("observation", [["a", "b"]] * 4, r"column 'observation' must hold a list of numbers"),
    ("action", [0, None, 0, 1], r"column 'action' is null at row 1 \(1 null row\(s\)\)"),
    ("reward", [1.0, 0.0, None, None], r"column 'reward' is null at row 2 \(2 null row"),
    ("propensity", [0.5, 0.5, 0.5, None], r"column 'propensity' is null at row 3"),
    ("done", [True, None, True, True], r"column 'done' is null at row 1"),
    ("step", [[0], [0], [0], [0]], r"column 'step' holds lists"),
    ("reward", [True, False, True, False], r"column 'reward' must hold numbers; it holds bool"),
    ("done", [1.0, 0.5, 1.0, 1.0], r"column 'done' row 1 is 0.5; it must be true/false"),
    ("action_probs", [[0.5, 0.5], [1.0], [0.5, 0.5], [0.5, 0.5]],
     r"column 'action_probs' row 1 has 1 values, expected 2"),
    ("context.tone", [[1.0, 2.0], [1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0]],
     r"column 'context.tone' row 1 has 3 values, expected 2"),
    ("context.stress", [0.1, None, 0.2, 0.3], r"column 'context.stress' is null at row 1"),
])
def test_ragged_or_null_columns_are_refused_naming_column_and_row(tmp_path, column, values,
                                                                 message):
    with pytest.raises(DataError, match=message):
        read_logged(_write(tmp_path, _table(**{column: values})))


def test_logged_data_built_in_code_names_the_bad_column():
    good = dict(episode=[0, 1], step=[0, 0], obs=[[0.1], [0.2]], action=[0, 1],
                reward=[1.0, 0.0], propensity=[0.5, 0.5], done=[True, True], n_actions=2)
    LoggedData(**good)
    with pytest.raises(DataError, match=r"column 'action' row 1 is nan; it must be an integer"):
        LoggedData(**{**good, "action": [0.0, np.nan]})
    with pytest.raises(DataError, match=r"column 'observation' row 1 has 2 values, row 0 has 1"):
        LoggedData(**{**good, "obs": [[0.1], [0.2, 0.3]]})
    with pytest.raises(DataError, match=r"column 'observation' row 1 is None"):
        LoggedData(**{**good, "obs": [[0.1], None]})
    with pytest.raises(DataError, match=r"column 'reward' row 0 is None"):
        LoggedData(**{**good, "reward": [None, 1.0]})
    with pytest.raises(DataError, match="column 'action' row 0 is 0.5"):
        LoggedData(**{**good, "action": [0.5, 1.0]})
    with pytest.raises(DataError, match="column 'reward' row 1 is 'a'; every row needs a num"):
        LoggedData(**{**good, "reward": [1, "a"]})
    with pytest.raises(DataError, match="column 'observation' row 1 holds a value that is not"):
        LoggedData(**{**good, "obs": [[0.1], [None]]})
    with pytest.raises(DataError, match=r"column 'episode' row 1 is 1e\+30; it must be an int"):
        LoggedData(**{**good, "episode": [0.0, 1e30]})
    with pytest.raises(DataError, match="column 'done' row 0 is 0.5; it must be true/false"):
        LoggedData(**{**good, "done": [0.5, 1.0]})
    with pytest.raises(DataError, match="column 'reward' holds true/false values"):
        LoggedData(**{**good, "reward": [True, False]})
    with pytest.raises(DataError, match="n_actions=2.5 must be an integer >= 1"):
        LoggedData(**{**good, "n_actions": 2.5})
    with pytest.raises(DataError, match="'observation' has no columns"):
        LoggedData(**{**good, "obs": np.zeros((2, 0))})
    with pytest.raises(DataError, match=r"column 'context.x' row 1 is None"):
        LoggedData(**good, context={"x": [0.1, None]})
    with pytest.raises(DataError, match=r"column 'context.x' is a single value \(3.0\)"):
        LoggedData(**good, context={"x": 3.0})
    two = dict(good, episode=[0, 0], step=[0, 1])
    with pytest.raises(DataError, match="'done' is true at row 0 but episode 0 continues"):
        LoggedData(**{**two, "done": [True, True]})
    LoggedData(**{**two, "done": [False, False]})         # a truncated episode is allowed


def _decision(i: int, **overrides) -> dict:
    row = dict(decision_id=f"d{i}", time=1.0, observation=[0.1, 0.2], action=i % 2,
               propensity=0.5, arm_propensity=0.5, action_probs=[0.5, 0.5], arm="primary",
               version="v1", exploration="epsilon", epsilon=1.0,
               env_id="personarl/AgentRouting-v0", model_sha256="abc")
    row.update(overrides)
    return row


#: what a server serving a horizon-1 router records when it starts (a decision is an episode)
SERVING = dict(time=0.0, mode="single", arms=[dict(
    arm="primary", version="v1", share=1.0, model_sha256="abc",
    env=dict(id="personarl/AgentRouting-v0", config=dict(horizon=1)))])


def _logs(tmp_path, decisions, feedback, serving=SERVING):
    for kind, rows in (("decisions", decisions), ("feedback", feedback)):
        log = DecisionLog(tmp_path, kind)
        log.append(rows)
        log.close()
    record_serving(tmp_path, serving)
    return tmp_path


@pytest.mark.parametrize("decisions,feedback,message", [
    ([_decision(0), _decision(1, observation=[0.1, 0.2, 0.3])],
     [dict(decision_id="d0", reward=1.0), dict(decision_id="d1", reward=0.0)],
     r"decisions: column 'observation' row 1 has 3 values, expected 2"),
    ([_decision(0), _decision(1, propensity=None)],
     [dict(decision_id="d0", reward=1.0)],
     r"decisions: column 'propensity' is null at row 1"),
    ([_decision(0), _decision(1)],
     [dict(decision_id="d0", reward=1.0), dict(decision_id="d1", reward=None)],
     r"feedback: column 'reward' is null at row 1"),
    ([_decision(0), _decision(1, decision_id=None)],
     [dict(decision_id="d0", reward=1.0)],
     r"decisions: column 'decision_id' is null at row 1"),
    ([_decision(0), _decision(1, model_sha256=None)],
     [dict(decision_id="d0", reward=1.0)],
     r"decisions: column 'model_sha256' is null at row 1"),
    ([_decision(0), _decision(1), _decision(1)],
     [dict(decision_id="d0", reward=1.0), dict(decision_id="d1", reward=1.0)],
     r"decisions: decision_id 'd1' is logged 2 times \(first at row 1\)"),
])
def test_decision_logs_with_ragged_or_null_values_are_refused(tmp_path, decisions, feedback,
                                                              message):
    root = _logs(tmp_path, decisions, feedback)
    with pytest.raises(DataError, match=message):
        from_decision_logs(root)


def test_a_corrupt_line_in_a_segment_costs_that_line_only(tmp_path):
    log = DecisionLog(tmp_path, "feedback", segment_rows=100)
    log.append([dict(decision_id=f"d{i}", reward=float(i)) for i in range(2)])
    segment = next((tmp_path / "feedback").glob("segment-*.jsonl"))
    with open(segment, "a") as f:
        f.write('{"decision_id": "bad", "rew\n')                    # corrupt, mid-file
        f.write('{"decision_id": "typed", "reward": "high"}\n')     # wrong type
    log.append([dict(decision_id=f"d{i}", reward=float(i)) for i in range(2, 4)])
    with pytest.warns(DataWarning, match=r"skipped 2 line\(s\).*line 3, 4\); read 4 row"):
        rows = read_log(tmp_path, "feedback").to_pylist()
    assert [r["decision_id"] for r in rows] == ["d0", "d1", "d2", "d3"]
    with pytest.warns(DataWarning):
        log.close()                                                 # rolled into Parquet
    assert [r["decision_id"] for r in read_log(tmp_path, "feedback").to_pylist()] == \
        ["d0", "d1", "d2", "d3"]
    rejected = (tmp_path / "feedback" / "rejected-000001.jsonl").read_text().splitlines()
    assert rejected[0] == '{"decision_id": "bad", "rew' and '"high"' in rejected[1]


def test_metrics_with_a_corrupt_middle_line_keep_every_row(tmp_path, caplog):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for i in range(1, 4):
        log.append({"iteration": i, "env_steps": 100 * i, "losses/approx_kl": float("nan")})
    with open(log.path, "a") as f:
        f.write('{"iteration": 4, "env_st\n')                       # corrupt, not last
    for i in range(5, 7):
        log.append({"iteration": i, "env_steps": 100 * i})
    with caplog.at_level(logging.WARNING):
        assert [r["iteration"] for r in log.rows()] == [1, 2, 3, 5, 6]
    assert "skipped 1 line(s) that are not valid rows (line 4)" in caplog.text
    assert log.rows()[0]["losses/approx_kl"] is None                # strict JSON: null
    assert log.truncate_after(5) == 2                               # row 6 and the bad line
    assert [r["iteration"] for r in log.rows()] == [1, 2, 3, 5]
    kept = (tmp_path / "metrics.jsonl.rejected").read_text()
    assert kept == '{"iteration": 4, "env_st\n'
    json.loads(log.path.read_text().splitlines()[0],
               parse_constant=lambda t: pytest.fail(f"bare {t}"))


def test_segment_values_are_never_converted_and_rejected_lines_never_overwritten(tmp_path):
    folder = tmp_path / "decisions"
    folder.mkdir()
    good = json.dumps(_decision(0))
    bad = [json.dumps(_decision(1, action=1.5)), json.dumps(_decision(2, propensity=True)),
           json.dumps(_decision(3, step=2**70)), '{"decision_id": "d4", "action": 1e999}',
           "[" * 100_000 + "]" * 100_000, b'{"decision_id": "\xff"}'.decode("latin-1")]
    (folder / "segment-000001.jsonl").write_bytes(
        "\n".join([good, *bad]).encode("latin-1") + b"\n")
    with pytest.warns(DataWarning, match=r"skipped 6 line\(s\).*line 2, 3, 4, 5, 6, 7\)"):
        log = DecisionLog(tmp_path, "decisions")              # rolls the stale segment
    assert [r["decision_id"] for r in read_log(tmp_path, "decisions").to_pylist()] == ["d0"]
    kept = (folder / "rejected-000001.jsonl").read_bytes().splitlines()
    assert kept == "\n".join(bad).encode("latin-1").splitlines()   # byte for byte
    (folder / "segment-000002.jsonl").write_text("garbage\n")   # a second stale segment
    log._lock_file.close()                # the writer is killed: the OS frees its lock
    with pytest.warns(DataWarning):
        log = DecisionLog(tmp_path, "decisions")
    log.append([_decision(5)])
    log.close()
    assert (folder / "rejected-000001.jsonl").read_bytes().splitlines() == kept   # untouched
    assert (folder / "rejected-000002.jsonl").read_text() == "garbage\n"
    assert [r["decision_id"] for r in read_log(tmp_path, "decisions").to_pylist()] == \
        ["d0", "d5"]


def test_a_corrupt_decision_log_part_is_a_data_error(tmp_path):
    log = DecisionLog(tmp_path, "feedback")
    log.append([dict(decision_id=f"d{i}", reward=float(i)) for i in range(50)])
    log.close()
    part = next((tmp_path / "feedback").glob("part-*.parquet"))
    raw = bytearray(part.read_bytes())
    raw[len(raw) // 3] ^= 0x01                                  # one flipped bit in a page
    part.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="is not a readable decision-log part"):
        read_log(tmp_path, "feedback")


def test_metrics_rows_need_integer_iteration_and_env_steps(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.path.write_text('{"iteration": 1, "env_steps": 10}\n{"iteration": 2.0, "env_steps": 20}\n'
                        '{"iteration": "3", "env_steps": 30}\n{}\n'
                        '{"iteration": 4, "env_steps": 40}\n')
    assert [r["iteration"] for r in log.rows()] == [1, 4]
    assert log.truncate_after(4) == 3
    assert (tmp_path / "metrics.jsonl.rejected").read_text().splitlines() == [
        '{"iteration": 2.0, "env_steps": 20}', '{"iteration": "3", "env_steps": 30}', "{}"]


def test_writing_onto_a_directory_fails_and_leaves_nothing(tmp_path):
    from ope.files import write_logged

    data = read_logged(_write(tmp_path, _table()))
    target = tmp_path / "taken"
    target.mkdir()
    with pytest.raises(OSError):
        write_logged(data, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logged.parquet", "taken"]


def test_values_arrow_cannot_store_cost_their_line_only(tmp_path):
    folder = tmp_path / "decisions"
    folder.mkdir()
    bad = [json.dumps(_decision(1, time=2**70)), json.dumps(_decision(2, observation=[1e300, 0])),
           json.dumps(_decision(3, arm="\ud800"))]
    (folder / "segment-000001.jsonl").write_text(
        "\n".join([json.dumps(_decision(0)), *bad, json.dumps(_decision(4))]) + "\n")
    with pytest.warns(DataWarning, match=r"skipped 3 line\(s\).*line 2, 3, 4\)"):
        rows = read_log(tmp_path, "decisions").to_pylist()
    assert [r["decision_id"] for r in rows] == ["d0", "d4"]
    with pytest.warns(DataWarning):
        DecisionLog(tmp_path, "decisions").close()                # the roll keeps them
    assert (folder / "rejected-000001.jsonl").read_text().splitlines() == bad


def test_a_decision_log_error_names_the_decision(tmp_path):
    root = _logs(tmp_path, [_decision(i) for i in range(6)] + [_decision(6, propensity=0.9)],
                 [dict(decision_id=f"d{i}", reward=1.0) for i in (1, 3, 5, 6)])
    with pytest.raises(DataError, match=r"disagrees with 'action_probs' at row 3 \('d6'\)"):
        from_decision_logs(root)
