"""Multirun results: collect every run's metrics.json into one table."""
