"""Benchmarks: figures for the docs, never assertions in tests.

- ``latency``: per-stage latency of the inference core (``maskgate bench``).
- ``loop``: the whole daemon's loop FPS and memory over time (``python -m maskgate.bench.loop``).
- ``web``: loop FPS with and without web viewers (``python -m maskgate.bench.web``).
- ``api``: loop FPS with and without classify-API callers (``python -m maskgate.bench.api``).
"""
