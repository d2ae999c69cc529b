"""A client of the policy server, and the env whose observations it expects.

    from agents.serving.client import PolicyClient
    with PolicyClient("http://127.0.0.1:8000") as client:
        env = client.env()                       # gym.make(id, **config) of the served bundle
        obs, _ = env.reset(seed=0)
        d = client.act(obs, user_id="u1", episode_id="u1-0", step=0)
        obs, reward, terminated, truncated, _ = env.step(d["action"])
        client.feedback(d["decision_id"], reward, done=terminated or truncated)

An observation for ``/v1/act`` is the env's own raw observation (a list of ``obs_dim``
floats within the bundle's bounds), from the env the bundle was trained on with the config
it records (``policy.json``: ``env.id``, ``env.config``): ``served_env`` builds it.
``episode_id`` and ``step`` (0, 1, … within the episode) let ``experiments.evaluate`` rebuild
episodes from the decision logs; ``user_id`` keeps a user on one arm of a traffic split.
Feedback carries the reward and ``done`` (the episode ended: terminated or truncated).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from personarl.errors import ConfigError, check_api_key

__all__ = ["PolicyClient", "served_env"]

# httpx logs every request at INFO; a client sending thousands would drown the run's log
logging.getLogger("httpx").setLevel(logging.WARNING)


def served_env(spec: Mapping[str, Any], **overrides: Any) -> Any:
    """The Gymnasium env a served bundle's observations come from: ``gym.make(env.id,
    **env.config)`` of its ``policy.json`` (or of ``GET /v1/policy``'s ``bundles.primary``),
    with ``overrides`` (e.g. ``info_level="none"``) on top.

    Raises:
        ConfigError: ``spec`` has no ``env`` with an ``id``.
    """
    import gymnasium as gym

    import envs  # noqa: F401 — registers the personarl/ ids

    env = spec.get("env") if isinstance(spec, Mapping) else None
    if not isinstance(env, Mapping) or not isinstance(env.get("id"), str):
        raise ConfigError(f"a policy spec needs env.id (policy.json or GET /v1/policy's "
                          f"bundles.primary); got {str(spec)[:120]}")
    return gym.make(env["id"], **{**(env.get("config") or {}), **overrides})


class PolicyClient:
    """Calls a running server (``experiments.serve``) over HTTP with a kept-alive
    connection (``httpx``).

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``X-API-Key`` when the server requires one.
        timeout: seconds per request.

    Raises (every method):
        ConfigError: the server cannot be reached, or answers with an error (its status
            and message).
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 10.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        check_api_key(api_key, "api_key")          # what the server requires of its key
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        try:
            r = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ConfigError(f"{self.url}{path}: cannot reach the server ({exc})") from None
        if r.status_code != 200:
            raise ConfigError(f"{self.url}{path} answered {r.status_code}: {r.text[:300]}")
        try:
            return r.json()
        except ValueError:
            raise ConfigError(f"{self.url}{path} answered 200 with something that is not "
                              f"JSON ({r.text[:80]!r}): is this a PersonaRL server?") from None

    def policy(self) -> dict[str, Any]:
        """``GET /v1/policy``: the served bundles' specs and the traffic split."""
        answer = self._call("GET", "/v1/policy")
        if not isinstance(answer, dict) or not isinstance(answer.get("bundles"), dict) or \
                not isinstance(answer["bundles"].get("primary"), dict):
            raise ConfigError(f"{self.url}/v1/policy answered without bundles.primary "
                              f"({str(answer)[:80]}): is this a PersonaRL server?")
        return answer

    def env(self, **overrides: Any) -> Any:
        """The env of the primary bundle (``served_env``)."""
        return served_env(self.policy()["bundles"]["primary"], **overrides)

    def act(self, observation: Sequence[float] | np.ndarray, user_id: str | None = None,
            episode_id: str | None = None, step: int | None = None,
            group: str | None = None) -> dict[str, Any]:
        """``POST /v1/act``: a decision (``decision_id``, ``action``, ``action_name``,
        ``propensity``, ``arm``, ``version``) for one observation (``group``: the user's
        demographic group, logged)."""
        body: dict[str, Any] = {"observation": np.asarray(observation, float).tolist()}
        for key, value in (("user_id", user_id), ("episode_id", episode_id),
                           ("step", None if step is None else int(step)), ("group", group)):
            if value is not None:
                body[key] = value
        return self._call("POST", "/v1/act", body)

    def feedback(self, decision_id: str, reward: float, done: bool = False,
                 signals: Mapping[str, float] | None = None) -> dict[str, Any]:
        """``POST /v1/feedback``: the reward (and ``done``, signals) of a served decision;
        safe to retry (the same feedback again is acknowledged, not recorded twice)."""
        values = {"reward": reward, **dict(signals or {})}
        bad = {k: v for k, v in values.items() if not np.isfinite(float(v))}
        if bad:
            raise ConfigError(f"feedback for {decision_id}: {bad} must be finite numbers")
        return self._call("POST", "/v1/feedback", {
            "decision_id": decision_id, "reward": float(reward), "done": bool(done),
            "signals": {k: float(v) for k, v in (signals or {}).items()}})
