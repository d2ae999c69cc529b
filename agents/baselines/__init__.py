"""The baselines wing: NumPy policies behind one interface and how they are compared.

* ``policies`` — the ``Policy`` interface, the shared policies (random, the myopic oracle,
  mean tables) and AgentRouting's routers and baselines entry;
* ``adaptation``, ``intervention`` — PersonalityAdaptation's and InterventionTiming's
  baselines and entries; ``bandits`` (LinUCB, linear Thompson sampling); ``planning`` (the
  ground-truth look-ahead planner);
* ``factory`` — ``make_policy`` / ``baselines_for``: any baseline of any registered env;
* ``evaluation`` — rollouts of policies on the same users and their paired comparison.

NumPy only (no torch, no Ray).
"""
