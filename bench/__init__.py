"""Benchmarks. Run each from the repository root, e.g. `.venv/bin/python -m bench.inbound`."""
