"""The sample Lambda project (tests/sample_project) passes its own tests, written with
fanout.testing alone, run as its owner would run them: ``pytest`` in its directory, with no
PYTHONPATH (its handlers are found from triggers.json's directory, the default code_path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

PROJECT = REPO / "tests" / "sample_project"


def test_the_sample_project_passes_its_unit_and_functional_tests():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("FANOUT_CACHE_DIR", str(REPO / ".cache" / "dynamodb-local"))
    # The console script, not `python -m pytest`: that would put the working directory on
    # sys.path and hide whether code_path finds the handlers.
    pytest_script = Path(sys.executable).parent / "pytest"
    result = subprocess.run(
        [str(pytest_script), "-q", "-p", "no:randomly"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "10 passed" in output, output
    for test in (PROJECT / "tests").glob("*.py"):
        assert "time.sleep" not in test.read_text(), test  # drain() waits, not the test


def test_the_sample_project_imports_nothing_but_fanout_testing_from_fanout():
    for test in (PROJECT / "tests").glob("*.py"):
        for line in test.read_text().splitlines():
            if line.startswith(("import fanout", "from fanout")):
                assert line.startswith(("from fanout.testing", "import fanout.testing")), line


def test_the_sample_triggers_validate_from_anywhere(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "fanout"),
            "validate",
            "--config",
            str(PROJECT / "triggers.json"),
            "--table",
            "Orders",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("ok: 1 stream(s), 3 sink(s), application ")
    # memory_size and uses_vpc mean nothing here; each is reported once, with its triggers
    notes = [line for line in result.stderr.splitlines() if line.startswith("fanout: note:")]
    assert len(notes) == len(set(notes))
    assert any("memory_size" in n and "award-badges, audit-log" in n for n in notes), notes
    assert any("uses_vpc" in n and "archive-expired" in n for n in notes), notes
    assert any("disabled" in n and "legacy-export" in n for n in notes), notes
