"""Observability: Prometheus metrics, the health endpoint, JSON logs."""
