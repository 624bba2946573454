"""Benchmarks that print figures (``python -m bench.<name> --help``); never part of the tests."""
