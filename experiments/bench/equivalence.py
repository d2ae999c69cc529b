"""Did a change to an env change what it simulates? Distribution statistics and their tests.

A change that draws random numbers in another order (users pooled, noise drawn per step
instead of per user, a compiled kernel) changes every seeded trajectory; what must not
change is the distribution. ``gather`` measures an env under fixed policies — uniformly
random actions and each constant action — on the first episode of many users:

* the mean return of each policy (and, for the random policy, the mean episode length);
* under the random policy, for each action ``a`` and each per-step signal the env reports
  in ``info`` after a step (``step_info``: satisfaction, thumbs, signals, compliance,
  false interventions, opt-outs, …), the mean of the signal over the steps that took
  ``a``. Steps of one episode are not independent (one user: a bot answers every step
  alike), so the variance of that mean is the cluster-robust one with the episode as the
  cluster — a ratio estimator's linearisation, ``Σ_e (S_e − μ N_e)² / (Σ N_e)²`` times
  ``E / (E − 1)`` over ``E`` episodes with ``N_e`` such steps summing to ``S_e`` (Cameron &
  Miller 2015, "A Practitioner's Guide to Cluster-Robust Inference"). Each statistic is
  stored as ``{"n", "mean", "var"}`` with ``var / n`` the variance of the mean, so returns,
  lengths and signal means are tested alike.

``compare`` tests each statistic of a new measurement against a reference one with Welch's
two-sample z-test (the samples are large, so the normal reference distribution is exact
enough) and Holm's step-down correction at family-wise ``alpha`` (Holm 1979,
``statsmodels.stats.multitest.multipletests``), and reports the smallest shift each test
detects with power 0.8 at the Holm threshold of its rank one (the least favourable): a
test that could not see a 1% shift in mean return or a 0.01 shift in a rate says so.

    python -m experiments.bench equivalence [--episodes 400000] [--out benchmarks/equivalence.json]
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

import envs
from envs.creator import create_env
from envs.rollout import first_episodes
from personarl.seeds import generator

__all__ = ["gather", "compare", "detectable_shift"]


def _moments(x: np.ndarray) -> dict[str, float] | None:
    """Size, mean and variance (``None`` below two values: no variance to test with)."""
    if x.size < 2:
        return None
    return {"n": int(x.size), "mean": float(x.mean()), "var": float(x.var(ddof=1))}


class _ClusteredMeans:
    """Per-action means of per-step signals with the episode as the cluster: running sums
    of each episode's ``S_e`` (the signal summed over its steps that took the action) and
    ``N_e`` (how many there were), enough for the mean and its cluster-robust variance."""

    def __init__(self, k: int) -> None:
        self.k, self.episodes = k, 0
        self.sums: dict[str, np.ndarray] = {}     # key -> (5, k): ΣS, ΣN, ΣS², ΣSN, ΣN²

    def add(self, s: np.ndarray, n: np.ndarray, key: str) -> None:
        """Episodes' ``S_e`` and ``N_e`` ``(episodes, k)`` of one signal."""
        total = self.sums.setdefault(key, np.zeros((5, self.k)))
        total += [s.sum(0), n.sum(0), (s * s).sum(0), (s * n).sum(0), (n * n).sum(0)]

    def moments(self) -> dict[str, dict[str, float]]:
        out = {}
        E = self.episodes
        for key, (s, n, ss, sn, nn) in self.sums.items():
            for a in range(self.k):
                if n[a] < 2 or E < 2:
                    continue
                mean = s[a] / n[a]
                residual = max(ss[a] - 2 * mean * sn[a] + mean * mean * nn[a], 0.0)
                out[f"{key}/action={a}"] = {"n": int(n[a]), "mean": float(mean),
                                            "var": float(residual / n[a] * E / (E - 1))}
        return out


def _run(env_id: str, kwargs: Mapping[str, Any], policy: int | None, episodes: int,
         seed: int, batch: int) -> tuple[np.ndarray, np.ndarray, _ClusteredMeans | None]:
    """Returns, lengths and (random policy) per-action step-signal means of ``episodes``
    first episodes on the ``evaluation_users`` of ``seed`` (the same users for every
    policy). The per-step signals are read from the core (``step_info``, which every core
    sets), so the env need not build the whole ground truth."""
    def make(b: int) -> Any:
        return create_env(env_id, {**kwargs, "num_envs": b, "info_level": "none"})

    returns, lengths = [], []
    means = None
    for chunk, lanes in enumerate(first_episodes(make, episodes, seed, "evaluation_users",
                                                 batch)):
        core, b = lanes.env.unwrapped._core, lanes.size
        k = lanes.env.single_action_space.n
        rng = generator(seed, "evaluation_actions", chunk)
        act = ((lambda obs, info: rng.integers(0, k, b)) if policy is None
               else (lambda obs, info: np.full(b, policy)))
        ret, length = np.zeros(b), np.zeros(b, dtype=np.int64)
        counts, sums = np.zeros((b, k)), {}
        for t in lanes.run(act):
            ret += t.live * t.reward
            length += t.live
            if policy is None:
                took = t.live[:, None] & (t.action[:, None] == np.arange(k))   # (b, k)
                counts += took
                for key, value in core.step_info.items():
                    value = np.asarray(value, dtype=np.float64)[:, None]
                    sums[key] = sums.get(key, 0.0) + np.where(took, value, 0.0)
        if policy is None:
            means = means or _ClusteredMeans(k)
            means.episodes += b
            for key, s in sums.items():
                means.add(s, counts, key)
        returns.append(ret)
        lengths.append(length)
    return np.concatenate(returns), np.concatenate(lengths), means


def gather(env_id: str, episodes: int, seed: int = 0, batch: int = 16_384,
           constant_episodes: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """Statistics of ``env_id`` (constructor ``kwargs``) under fixed policies: ``episodes``
    under uniformly random actions and ``constant_episodes`` (default: ``episodes / K``)
    under each of the ``K`` constant actions.

    Returns:
        ``{"env": id, "episodes": n, "stats": {name: {"n", "mean", "var"}}}`` with names
        ``return/random``, ``length/random``, ``return/action=<a>`` and
        ``<signal>/action=<a>`` (``var / n``: the variance of the mean, cluster-robust for
        the signals).
    """
    measured: dict[str, dict[str, float] | None] = {}
    returns, lengths, means = _run(env_id, kwargs, None, episodes, seed, batch)
    measured["return/random"], measured["length/random"] = _moments(returns), _moments(lengths)
    measured.update(means.moments())
    for a in range(means.k):
        returns = _run(env_id, kwargs, a, constant_episodes or max(episodes // means.k, 1),
                       seed, batch)[0]
        measured[f"return/action={a}"] = _moments(returns)
    stats = {name: m for name, m in measured.items() if m is not None}
    return {"env": env_id, "episodes": episodes, "stats": stats}


def detectable_shift(var_a: float, n_a: int, var_b: float, n_b: int, alpha: float,
                     power: float = 0.8) -> float:
    """The smallest difference of means a two-sided z-test at level ``alpha`` detects with
    probability ``power``: ``(z_{1−α/2} + z_{power}) · √(v_a/n_a + v_b/n_b)``."""
    from scipy.stats import norm
    return float((norm.isf(alpha / 2) + norm.ppf(power))
                 * math.sqrt(var_a / n_a + var_b / n_b))


def compare(reference: Mapping[str, Any], observed: Mapping[str, Any], alpha: float = 0.01,
            return_shift: float = 0.01, rate_shift: float = 0.01) -> list[dict[str, Any]]:
    """Welch z-tests of every statistic both measured, Holm-corrected at family ``alpha``.

    Each row: ``name``, both means, ``z``, ``p``, ``reject`` (Holm), ``detectable`` (the
    shift detected with power 0.8 at ``alpha / m``) and ``required`` (``return_shift`` of
    the reference mean for returns and lengths — a relative shift — else ``rate_shift``).
    """
    from scipy.stats import norm
    from statsmodels.stats.multitest import multipletests
    ref, obs = reference["stats"], observed["stats"]
    names = sorted(set(ref) & set(obs))
    rows = []
    for name in names:
        a, b = ref[name], obs[name]
        se = math.sqrt(a["var"] / a["n"] + b["var"] / b["n"])
        z = (b["mean"] - a["mean"]) / se if se > 0 else (0.0 if a["mean"] == b["mean"]
                                                          else math.inf)
        relative = name.startswith(("return/", "length/"))
        rows.append(dict(name=name, reference=a["mean"], observed=b["mean"], z=z,
                         p=float(2 * norm.sf(abs(z))),
                         detectable=detectable_shift(a["var"], a["n"], b["var"], b["n"],
                                                     alpha / len(names)),
                         required=(return_shift * abs(a["mean"]) if relative
                                   else rate_shift)))
    reject = multipletests([r["p"] for r in rows], alpha=alpha, method="holm")[0]
    for row, r in zip(rows, reject):
        row["reject"] = bool(r)
    return rows


def run(episodes: int) -> dict[str, Any]:
    """Statistics of every registered env at its defaults."""
    result = {env_id: gather(env_id, episodes) for env_id in envs.env_ids()}
    for env_id, measured in result.items():
        print(env_id)
        for name, s in measured["stats"].items():
            print(f"  {name:40s} n={s['n']:>9,d} mean={s['mean']:.5f} "
                  f"sd={math.sqrt(s['var']):.4f}")
    return result
