"""Delivery to sinks: lanes, retries and bisection, dead-letter destinations."""
