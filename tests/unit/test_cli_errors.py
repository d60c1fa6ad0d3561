"""Every command, run with no AWS region, no credentials, or an endpoint nothing answers at:
one line on standard error and exit code 1 where it calls AWS, and no difference at all where
it does not (validate, import, status make no call)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Nothing listens on port 1 of the loopback: connections are refused at once.
UNREACHABLE = "http://127.0.0.1:1"
CONDITIONS = {
    "no region": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
    "no credentials": {"AWS_DEFAULT_REGION": "eu-west-1"},
    "unreachable endpoint": {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    },
}
EXPECTED = {
    "no region": "no AWS region",
    "no credentials": "no AWS credentials",
    "unreachable endpoint": "127.0.0.1:1",
}


def environment(condition: str, tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        **CONDITIONS[condition],
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    config = tmp_path / "fanout.yaml"
    config.write_text(
        f"""
streams:
  orders: {{table: Orders, endpoint_url: "{UNREACHABLE}"}}
checkpoints: {{path: {tmp_path}/state/fanout.db}}
http: {{enabled: false}}
sinks:
  audit:
    type: file
    path: {tmp_path}/audit.jsonl
    dead_letter:
      type: sqs
      queue_url: "{UNREACHABLE}/123456789012/audit-dlq"
      endpoint_url: "{UNREACHABLE}"
"""
    )
    (tmp_path / "triggers.json").write_text(json.dumps({"t": {"handler": "json.dumps"}}))
    return config


COMMANDS = {
    "run": ["run"],
    "dlq inspect": ["dlq", "inspect"],
    "dlq redrive": ["dlq", "redrive", "--sink", "audit"],
}


def fanout(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanout", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("condition", list(CONDITIONS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_commands_that_call_aws_fail_with_one_line(command, condition, project, tmp_path):
    result = fanout(
        [*COMMANDS[command], "--config", str(project)], environment(condition, tmp_path), tmp_path
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fanout: "), lines
    assert EXPECTED[condition] in lines[0], lines
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_commands_that_call_nothing_do_not_care(condition, project, tmp_path):
    env = environment(condition, tmp_path)
    validate = fanout(["validate", "--config", str(project)], env, tmp_path)
    assert (validate.returncode, validate.stderr) == (0, "")
    imported = fanout(
        ["import", "--from", str(tmp_path / "triggers.json"), "--table", "T"], env, tmp_path
    )
    assert imported.returncode == 0, imported.stderr
    status = fanout(["status", "--config", str(project)], env, tmp_path)
    assert status.returncode == 1
    assert status.stderr.strip().splitlines() == [
        f"fanout: no checkpoint store at {tmp_path}/state/fanout.db: no worker has run "
        "with this config yet"
    ]
