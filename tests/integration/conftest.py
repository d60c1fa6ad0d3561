"""Fixtures of the integration tests (the services themselves are in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.process import WorkerProcess


@pytest.fixture(autouse=True)
def reap_workers() -> Iterator[None]:
    """Kill the worker processes a test started and did not stop (it failed first)."""
    yield
    WorkerProcess.reap()
