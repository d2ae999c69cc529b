"""Persona discovery: clusters of users' behaviour features, mapped to known archetypes.

The persona fusion write-up (``../shared/seeds/rlhf-persona-fusion-engine.md``, "ML-Powered
Clustering") clusters feature vectors with k-means++ and scores each cluster's cohesion
as ``1 / (1 + mean distance to centroid)``. Here:

1. **Scaling.** Features (``synth.features``; ``(n, F)``, any units) are standardised —
   each column centred on its mean and divided by its standard deviation over the users
   given (scikit-learn's ``StandardScaler``); every distance below is in these units.
2. **Choosing k** (when not given): for each ``k`` in ``k_range`` k-means++ is fitted to a
   seeded subsample of at most ``selection_sample`` users (50,000 by default) and scored
   by the mean silhouette (Rousseeuw 1987) of a seeded subsample of at most
   ``silhouette_sample`` of them (5,000: the silhouette costs the square of its sample);
   the ``k`` with the highest silhouette is chosen.
3. **The fit.** k-means++ (Arthur & Vassilvitskii 2007; scikit-learn's ``KMeans``,
   ``n_init`` restarts, the lowest inertia kept) on every user — ``MiniBatchKMeans``
   (Sculley 2010) above ``mini_batch_above`` users.
4. **Per cluster**: its size, centroid (in feature units) and cohesion
   ``1 / (1 + mean Euclidean distance of its members to the centroid)``.
5. **Known or new.** Given reference centroids (``archetype_centroids``: what a typical
   user of each known archetype looks like), clusters and archetypes are paired by the
   Hungarian method (``scipy.optimize.linear_sum_assignment``) on centroid distance; a
   cluster left unpaired, or paired further than ``new_distance`` from its archetype, is
   flagged as new (``-1``). By default ``new_distance`` is half the smallest distance
   between any two reference centroids: a paired cluster must be nearer its archetype
   than the two closest archetypes are to their midpoint.

Everything is seeded (``seed``): the same features give the same clusters.
scikit-learn and SciPy are imported when discovery runs (the ``discover`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from personarl.errors import ConfigError, check_int, check_matrix
from synth.behaviour import BehaviourModel
from synth.features import BEHAVIOUR_FEATURES, expected_behaviour_features
from synth.population import PopulationSampler

__all__ = ["Discovery", "discover", "archetype_centroids", "adjusted_rand"]

NEW = -1


@dataclass(frozen=True)
class Discovery:
    """The clusters of one set of users (module doc).

    Attributes:
        k: the number of clusters.
        labels: ``(n,)`` each user's cluster, ``0..k-1``.
        centroids: ``(k, F)`` cluster means in feature units.
        sizes: ``(k,)`` users per cluster.
        cohesion: ``(k,)`` ``1 / (1 + mean distance to centroid)`` (standardised units).
        mean, scale: ``(F,)`` the standardisation (feature units).
        archetype: ``(k,)`` the known archetype each cluster is paired with (an index into
            the reference given), ``-1`` for a new one; all ``-1`` without a reference.
        match_distance: ``(k,)`` standardised distance to the archetype the Hungarian
            method assigned (``nan`` when none was).
        matched: ``(k,)`` that assigned archetype, near enough or not (``-1``: none).
        new_distance: the distance beyond which an assigned archetype does not pair
            (``nan`` without a reference).
        silhouette: ``k -> mean silhouette`` of the candidates when ``k`` was chosen
            (empty when it was given).
        names: the feature names.
    """

    k: int
    labels: np.ndarray
    centroids: np.ndarray
    sizes: np.ndarray
    cohesion: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    archetype: np.ndarray
    match_distance: np.ndarray
    matched: np.ndarray
    new_distance: float
    silhouette: dict[int, float] = field(default_factory=dict)
    names: tuple[str, ...] = BEHAVIOUR_FEATURES

    def standardise(self, features: np.ndarray) -> np.ndarray:
        """``features`` ``(m, F)`` in this discovery's standardised units."""
        return (_checked(features, self.names) - self.mean) / self.scale

    def distances(self, features: np.ndarray) -> np.ndarray:
        """``(m, k)`` Euclidean distance (standardised units) of each row of ``features``
        ``(m, F)`` to each centroid.

        Raises:
            DataError: a missing or non-finite feature column.
        """
        from scipy.spatial.distance import cdist

        return cdist(self.standardise(features), (self.centroids - self.mean) / self.scale)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``(m,)`` the nearest cluster of each row of ``features`` ``(m, F)``.

        Raises:
            DataError: a missing or non-finite feature column.
        """
        return self.distances(features).argmin(axis=1)


def _checked(features: Any, names: Sequence[str]) -> np.ndarray:
    """``features`` as a finite ``(n, len(names))`` float64 array, else ``DataError``."""
    return check_matrix("the feature table", features, names, rows="users", row="user row",
                        empty="an empty window: no users to cluster")


def _kmeans(k: int, n: int, seed: int, n_init: int, mini_batch_above: int,
            init: np.ndarray | None = None) -> Any:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    start: Any = "k-means++" if init is None else init
    n_init = n_init if init is None else 1
    if n > mini_batch_above:
        return MiniBatchKMeans(n_clusters=k, init=start, n_init=n_init,
                               random_state=seed, batch_size=4096)
    return KMeans(n_clusters=k, init=start, n_init=n_init, random_state=seed)


def discover(features: np.ndarray, *, k: int | None = None,
             k_range: Sequence[int] = tuple(range(2, 11)), seed: int = 0,
             names: Sequence[str] = BEHAVIOUR_FEATURES, reference: np.ndarray | None = None,
             new_distance: float | None = None, selection_sample: int = 50_000,
             silhouette_sample: int = 5_000, n_init: int = 4,
             mini_batch_above: int = 200_000, init: np.ndarray | None = None) -> Discovery:
    """Cluster users by their features (module doc).

    Args:
        features: ``(n, F)`` one row per user, columns ``names``.
        k: the number of clusters, in ``[2, n)``; ``None`` chooses it from ``k_range`` by
            the silhouette.
        k_range: the candidates when ``k`` is ``None`` (each in ``[2, n)``).
        seed: seeds the subsamples and k-means++.
        names: the feature names (``BEHAVIOUR_FEATURES`` by default).
        reference: ``(A, F)`` known archetypes' centroids in feature units
            (``archetype_centroids``), for pairing clusters with them.
        new_distance: pairing distance above which a cluster is new (standardised units;
            default: half the smallest distance between two reference centroids).
        selection_sample, silhouette_sample: subsample sizes when choosing ``k``.
        n_init: k-means++ restarts per fit (the lowest inertia is kept).
        mini_batch_above: users above which the final fit is ``MiniBatchKMeans``.
        init: ``(k, F)`` starting centroids in feature units (one fit from them instead of
            ``n_init`` k-means++ starts).

    Raises:
        DataError: an empty window, features of the wrong shape, or a non-finite feature.
        ConfigError: ``k`` or a candidate outside ``[2, n_users)``; a bad ``reference``,
            ``n_init``, ``mini_batch_above``, ``new_distance`` or ``init``.
    """
    names = tuple(names)
    x = _checked(features, names)
    n = len(x)
    n_init = check_int("n_init", n_init, 1)
    mini_batch_above = check_int("mini_batch_above", mini_batch_above, 1)
    if new_distance is not None and not (np.isfinite(new_distance) and new_distance > 0):
        raise ConfigError(f"new_distance={new_distance!r} must be a finite distance > 0 "
                          "(standardised units) or None")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0                   # a constant feature carries no distance
    z = (x - mean) / scale
    rng = np.random.default_rng(seed)
    silhouette: dict[int, float] = {}
    if k is None:
        candidates = [_check_k(c, n, "k_range entry") for c in k_range]
        if not candidates:
            raise ConfigError("k_range is empty; give candidates in [2, n_users) or k")
        silhouette = _select(z, candidates, rng, seed, check_int(
            "selection_sample", selection_sample, 2), check_int(
            "silhouette_sample", silhouette_sample, 2), n_init)
        k = max(silhouette, key=lambda c: (silhouette[c], -c))
    else:
        k = _check_k(k, n, "k")
    if init is not None:
        if np.shape(init) != (k, x.shape[1]):
            raise ConfigError(f"init has shape {np.shape(init)}; expected ({k}, "
                              f"{x.shape[1]}): one starting centroid per cluster")
        init = (_checked(init, names) - mean) / scale
    model = _kmeans(k, n, seed, n_init, mini_batch_above, init).fit(z)
    labels = model.predict(z) if n > mini_batch_above else model.labels_
    labels = labels.astype(np.int64)
    sizes = np.bincount(labels, minlength=k)
    centres = np.zeros((k, x.shape[1]))
    for j in range(x.shape[1]):
        centres[:, j] = np.bincount(labels, z[:, j], k) / np.maximum(sizes, 1)
    distance = np.sqrt(((z - centres[labels]) ** 2).sum(axis=1))
    cohesion = 1.0 / (1.0 + np.bincount(labels, distance, k) / np.maximum(sizes, 1))
    archetype, matched, match, new_distance = _pair(centres, reference, mean, scale,
                                                    new_distance, names)
    return Discovery(k=k, labels=labels, centroids=centres * scale + mean, sizes=sizes,
                     cohesion=cohesion, mean=mean, scale=scale, archetype=archetype,
                     match_distance=match, matched=matched, new_distance=new_distance,
                     silhouette=silhouette, names=names)


def _check_k(k: Any, n: int, label: str) -> int:
    if n < 3:
        raise ConfigError(f"{n} users cannot be clustered: k must lie in [2, n_users) and "
                          "that needs at least 3 users")
    return check_int(label, k, 2, n - 1)


def _select(z: np.ndarray, candidates: list[int], rng: np.random.Generator, seed: int,
            selection_sample: int, silhouette_sample: int, n_init: int) -> dict[int, float]:
    """``k -> mean silhouette`` of k-means++ fitted to a subsample (module doc, step 2)."""
    from sklearn.metrics import silhouette_score
    n = len(z)
    sub = z[np.sort(rng.choice(n, selection_sample, replace=False))] \
        if n > selection_sample else z
    scores = {}
    for k in sorted(set(candidates)):
        if k >= len(sub):
            raise ConfigError(f"k_range entry {k} is not below the {len(sub)} users it "
                              "would be chosen on")
        labels = _kmeans(k, len(sub), seed, n_init, len(sub)).fit(sub).labels_
        scores[k] = float(silhouette_score(
            sub, labels, sample_size=min(silhouette_sample, len(sub)), random_state=seed))
    return scores


def _pair(centres: np.ndarray, reference: np.ndarray | None, mean: np.ndarray,
          scale: np.ndarray, new_distance: float | None, names: Sequence[str]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Each cluster's archetype (``-1``: new), the archetype assigned to it, its distance,
    and the pairing distance used (module doc, step 5)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist
    k = len(centres)
    archetype, match = np.full(k, NEW, np.int64), np.full(k, np.nan)
    if reference is None:
        return archetype, archetype.copy(), match, float("nan")
    ref = (_checked(reference, names) - mean) / scale
    if new_distance is None:
        if len(ref) < 2:
            raise ConfigError("a single reference archetype needs an explicit new_distance")
        gaps = cdist(ref, ref)
        new_distance = 0.5 * gaps[~np.eye(len(ref), dtype=bool)].min()
    cost = cdist(centres, ref)                                          # (k, A)
    rows, cols = linear_sum_assignment(cost)
    near = cost[rows, cols] <= new_distance
    archetype[rows[near]] = cols[near]
    matched = np.full(k, NEW, np.int64)
    matched[rows] = cols
    match[rows] = cost[rows, cols]
    return archetype, matched, match, float(new_distance)


def archetype_centroids(sampler: PopulationSampler, rng: np.random.Generator,
                        users_per_archetype: int = 20_000, epoch: int = 0,
                        behaviour: BehaviourModel = BehaviourModel(),
                        rows: Sequence[int] | None = None) -> np.ndarray:
    """``(A, F)`` what a typical human of each archetype of ``sampler``'s epoch looks like:
    the mean expected features (``expected_behaviour_features``) of
    ``users_per_archetype`` mixtures drawn with that primary (the population's anchored
    Dirichlet), for the latent table's ``rows`` (default: the base archetypes, in order).
    Discovery pairs its clusters with these.
    """
    n = check_int("users_per_archetype", users_per_archetype, 1)
    rows = np.arange(sampler.base.size) if rows is None else np.asarray(rows, np.int64)
    A = len(rows)
    primary = np.repeat(rows, n)
    table_id = np.full(len(primary), epoch)
    weights = sampler.sample_weights(primary, table_id, rng)
    no = np.zeros(len(primary), bool)
    expected = expected_behaviour_features(sampler, weights, table_id, no, no, behaviour)
    return expected.reshape(A, n, -1).mean(axis=1)


def adjusted_rand(labels: np.ndarray, truth: np.ndarray,
                  mask: np.ndarray | None = None) -> float:
    """The adjusted Rand index (Hubert & Arabie 1985; scikit-learn's) of ``labels``
    against ``truth`` over the users in ``mask`` (all by default): 1 is identical
    partitions, 0 is chance."""
    from sklearn.metrics import adjusted_rand_score
    labels, truth = np.asarray(labels), np.asarray(truth)
    if mask is not None:
        labels, truth = labels[mask], truth[mask]
    return float(adjusted_rand_score(truth, labels))
