"""Benchmarks: ``python -m experiments.bench env|fusion`` (a plain CLI, not Hydra)."""
