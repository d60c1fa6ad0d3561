"""Fetching DynamoDB Local: ``npm pack`` of the package that ships it, verified, into a cache.

The emulator ships inside the npm package ``amplify-dynamodb-simulator`` as
``emulator/DynamoDBLocal.jar`` plus ``emulator/DynamoDBLocal_lib``. :func:`fetch` downloads it
once into a cache directory: ``$FANOUT_CACHE_DIR`` if set, otherwise ``.cache/dynamodb-local``
relative to the current working directory. The emulator lands in ``<cache>/emulator``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath

log = logging.getLogger("fanout.testing.dynamodb_local")

PACKAGE = "amplify-dynamodb-simulator"
PACKAGE_VERSION = "2.9.30"
"""Pinned npm package version; it carries DynamoDB Local 1.25.1."""
JAR_SHA256 = "454305e9bc3e6ebcca5b62569869e31563b8d7e346474e94557b2600702146c7"
"""SHA-256 of ``DynamoDBLocal.jar`` in :data:`PACKAGE_VERSION`; update both together."""
ARCHIVE_PREFIX = "package/emulator/"
JAR = "DynamoDBLocal.jar"
LIB = "DynamoDBLocal_lib"

_STALE_TEMP_SECONDS = 3600.0


class LocalServiceError(RuntimeError):
    """DynamoDB Local could not be fetched, started or reached."""


class UnsafeArchiveError(LocalServiceError):
    """The package archive holds a member that would land outside the target directory."""


def default_cache_dir(base: Path | None = None) -> Path:
    """``$FANOUT_CACHE_DIR``, else ``.cache/dynamodb-local`` under `base` (default: cwd)."""
    env = os.environ.get("FANOUT_CACHE_DIR")
    if env:
        return Path(env)
    return (base if base is not None else Path.cwd()) / ".cache" / "dynamodb-local"


def fetch(cache_dir: Path | None = None, *, npm: str = "npm") -> Path:
    """Make sure DynamoDB Local is in `cache_dir` and return its ``emulator`` directory.

    Nothing is downloaded when ``<cache_dir>/emulator/DynamoDBLocal.jar`` exists. Otherwise
    ``npm pack amplify-dynamodb-simulator@<PACKAGE_VERSION>`` runs in a private temporary
    directory inside `cache_dir`, only ``package/emulator/`` is extracted, the jar's checksum
    is verified and the finished tree is renamed into place, so an interrupted or concurrent
    fetch never leaves a partial ``emulator`` directory behind.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    emulator = cache_dir / "emulator"
    if (emulator / JAR).is_file():
        return emulator

    npm_path = shutil.which(npm)
    if npm_path is None:
        raise LocalServiceError(
            f"{npm!r} not found on PATH: it is needed once to download DynamoDB Local "
            f"(npm pack {PACKAGE}@{PACKAGE_VERSION}) into {emulator}. Install Node.js/npm."
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(cache_dir)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_dir))
    try:
        started = time.monotonic()
        log.info("downloading %s@%s with npm pack", PACKAGE, PACKAGE_VERSION)
        archive = _npm_pack(npm_path, work / "pack")
        staged = work / "emulator"
        safe_extract(archive, staged, ARCHIVE_PREFIX)
        jar = staged / JAR
        if not jar.is_file():
            raise LocalServiceError(f"{PACKAGE}@{PACKAGE_VERSION} has no {ARCHIVE_PREFIX}{JAR}")
        digest = _sha256(jar)
        if digest != JAR_SHA256:
            raise LocalServiceError(
                f"{JAR} from {PACKAGE}@{PACKAGE_VERSION} has SHA-256 {digest}, "
                f"expected {JAR_SHA256}"
            )
        _install(staged, emulator)
        log.info("DynamoDB Local fetched into %s (%.1fs)", emulator, time.monotonic() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return emulator


def _npm_pack(npm: str, dest: Path) -> Path:
    dest.mkdir()
    spec = f"{PACKAGE}@{PACKAGE_VERSION}"
    try:
        result = subprocess.run(
            [npm, "pack", spec, "--silent"],
            cwd=dest,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalServiceError(f"npm pack {spec} did not finish in {exc.timeout:.0f}s") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise LocalServiceError(f"npm pack {spec} failed ({result.returncode}):\n{output}")
    archives = sorted(dest.glob("*.tgz"))
    if len(archives) != 1:
        raise LocalServiceError(f"npm pack {spec} left {len(archives)} archives in {dest}")
    return archives[0]


def safe_extract(archive: Path, dest: Path, prefix: str) -> None:
    """Extract the members of `archive` under `prefix` into `dest`, with `prefix` removed.

    Only regular files and directories are accepted; absolute names, ``..`` components,
    links and device files raise :class:`UnsafeArchiveError` before anything is written
    outside `dest`. File modes are reduced to 0644 / 0755.
    """
    prefix = prefix.strip("/") + "/"
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            relative = _member_path(member.name, prefix)
            if relative is None:
                continue
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(f"{member.name!r} in {archive} is not a regular file")
            target = root.joinpath(*relative.parts)
            if not target.resolve().is_relative_to(root):
                raise UnsafeArchiveError(f"{member.name!r} in {archive} leaves {dest}")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # regular files always have data
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
            target.chmod(0o755 if member.mode & 0o111 else 0o644)


def _member_path(name: str, prefix: str) -> PurePosixPath | None:
    """The path of archive member `name` below `prefix`; None when it is outside `prefix`."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name:
        # checked before the prefix so that "package/emulator/../../x" is refused, not skipped
        raise UnsafeArchiveError(f"unsafe member name {name!r}")
    top = PurePosixPath(prefix)
    if path == top or not path.is_relative_to(top):
        return None
    return path.relative_to(top)


def _install(staged: Path, emulator: Path) -> None:
    """Rename the finished tree into place; a tree that is already complete wins."""
    try:
        staged.rename(emulator)
        return
    except OSError:
        if (emulator / JAR).is_file():
            return  # a concurrent fetch finished first
    # an incomplete tree that did not come from fetch(): move it aside, then retry
    aside = emulator.with_name(f".stale-{os.getpid()}-{time.monotonic_ns()}")
    emulator.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)
    staged.rename(emulator)


def _remove_stale_temp_dirs(cache_dir: Path) -> None:
    """Remove temporary directories of fetches that were killed long ago."""
    cutoff = time.time() - _STALE_TEMP_SECONDS
    for pattern in (".fetch-*", ".stale-*"):
        for path in cache_dir.glob(pattern):
            try:
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
