"""Benchmarks: each prints its own figures and a peer's from the same run (see bench/README.md)."""
