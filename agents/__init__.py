"""Policies: baselines, evaluation, the RLlib/SB3/online learners, export to policy bundles,
the serving loader (``agents.serving``), traffic splits, the HTTP server, decision logs and
the registry.

Imports are lazy so ``import agents`` stays cheap and never pulls in Ray or torch (the
serving loader needs only NumPy and onnxruntime).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Policy", "RandomPolicy", "GreedyRouter", "PersonaRouter", "MyopicOracle",
           "baselines_for", "make_policy", "run_episodes", "train_online"]

_WHERE = {name: "agents.baselines" for name in
          ("Policy", "RandomPolicy", "GreedyRouter", "PersonaRouter", "MyopicOracle")}
_WHERE.update(baselines_for="agents.factory", make_policy="agents.factory",
              run_episodes="agents.evaluation", train_online="agents.evaluation")


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
