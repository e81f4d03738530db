"""Benchmarks: `make bench` runs `bench.run`; single studies run as `python -m bench.<name>`."""
