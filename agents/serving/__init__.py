"""The serving wing: a bundle in, decisions out — with neither Ray nor torch.

    from agents.serving import load_policy
    policy = load_policy("outputs/<run>/policy")

* ``bundle`` — the bundle format (``model.onnx``, ``policy.json``, ``manifest.json``);
* ``loader`` — ``load_policy`` and the served policy (onnxruntime + NumPy), and
  ``exploration`` — the sampling maths a served decision uses (what OPE reads back as the
  behaviour policy);
* ``traffic`` (canary / A-B / shadow splits), ``server`` + ``asgi`` + ``server_logs`` (the
  HTTP server), ``decision_log`` (served decisions as OPE data), ``registry`` (model
  versions, stages, promote, rollback).

``load_policy`` and the loader's names are importable from this package (resolved on first
use, so importing ``agents.serving.registry`` does not load onnxruntime).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["load_policy", "ServedPolicy", "ObservationError", "BundleError",
           "EXPLORATION_MODES"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("agents.serving.loader"), name)
    raise AttributeError(f"module 'agents.serving' has no attribute {name!r}")
