"""`make run` keeps working: the demo starts DynamoDB Local, writes changes, and stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]


def test_demo_shows_changes_flowing_and_stops_cleanly_on_ctrl_c(tmp_path):
    env = dict(os.environ, FANOUT_HTTP__PORT="0", PYTHONUNBUFFERED="1")
    # The demo runs from a copy of its config in a scratch folder, as `make run` runs from
    # the repository (it writes demo-out/ next to where it runs).
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "demo.yaml").write_bytes((REPO / "config" / "demo.yaml").read_bytes())
    out = (tmp_path / "demo.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout.testing.demo", "--rate", "20"],
        cwd=tmp_path,
        env={
            **env,
            "PYTHONPATH": str(REPO),
            "FANOUT_CACHE_DIR": str(REPO / ".cache" / "dynamodb-local"),
        },
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    audit = tmp_path / "demo-out" / "audit.jsonl"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if audit.exists() and len(audit.read_bytes().splitlines()) >= 30:
                break
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()
            time.sleep(0.5)
        else:
            raise AssertionError("no demo changes reached the audit sink")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        out.close()
    log = (tmp_path / "demo.log").read_text()
    assert code == 0, log
    assert "[console] INSERT" in log
    assert "worker_stopped" in log
    records = [orjson.loads(line) for line in audit.read_bytes().splitlines()]
    assert {r["eventName"] for r in records} >= {"INSERT", "MODIFY"}
    shipped = tmp_path / "demo-out" / "shipped.jsonl"
    for line in shipped.read_bytes().splitlines() if shipped.exists() else []:
        assert orjson.loads(line)["dynamodb"]["NewImage"]["status"] == {"S": "SHIPPED"}
