"""Benchmarks: ``python -m experiments.bench env|fusion|policies`` (a plain CLI, not Hydra)."""
