"""An older commit checked out beside the current tree, so one run can measure both.

``--baseline REV`` checks REV out with ``git worktree add --detach`` into
``.cache/bench-baseline/<short sha>`` (reused while it stays at that commit; nothing is
committed), and the throughput scenario runs that tree's own ``bench/child.py`` as the
consumer ``fanout@<short sha>``, with ``PYTHONPATH`` and the working directory set to the
tree. The child runs with this venv's interpreter and packages, so REV must need no
dependency the venv lacks.

The tree's child must accept the spec the current harness sends: new spec fields must be
optional, and the fields an old child reads must keep their meaning.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.harness import REPO


class BaselineError(RuntimeError):
    """The baseline revision could not be resolved or checked out."""


@dataclass(frozen=True)
class Baseline:
    """A commit checked out in a tree of its own."""

    rev: str  # as given on the command line
    sha: str
    short: str
    tree: Path

    @property
    def consumer(self) -> str:
        """The consumer's name in the results: ``fanout@<short sha>``."""
        return self.named("fanout")

    def named(self, consumer: str) -> str:
        """``consumer`` (``fanout``, ``fanout-handlers``) as of this commit: ``<consumer>@<short
        sha>``."""
        return f"{consumer}@{self.short}"

    def describe(self) -> dict[str, str]:
        return {"rev": self.rev, "sha": self.sha, "tree": str(self.tree), "consumer": self.consumer}


def _git(cwd: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BaselineError(f"git {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        message = done.stderr.strip() or done.stdout.strip()
        raise BaselineError(f"git {' '.join(args)} failed in {cwd}: {message}")
    return done.stdout.strip()


def _checked_out(tree: Path, sha: str) -> bool:
    """Whether ``tree`` is a worktree of its own with ``sha`` checked out.

    A directory without a ``.git`` of its own would answer for the repository around it
    (``.cache`` is inside the current tree), hence the top-level check.
    """
    if not (tree / ".git").exists():
        return False
    try:
        top = _git(tree, "rev-parse", "--show-toplevel")
        head = _git(tree, "rev-parse", "HEAD")
    except BaselineError:
        return False
    return Path(top).resolve() == tree.resolve() and head == sha


def checkout(rev: str, *, repo: Path = REPO, root: Path | None = None) -> Baseline:
    """Resolve ``rev`` in ``repo`` and check it out under ``root``, or reuse that checkout.

    ``root`` defaults to ``<repo>/.cache/bench-baseline``. Raises :class:`BaselineError`
    when ``rev`` names no commit, or when the directory for it exists but holds something
    else (it is left alone: remove it with ``git worktree remove --force <dir>``).
    """
    sha = _git(repo, "rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")
    short = _git(repo, "rev-parse", "--short", sha)
    tree = (root if root is not None else repo / ".cache" / "bench-baseline") / short
    if tree.exists():
        if not _checked_out(tree, sha):
            raise BaselineError(
                f"{tree} exists but is not a checkout of {sha}; remove it "
                f"(git worktree remove --force {tree}) and run again"
            )
    else:
        tree.parent.mkdir(parents=True, exist_ok=True)
        # --force: take the path over if a checkout there was deleted without git's knowledge
        # (``make clean``); it does not touch any other worktree.
        _git(repo, "worktree", "add", "--force", "--detach", str(tree), sha)
    if not (tree / "bench" / "child.py").is_file():
        raise BaselineError(f"{rev} ({short}) has no bench/child.py to run")
    return Baseline(rev=rev, sha=sha, short=short, tree=tree)
