"""The serving wing: a bundle in, decisions out — with neither Ray nor torch.

    from agents.serving import load_policy
    policy = load_policy("outputs/<run>/policy")

* ``bundle`` — the bundle format (``model.onnx``, ``policy.json``, ``manifest.json``);
* ``loader`` — ``load_policy`` and the served policy (onnxruntime + NumPy), and
  ``exploration`` — ``Exploration``, how a policy's distribution becomes an action (the
  one vocabulary of every command that acts; what OPE reads back as the behaviour policy);
* ``traffic`` (canary / A-B / shadow splits), ``server`` + ``asgi`` + ``server_logs`` (the
  HTTP server), ``decision_log`` (served decisions as OPE data), ``registry`` (model
  versions, stages, promote, rollback).

``load_policy``, the loader's names and ``Exploration`` are importable from this package
(resolved on first use, so importing ``agents.serving.registry`` does not load onnxruntime).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["load_policy", "ServedPolicy", "ObservationError", "BundleError", "Exploration",
           "EXPLORATION_MODES"]
_HOME = {"Exploration": "exploration", "EXPLORATION_MODES": "exploration"}


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = _HOME.get(name, "loader")
        return getattr(importlib.import_module(f"agents.serving.{module}"), name)
    raise AttributeError(f"module 'agents.serving' has no attribute {name!r}")
