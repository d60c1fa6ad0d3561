"""The Makefile's first hour: an install interrupted half-way is redone by the next make, never
half-trusted; `make run` installs only the runtime; SIGINT or SIGTERM to make stops the demo
and DynamoDB Local with it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.process import wait_for

pytestmark = pytest.mark.integration


def _default_sigint() -> None:
    # make installs its SIGINT handler only when SIGINT is not ignored, as it may be here.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# A PEP 517 backend in a few lines, so the tiny packages below build offline with nothing
# installed (no setuptools, no wheel): it zips the package's modules into a wheel, or for an
# editable install a .pth file naming the package's directory. With $SLOW_BUILD naming the
# package it first writes $BUILDING and sleeps: the test interrupts the install then.
BACKEND = """
import base64, hashlib, os, pathlib, time, tomllib, zipfile

def _project():
    return tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]

def _metadata(p):
    lines = ["Metadata-Version: 2.1", "Name: " + p["name"], "Version: " + p["version"]]
    lines += ["Requires-Dist: " + d for d in p.get("dependencies", [])]
    for extra, deps in p.get("optional-dependencies", {}).items():
        lines.append("Provides-Extra: " + extra)
        lines += ['Requires-Dist: %s ; extra == "%s"' % (d, extra) for d in deps]
    return "\\n".join(lines) + "\\n"

def _wheel(directory, files):
    p = _project()
    if os.environ.get("SLOW_BUILD") == p["name"]:
        pathlib.Path(os.environ["BUILDING"]).write_text("building")
        time.sleep(120)
    info = "%s-%s.dist-info" % (p["name"], p["version"])
    files = dict(files)
    files[info + "/METADATA"] = _metadata(p)
    files[info + "/WHEEL"] = "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    scripts = p.get("scripts", {})
    if scripts:
        files[info + "/entry_points.txt"] = "[console_scripts]\\n" + "".join(
            "%s = %s\\n" % item for item in scripts.items()
        )
    record = []
    for name, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (name, digest, len(data)))
    files[info + "/RECORD"] = "\\n".join(record + [info + "/RECORD,,"]) + "\\n"
    wheel = "%s-%s-py3-none-any.whl" % (p["name"], p["version"])
    with zipfile.ZipFile(os.path.join(directory, wheel), "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    modules = pathlib.Path(".").glob("*.py")
    kept = {f.name: f.read_text() for f in modules if f.name != "backend.py"}
    return _wheel(wheel_directory, kept)

def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, {_project()["name"] + ".pth": str(pathlib.Path.cwd()) + "\\n"})
"""


def _package(root: Path, name: str, module: str, dependencies: str = "", extra: str = "") -> Path:
    """A package built by BACKEND, with one module."""
    home = root / name
    home.mkdir(parents=True)
    (home / "backend.py").write_text(textwrap.dedent(BACKEND))
    (home / f"{name}.py").write_text(module)
    (home / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = []
            build-backend = "backend"
            backend-path = ["."]

            [project]
            name = "{name}"
            version = "1.0"
            dependencies = [{dependencies}]
            """
        )
        + textwrap.dedent(extra)
    )
    return home


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The real Makefile and install script over a tiny project with local dependencies."""
    deps = tmp_path / "deps"
    runtime = _package(deps, "runtime_dep", "VALUE = 1\n")
    tool = _package(
        deps,
        "test_tool",
        "def main():\n    print('tool ok')\n",
        extra="""
        [project.scripts]
        test-tool = "test_tool:main"
        """,
    )
    root = _package(
        tmp_path,
        "project",
        "import runtime_dep\n",
        dependencies=f'"runtime_dep @ {runtime.as_uri()}"',
        extra=f"""
        [project.optional-dependencies]
        test = ["test_tool @ {tool.as_uri()}"]
        """,
    )
    (root / "scripts").mkdir()
    shutil.copy(REPO / "Makefile", root / "Makefile")
    shutil.copy(REPO / "scripts" / "install-venv", root / "scripts" / "install-venv")
    return root


def _make(project: Path, *targets: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *targets, f"PYTHON={sys.executable}"],
        cwd=project,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_default_sigint,
    )


def _env(**extra: str) -> dict[str, str]:
    # Offline: local packages only.
    return {**os.environ, "PIP_NO_INDEX": "1", **extra}


def _installed(project: Path, module: str) -> bool:
    python = project / ".venv" / "bin" / "python"
    return subprocess.run([str(python), "-c", f"import {module}"]).returncode == 0


def test_an_interrupted_install_is_redone_by_the_next_make(project, tmp_path):
    # `make run`'s install: the runtime only
    first = _make(project, "deps-run")
    assert first.returncode == 0, first.stdout + first.stderr
    assert _installed(project, "project")
    assert not _installed(project, "test_tool")

    # `make test`'s install, interrupted (Ctrl-C) while a dependency is being built
    building = tmp_path / "building"
    make = subprocess.Popen(
        ["make", "--no-print-directory", "deps", f"PYTHON={sys.executable}"],
        cwd=project,
        env=_env(SLOW_BUILD="test_tool", BUILDING=str(building)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    try:
        wait_for(building.exists, 120, "the install to reach test_tool's build")
    finally:
        os.killpg(make.pid, signal.SIGINT)  # the terminal's Ctrl-C: the whole group
        make.wait(timeout=60)
    venv = project / ".venv"
    assert make.returncode != 0
    assert sorted(p.name for p in venv.glob(".installed-*")) == []
    # nothing is trusted now: both installs are out of date
    assert _make(project, "-q", "deps").returncode != 0
    assert _make(project, "-q", "deps-run").returncode != 0

    again = _make(project, "deps")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "did not finish" in again.stderr
    assert not (venv / ".installing").exists()
    tool = subprocess.run([str(venv / "bin" / "test-tool")], capture_output=True, text=True)
    assert tool.stdout.strip() == "tool ok"
    assert _make(project, "-q", "deps").returncode == 0  # and now it is up to date
    # a later runtime install keeps the test stamp
    assert _make(project, "deps-run").returncode == 0
    assert _make(project, "-q", "deps", "deps-run").returncode == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_make_alone_stops_the_demo_and_dynamodb_local(signum, tmp_path):
    # The real Makefile's run target, on this venv (its stamp given as up to date).
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "install-venv", tmp_path / "scripts" / "install-venv")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "demo.yaml", tmp_path / "config" / "demo.yaml")
    stamp = tmp_path / "stamp"
    time.sleep(0.01)
    stamp.touch()
    log = (tmp_path / "make.log").open("wb")
    make = subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "run",
            f"BIN={Path(sys.executable).parent}",
            f"RUN_STAMP={stamp}",
        ],
        cwd=tmp_path,
        env={
            **os.environ,
            "FANOUT_HTTP__PORT": "0",
            "FANOUT_CACHE_DIR": os.environ.get(
                "FANOUT_CACHE_DIR", str(REPO / ".cache" / "dynamodb-local")
            ),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    audit = tmp_path / "demo-out" / "audit.jsonl"
    try:
        wait_for(
            lambda: audit.exists() and audit.read_bytes().count(b"\n") >= 5, 120, "demo changes"
        )
        os.kill(make.pid, signum)  # make alone, not its process group
        code = make.wait(timeout=60)
    finally:
        log.close()
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
    output = (tmp_path / "make.log").read_text()
    assert "worker_stopped" in output, output[-3000:]
    assert code != 0 or signum == signal.SIGTERM  # make reports the signal it died of
    # nothing of the group is left: not the demo, not DynamoDB Local's java
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(make.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"processes of make's group are still running\n{output}")
