"""Handler code in the container image, as docs/operations.md shows it: the layout that
deploy/handlers/Dockerfile builds (FROM fanout, code and dependencies in /var/task), and a
project directory mounted at /var/task, each built here without a container engine and
checked as far as fanout finding and importing the handlers and their dependencies."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.unit.test_deploy import REPO

DOCKERFILE = REPO / "deploy" / "handlers" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    steps = []
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            steps.append((word.upper(), rest.strip()))
    return steps


def wheel(directory: Path) -> Path:
    """A tiny dependency (pure Python, as a wheel), so pip installs it offline."""
    name = "greeting-1.0-py3-none-any.whl"
    files = {
        "greeting.py": "def hello(name):\n    return 'hello ' + name\n",
        "greeting-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: greeting\nVersion: 1.0\n",
        "greeting-1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files["greeting-1.0.dist-info/RECORD"] = "\n".join([*record, "greeting-1.0.dist-info/RECORD,,"])
    with zipfile.ZipFile(directory / name, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return directory / name


def project(root: Path) -> Path:
    """A Lambda project: a handler package that uses a dependency, triggers.json."""
    (root / "orders").mkdir(parents=True)
    (root / "orders" / "__init__.py").write_text("")
    (root / "orders" / "greet.py").write_text(
        "import greeting\n\n\ndef handle(event, context):\n    return greeting.hello('x')\n"
    )
    (root / "triggers.json").write_text(json.dumps({"greet": {"handler": "orders.greet.handle"}}))
    (root / "requirements.txt").write_text(f"greeting @ {wheel(root.parent).as_uri()}\n")
    return root


def fanout(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FANOUT_CONFIG")}
    return subprocess.run(
        [str(Path(sys.executable).parent / "fanout"), *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_from_example_lays_out_code_and_dependencies_that_fanout_imports(tmp_path):
    source = project(tmp_path / "src" / "project")
    root = tmp_path / "image"  # the image's file system
    steps = instructions()
    assert steps[0] == ("FROM", "fanout:0.1.0")
    env: dict[str, str] = {}
    cmd: list[str] = []
    for word, rest in steps:
        if word == "COPY":
            what, where = rest.split()
            target = root / where.lstrip("/")
            if what == ".":
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source / what, target)
        elif word == "RUN":
            args = shlex.split(rest)
            assert args[:2] == ["pip", "install"]
            args = [a if not a.startswith("/") else str(root / a.lstrip("/")) for a in args]
            pip = [sys.executable, "-m", "pip", *args[1:], "--no-index", "-q"]
            subprocess.run(pip, check=True, capture_output=True, timeout=120)
        elif word == "ENV":
            key, _, value = rest.partition("=")
            env[key] = str(root / value.lstrip("/"))
        elif word == "CMD":
            cmd = json.loads(rest)
    assert (root / "var" / "task" / "greeting.py").is_file()  # the dependency, next to the code
    assert cmd[0] == "run"
    # the image's entrypoint is `fanout`; validate is run's dry run, from its working dir
    result = fanout(env, tmp_path, "validate", *cmd[1:])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("ok: 1 stream(s), 1 sink(s), application ")


def test_a_project_mounted_at_var_task_needs_no_image_of_its_own(tmp_path):
    # docker run -v "$PWD:/var/task:ro" -e FANOUT_CONFIG=/var/task/triggers.json \
    #   fanout:0.1.0 run --table Orders
    mounted = project(tmp_path / "var" / "task")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--target",
            str(mounted),
            "-r",
            str(mounted / "requirements.txt"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    result = fanout(
        {"FANOUT_CONFIG": str(mounted / "triggers.json")}, tmp_path, "validate", "--table", "Orders"
    )
    assert result.returncode == 0, result.stderr
