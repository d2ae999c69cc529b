"""Simulated users sent to a running policy server over HTTP, with their feedback.

    python -m experiments.serve bundle=outputs/<date>/<time>/policy exploration.mode=epsilon \\
        exploration.epsilon=0.2 port=8000 &
    python -m experiments.simulate_users url=http://127.0.0.1:8000 episodes=300
    python -m experiments.evaluate data=outputs/<serve run>/decision_logs policies=[greedy,random]

Each simulated user is one episode of the served bundle's env (``policy.json``: its id and
config, ``agents.serving.client.served_env``): every decision is asked of the server
(``POST /v1/act`` with the user's ``user_id``, ``episode_id`` and ``step``), the action is
played in the simulator, and its reward goes back as feedback (``done`` on the episode's
last decision). The server's decision logs then hold whole episodes that
``experiments.evaluate`` rebuilds. ``PERSONARL_API_KEY`` is sent when set. Writes
``users.json`` (episodes, decisions, mean return) into the Hydra run directory. Mistakes
(an unreachable server, an error answer) exit with status 2 and a message.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from experiments.cli import check_command_line, run_app
from experiments.schema import register_configs
from personarl import jsonio
from personarl.errors import check_int
from personarl.seeds import MAX_EPISODES, MAX_SEED

__all__ = ["simulate_users", "main"]

register_configs()


def simulate_users(url: str, episodes: int, seed: int = 0, api_key: str | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Run ``episodes`` simulated users against the server at ``url``.

    Users are ``user-<seed>-<i>`` (so a seed gives the same users, on the same arms of a
    traffic split) with episode ids ``user-<seed>-<i>/<run>``, ``<run>`` new for every call
    (a second run into the same logs adds episodes, it never extends the first run's); the
    env is reset with ``seed`` once (the server's draws are its own).

    Returns:
        ``{"url", "env_id", "episodes", "decisions", "mean_return"}``.

    Raises:
        ConfigError: a bad ``episodes``/``seed``, an unreachable server or an error answer.
    """
    from tqdm import tqdm

    from agents.serving.client import PolicyClient, served_env
    from envs.registration import describe

    check_int("episodes", episodes, 1, MAX_EPISODES)
    check_int("seed", seed, 0, MAX_SEED - 1)
    run = secrets.token_hex(4)
    returns = []
    decisions = 0
    with PolicyClient(url, api_key=api_key) as client:
        spec = client.policy()["bundles"]["primary"]
        env = served_env(spec, info_level="full")      # the users' groups, sent along
        names = describe(spec["env"]["id"], spec["env"].get("config") or {}).sampler.group_names
        obs, info = env.reset(seed=seed)
        for i in tqdm(range(episodes), desc="simulated users", unit="user",
                      disable=None if progress else True, leave=False):
            user = f"user-{seed}-{i}"
            group = names[int(info["group"])] if "group" in info else None
            total, step, done = 0.0, 0, False
            while not done:
                d = client.act(obs, user_id=user, episode_id=f"{user}/{run}", step=step,
                               group=group)
                obs, reward, terminated, truncated, _ = env.step(d["action"])
                done = bool(terminated or truncated)
                client.feedback(d["decision_id"], float(reward), done=done)
                total += float(reward)
                step += 1
            decisions += step
            returns.append(total)
            obs, info = env.reset()
        env.close()
    return dict(url=url, env_id=spec["env"]["id"], episodes=episodes, decisions=decisions,
                mean_return=float(np.mean(returns)))


@hydra.main(version_base="1.3", config_path="../configs", config_name="simulate_users")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)

    def body() -> dict[str, Any]:
        summary = simulate_users(cfg.url, cfg.episodes, cfg.seed,
                               os.environ.get("PERSONARL_API_KEY"), progress=cfg.progress)
        (run_dir / "users.json").write_text(jsonio.dumps(summary, indent=2))
        return summary

    try:
        s = run_app("simulate users", cfg, body, run_dir)
    except KeyboardInterrupt:                    # Ctrl-C: what was sent is in the logs
        print("simulate users: interrupted; the decisions sent so far are in the server's "
              "logs (episodes cut short count as not finished)", file=sys.stderr)
        sys.exit(130)
    print(f"{s['episodes']:,} simulated users, {s['decisions']:,} decisions sent to {s['url']} "
          f"({s['env_id']}); mean return {s['mean_return']:.4f}")


if __name__ == "__main__":
    check_command_line("simulate_users", "simulate users")
    main()
