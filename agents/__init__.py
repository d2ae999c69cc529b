"""Policies in three wings, each a package that imports nothing of the wings after it:

* ``agents.baselines`` — NumPy policies behind one interface (``policies.Policy``): random,
  greedy, the persona router, contextual bandits, planners, the privileged oracle; the
  per-env baselines entries; ``factory`` (``make_policy``, ``baselines_for``) and
  ``evaluation`` (rollouts and paired comparisons).
* ``agents.learners`` — what trains a network: the ``Learner`` interface and the online
  baseline learner (``base``), RLlib PPO and its batched sampler, SB3 PPO, and ``export``
  (a trained policy to a bundle). Imports torch and Ray only inside what needs them.
* ``agents.serving`` — what serves a bundle: the bundle format, the loader
  (``load_policy``), traffic splits, the HTTP server, decision logs, the model registry.
  Imports neither Ray nor torch, nor the other two wings (``tests/test_serving.py``).

``import agents`` imports none of them.
"""
