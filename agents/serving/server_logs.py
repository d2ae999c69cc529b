"""What the HTTP server remembers across restarts, read back from its decision logs.

The server (``agents.serving.server``) accepts feedback for the last ``feedback_window`` decisions
and records one feedback per decision: the same feedback again is a duplicate (a client's
retry), a different one a conflict. Both facts must survive a restart, so they are rebuilt
from the logs when the server starts — the logs are the only state.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Optional

from agents.serving.decision_log import DecisionLog, read_log
from personarl import jsonio
from personarl.errors import ConfigError

__all__ = ["ServerLogs", "feedback_fingerprint"]


def feedback_fingerprint(reward: float, done: bool, signals: str) -> str:
    """One feedback's content, comparable across restarts: the reward (``-0.0`` is
    ``0.0``), ``done`` and the signals with sorted keys (as logged, if a logged row's
    signals are not JSON)."""
    try:
        parsed: Any = json.loads(signals)
    except (ValueError, RecursionError):
        parsed = signals
    reward = reward + 0.0 if isinstance(reward, float) else reward
    return jsonio.dumps([reward, bool(done), parsed], sort_keys=True)


class ServerLogs:
    """The server's three decision logs and what it must remember across restarts: the
    last ``feedback_window`` decision ids and, for each, the feedback already recorded.

    Raises:
        LogInUseError: another server writes to ``log_dir``.
    """

    def __init__(self, settings: Any, on_roll: Any = None) -> None:
        """``settings``: the server's (``log_dir``, ``segment_rows``, ``feedback_window``);
        ``on_roll(kind, seconds)``: called after each Parquet roll of a log."""
        self.logs: dict[str, DecisionLog] = {}
        self.window = settings.feedback_window
        #: decision id -> fingerprint of its recorded feedback (None: none yet)
        self.recent: OrderedDict[str, Optional[str]] = OrderedDict()
        try:
            for kind in ("decisions", "feedback", "shadow"):
                self.logs[kind] = DecisionLog(settings.log_dir, kind, settings.segment_rows,
                                              on_roll=None if on_roll is None
                                              else (lambda s, k=kind: on_roll(k, s)))
            self._read_back(settings.log_dir)
        except OSError as exc:
            self.close()
            raise ConfigError(f"log_dir={str(settings.log_dir)!r} cannot hold the decision "
                              f"logs: {exc}") from None
        except BaseException:
            self.close()
            raise
        self.open = True

    def _read_back(self, root: Any) -> None:
        ids = read_log(root, "decisions", ["decision_id"]).column(0).to_pylist()
        self.recent.update(OrderedDict.fromkeys(ids[-self.window:]))
        feedback = read_log(root, "feedback", ["decision_id", "reward", "done", "signals"])
        for row in feedback.to_pylist():
            did = row["decision_id"]
            if did in self.recent and self.recent[did] is None:
                self.recent[did] = feedback_fingerprint(row["reward"], row["done"],
                                                        row["signals"] or "{}")

    def remember(self, ids: list[str]) -> None:
        for did in ids:
            self.recent[did] = None
        while len(self.recent) > self.window:
            self.recent.popitem(last=False)

    def error(self) -> Optional[str]:
        """What is wrong with the logs (closed, a failed write or roll), or ``None``."""
        if not self.open:
            return "decision logs closed"
        problems = [f"{kind}: {log.error}" for kind, log in self.logs.items() if log.error]
        return "; ".join(problems) or None

    def rolling(self) -> bool:
        return any(log.rolling for log in self.logs.values())

    def close(self) -> None:
        """Close every log (each rolls what it holds); the first failure is raised after
        all were tried."""
        self.open = False
        failure = None
        for log in self.logs.values():
            try:
                log.close()
            except Exception as exc:               # noqa: BLE001 — re-raised below
                failure = failure or exc
        if failure is not None:
            raise failure
