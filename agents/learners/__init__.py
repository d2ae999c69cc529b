"""The learners wing: what trains a policy, and its export to a serving bundle.

* ``base`` — the ``Learner`` interface, the online learner of NumPy baselines
  (``OnlineBaseline``), resume state and the weights file;
* ``rllib_ppo`` (the ``PPOConfig`` adapter), ``rllib_batched`` (the array sampler and GAE
  connector), ``rllib_env`` (env registration with Ray), ``sb3_ppo`` (SB3 PPO);
* ``export`` — a trained actor to a bundle (``agents.serving.bundle``'s format);
* ``bradley_terry`` — reward models from preference pairs (scored by
  ``rewards.reward_model``); ``context_ppo`` — SB3 PPO in the one-step setting with
  snapshots along optimisation (the over-optimisation lab).

torch and Ray are imported by the modules that need them, not by this package.
"""
