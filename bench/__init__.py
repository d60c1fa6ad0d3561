"""Benchmarks for fanout."""
