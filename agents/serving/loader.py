"""The thin serving loader: a policy bundle (``agents.serving.bundle``) on onnxruntime and NumPy.

    from agents.serving.loader import load_policy

    policy = load_policy("outputs/2026-11-24/07-11-05/policy")
    policy.act(obs)                               # greedy action for one observation
    policy.act_batch(observations)                # greedy actions for a (N, obs_dim) batch
    policy.act(obs, exploration="sample")         # drawn from the policy's distribution
    policy.action_probs(observations)             # discrete: (N, n_actions)
    policy.gaussian(observations)                 # continuous: mean, log_std

This module imports only NumPy, onnxruntime, onnx (to inspect a model) and the standard
library (no Ray, no torch), so ``pip install .[serve]`` is enough to use it. Every
observation is checked for shape, dtype, finite values and the observation space's bounds
before the model sees it, and the model's outputs for being finite. Loading verifies the
bundle as a whole (``agents.serving.bundle.read_bundle``: a manifest of every file's SHA-256, files
size-bounded before reading) and loads the very bytes it hashed; a model with external
data, or whose outputs disagree with ``policy.json``, is refused.

``exploration=`` takes the one vocabulary of every command that acts
(``agents.serving.exploration``): ``"greedy"`` (default), ``"sample"``, or an
``Exploration`` (``Exploration("sample", temperature=2)``, ``Exploration("epsilon",
epsilon=0.1)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnxruntime as ort

from agents.serving.bundle import DEFAULT_MAX_FILE_BYTES, MODEL_FILE, BundleError, read_bundle
from agents.serving.exploration import GREEDY, Exploration
from personarl.stats import softmax
from personarl.errors import PersonaRLError

__all__ = ["load_policy", "ServedPolicy", "ObservationError", "ModelOutputError",
           "BundleError"]
#: observations may exceed the declared bounds by this much (float32 rounding)
_BOUNDS_SLACK = 1e-5


class ObservationError(PersonaRLError, ValueError):
    """An observation the policy cannot take: wrong shape or dtype, NaN/inf, out of bounds."""


class ModelOutputError(RuntimeError):
    """The model produced NaN or infinite outputs for a valid observation (the bundle's
    fault, not the caller's)."""


def load_policy(path: str | Path, *, seed: int | None = None,
                max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                expected: Mapping[str, str] | None = None) -> "ServedPolicy":
    """Load the bundle in directory ``path``.

    Args:
        path: a bundle directory (``model.onnx``, ``policy.json``, ``manifest.json``).
        seed: seeds the generator of actions drawn under an exploring setting.
        max_file_bytes: the largest bundle file read (checked before reading).
        expected: ``{file name: SHA-256}`` the files must still have (a registry's record).

    Raises:
        BundleError: everything ``agents.serving.bundle.read_bundle`` refuses; a model with
            external data (it would be read from outside the bundle); a model onnxruntime cannot
            load; inputs/outputs that disagree with ``policy.json`` — names, or output widths
            that differ from the action count, checked by running the model once.
    """
    files = read_bundle(path, max_file_bytes=max_file_bytes, expected=expected)
    model_path = files.path / MODEL_FILE
    _refuse_external_data(files.model, model_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1          # tiny MLPs: threads cost more than they save
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(files.model, sess_options=options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:                   # onnxruntime raises its own exception types
        raise BundleError(f"onnxruntime cannot load {model_path}: {exc}") from None
    return ServedPolicy(files.path, files.spec, session, np.random.default_rng(seed),
                        files.digests)


def _refuse_external_data(model: bytes, path: Path) -> None:
    """Refuse an ONNX model any of whose tensors keeps its data outside the model bytes
    (onnxruntime would read it from the working directory, or from a memory address)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        proto = onnx.load_model_from_string(model)
    except Exception as exc:                   # protobuf's DecodeError and friends
        raise BundleError(f"{path} is not an ONNX model: {exc}") from None

    def tensors(graph: Any) -> Any:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for node in graph.node:
            yield from node_tensors(node)

    def node_tensors(node: Any) -> Any:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)
            if attr.HasField("g"):
                yield from tensors(attr.g)
            for g in attr.graphs:
                yield from tensors(g)

    everything = list(tensors(proto.graph))
    for function in proto.functions:
        for node in function.node:
            everything += list(node_tensors(node))
    for tensor in everything:
        if uses_external_data(tensor) or len(tensor.external_data):
            raise BundleError(f"{path}: tensor {tensor.name!r} keeps its data outside the "
                              "model (ONNX external data); a bundle's model must be one "
                              "self-contained file")


class ServedPolicy:
    """A loaded bundle. Build it with ``load_policy``.

    Attributes:
        spec: the parsed ``policy.json``.
        discrete: categorical (``True``) or diagonal-Gaussian policy.
        obs_dim: length of one observation.
        action_names: one name per discrete action / per continuous action dimension.
        env_id: the env the policy was trained on.
        name: ``"bundle:<path>"``.
    """

    #: the policy interface (``agents.baselines.policies.Policy``): a served policy acts on
    #: observations only and does not learn
    privileged = False
    learning = False

    def __init__(self, path: Path, spec: dict[str, Any], session: ort.InferenceSession,
                 rng: np.random.Generator, digests: Mapping[str, str]) -> None:
        self.path, self.spec, self._session, self.rng = path, spec, session, rng
        self.digests = dict(digests)
        self.discrete = spec["distribution"] == "categorical"
        obs, act = spec["observation"], spec["action"]
        self.obs_dim = int(obs["dim"])
        self._low = np.asarray(obs["low"], dtype=np.float32) - _BOUNDS_SLACK
        self._high = np.asarray(obs["high"], dtype=np.float32) + _BOUNDS_SLACK
        # one scalar range for every feature (ours: [0, 1]) is checked with min/max alone
        self._uniform = bool(self._low.min() == self._low.max()
                             and self._high.min() == self._high.max())
        self._lo, self._hi = float(self._low[0]), float(self._high[0])
        self.action_names: list[str] = list(act["names"])
        self.env_id: str = spec["env"]["id"]
        self.name = f"bundle:{path}"
        if self.discrete:
            self.n_actions = int(act["n"])
            self._outputs = ["logits"]
        else:
            self.action_dim = int(act["dim"])
            self.action_low = np.asarray(act["low"], dtype=np.float32)
            self.action_high = np.asarray(act["high"], dtype=np.float32)
            self._outputs = ["mean", "log_std"]
        self._check_graph()

    def _check_graph(self) -> None:
        """Refuse a model whose input or outputs disagree with ``policy.json``: one input
        ``obs`` of shape ``(batch, obs_dim)`` with a free batch size, the distribution's
        outputs — and, running it on two observations of the space, outputs of shape
        ``(2, width)``, float32 and finite."""
        inputs = self._session.get_inputs()
        names = [o.name for o in self._session.get_outputs()]
        shape = list(inputs[0].shape or []) if len(inputs) == 1 else []
        if len(inputs) != 1 or inputs[0].name != "obs" or len(shape) != 2 \
                or shape[1] != self.obs_dim or isinstance(shape[0], int):
            raise BundleError(f"{self.path / MODEL_FILE} takes "
                              f"{[(i.name, i.shape) for i in inputs]}; policy.json declares "
                              f"one input 'obs' of shape [batch, {self.obs_dim}] with any "
                              "batch size")
        if names != self._outputs:
            raise BundleError(f"{self.path / MODEL_FILE} outputs {names}; a "
                              f"{self.spec['distribution']} policy outputs {self._outputs}")
        # the space's middle and its lower corner: a mismatch would otherwise show only on
        # a request
        probe = np.stack([(self._low + self._high) / 2, self._low + _BOUNDS_SLACK]
                         ).astype(np.float32)
        width = self.n_actions if self.discrete else self.action_dim
        try:
            out = self._session.run(self._outputs, {"obs": probe})
        except Exception as exc:               # onnxruntime's own exception types
            raise BundleError(f"{self.path / MODEL_FILE} fails on observations of the "
                              f"declared shape (2, {self.obs_dim}): {exc}") from None
        for name, value in zip(self._outputs, out):
            if value.shape != (2, width) or value.dtype != np.float32:
                raise BundleError(
                    f"{self.path / MODEL_FILE} output {name!r} has shape "
                    f"{list(value.shape)} ({value.dtype}) for 2 observations; policy.json "
                    f"declares {width} {'actions' if self.discrete else 'action dimensions'}"
                    f" ({self.action_names[:6]}{'...' if width > 6 else ''}), so it must be "
                    f"[2, {width}] float32")
            if not np.isfinite(value).all():
                raise BundleError(f"{self.path / MODEL_FILE} output {name!r} is NaN or "
                                  "infinite on observations inside the space")

    # ------------------------------------------------------------------ checks
    def check_obs(self, obs: Any) -> tuple[np.ndarray, bool]:
        """``(batch float32 (N, obs_dim), single)``: ``obs`` as the model takes it, and
        whether it was one observation. Raises ``ObservationError`` naming the problem."""
        if isinstance(obs, np.ndarray) and obs.dtype == np.float32:
            x = obs                                   # the common case: no conversion
        else:
            try:
                x = np.asarray(obs)
            except (TypeError, ValueError) as exc:     # ragged nested lists
                raise ObservationError(f"observation is not a rectangular array of "
                                       f"numbers: {exc}") from None
            if x.dtype.kind not in "fiu":
                raise ObservationError(f"observation must hold numbers (float or int), got "
                                       f"dtype {x.dtype}")
        single = x.ndim == 1
        if single:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.obs_dim or x.shape[0] == 0:
            raise ObservationError(
                f"observation has shape {np.shape(obs)}; this policy takes ({self.obs_dim},) "
                f"or (batch, {self.obs_dim}) with batch >= 1 (env {self.env_id})")
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
        if not self._valid(x):
            self._refuse(x)
        return x, single

    def _valid(self, x: np.ndarray) -> bool:
        """Every value finite and within the bounds (NaN fails every comparison)."""
        if self._uniform:
            ok = bool(self._lo <= x.min() and x.max() <= self._hi)
        else:
            ok = bool(((x >= self._low) & (x <= self._high)).all())
        return ok                                     # bounds are finite (check_spec)

    def _refuse(self, x: np.ndarray) -> None:
        """Raise the ``ObservationError`` that says what is wrong with ``x``."""
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            raise ObservationError(f"observation has NaN or infinite values (rows "
                                   f"{np.flatnonzero(~finite)[:5].tolist()})")
        r, c = np.argwhere((x < self._low) | (x > self._high))[0]
        raise ObservationError(
            f"observation[{r}, {c}] = {float(x[r, c])!r} is outside the observation space's "
            f"bounds [{self._low[c] + _BOUNDS_SLACK:g}, {self._high[c] - _BOUNDS_SLACK:g}] "
            f"(column block {self._block(c)!r})")

    def _block(self, column: int) -> str:
        for name, (start, stop) in self.spec["observation"].get("columns", {}).items():
            if start <= column < stop:
                return name
        return "?"

    # ------------------------------------------------------------------ model outputs
    def _run(self, obs: Any) -> tuple[list[np.ndarray], bool]:
        x, single = self.check_obs(obs)
        out = self._session.run(self._outputs, {"obs": x})
        if not all(np.isfinite(v).all() for v in out):
            raise ModelOutputError(f"{self.path / MODEL_FILE} produced NaN or infinite "
                                   f"{self._outputs} for a valid observation; no action "
                                   "taken")
        return out, single

    def logits(self, obs: Any) -> np.ndarray:
        """Discrete: the categorical's logits, ``(n_actions,)`` or ``(N, n_actions)``."""
        self._require(True, "logits")
        (z,), single = self._run(obs)
        return z[0] if single else z

    def action_probs(self, obs: Any) -> np.ndarray:
        """Discrete: action probabilities, ``(n_actions,)`` or ``(N, n_actions)``."""
        self._require(True, "action_probs")
        (z,), single = self._run(obs)
        p = softmax(z)
        return p[0] if single else p

    def gaussian(self, obs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Continuous: the Gaussian's ``(mean, log_std)`` before clipping to the bounds."""
        self._require(False, "gaussian")
        (mean, log_std), single = self._run(obs)
        return (mean[0], log_std[0]) if single else (mean, log_std)

    def distribution(self, obs: Any) -> dict[str, np.ndarray]:
        """The distribution's parameters by output name (``logits`` or ``mean``/``log_std``)."""
        out, single = self._run(obs)
        return {name: (v[0] if single else v) for name, v in zip(self._outputs, out)}

    def _require(self, discrete: bool, what: str) -> None:
        if self.discrete != discrete:
            kind = "discrete" if self.discrete else "continuous"
            raise TypeError(f"{what}() is for {'discrete' if discrete else 'continuous'} "
                            f"policies; this one is {kind} ({self.spec['distribution']})")

    # ------------------------------------------------------------------ acting
    def act(self, obs: Any, info: Any = None, *,
            exploration: Exploration | str = GREEDY) -> Any:
        """The action for one observation (an ``int``, or a float32 vector) — or for a
        batch when ``obs`` is 2-D — under ``exploration`` (greedy: the most probable
        action / the Gaussian's mean). Continuous actions are clipped to the action bounds.
        ``info`` is ignored (a served policy sees observations only; the argument makes it
        an ``agents.baselines.policies.Policy``).

        Raises:
            ObservationError: a bad observation. ConfigError: a bad exploration setting.
        """
        out, single = self._run(obs)
        if single and exploration is GREEDY and self.discrete:
            return int(out[0][0].argmax())            # the serving hot path, kept short
        a = self._choose(out, Exploration.of(exploration))
        if single:
            return int(a[0]) if self.discrete else a[0]
        return a

    def act_batch(self, obs: Any, *, exploration: Exploration | str = GREEDY) -> np.ndarray:
        """Actions for a ``(N, obs_dim)`` batch: ``(N,)`` int64 or ``(N, action_dim)``."""
        if np.ndim(obs) != 2:
            raise ObservationError(f"act_batch takes a (batch, {self.obs_dim}) array; got "
                                   f"shape {np.shape(obs)} (use act() for one observation)")
        out, _ = self._run(obs)
        return self._choose(out, Exploration.of(exploration))

    def _choose(self, out: list[np.ndarray], exploration: Exploration) -> np.ndarray:
        exploration.check_action_space(self.discrete)
        if self.discrete:
            (z,) = out
            if exploration.greedy:
                return z.argmax(axis=1)
            return exploration.choose(exploration.probs(softmax(z)), self.rng)
        mean, log_std = out
        if exploration.greedy:
            a = mean
        else:
            std = np.exp(exploration.log_std(log_std))     # float32 stays float32
            a = mean + std * self.rng.standard_normal(mean.shape, dtype=np.float32)
        return np.clip(a, self.action_low, self.action_high)

    def update(self, obs: Any, action: Any, reward: Any) -> None:
        """Nothing: a served policy does not learn (the interface's ``update``)."""
        return None

    def describe(self) -> dict[str, Any]:
        """What a client needs to know: env, spaces, distribution, source, checksums."""
        keys = ("format_version", "env", "observation", "action", "distribution", "source",
                "config_hash", "training", "model_sha256")
        return dict({k: self.spec.get(k) for k in keys}, files=self.digests)
