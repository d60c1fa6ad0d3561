"""The benchmark's throughput scenario at a tiny size, so ``make bench`` cannot rot."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import ANY

import orjson
import pytest

from bench.__main__ import main
from bench.baseline import BaselineError, checkout
from bench.harness import REPO

pytestmark = pytest.mark.integration


def test_throughput_scenario_reads_every_record_and_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["-s", "throughput", "--shards", "2", "--records", "4000", "--processes", "1"]
    argv += ["--rounds", "1"]
    argv += ["--out", str(out)]

    assert main(argv) == 0

    (path,) = out.glob("*.json")
    report = orjson.loads(path.read_bytes())
    rows = report["results"]["throughput"]["rows"]
    assert sorted(r["consumer"] for r in rows) == [
        "aiobotocore",
        "fanout",
        "fanout-handlers",
        "fanout-unfiltered",
        "floor",
    ]
    for row in rows:
        assert row["shards"] == 2
        assert row["records"] == row["expected"] == 4000
    fanout = next(r for r in rows if r["consumer"] == "fanout")
    assert fanout["finished_shards"] == 2
    assert not fanout["timed_out"]
    # every sink saw its filtered share, through the real pipeline
    assert set(fanout["sinks"]) == {"search", "notify", "audit"}
    assert all(0 < n < 4000 for n in fanout["sinks"].values())
    bare = next(r for r in rows if r["consumer"] == "fanout-unfiltered")
    assert all(n == 4000 for n in bare["sinks"].values())  # no filters: every record
    # Lambda handlers at their defaults: the unfiltered one got every record, the filtered
    # ones the same shares as the counting sinks
    handlers = next(r for r in rows if r["consumer"] == "fanout-handlers")
    assert handlers["finished_shards"] == 2
    assert handlers["handled"] == {**fanout["sinks"], "audit": 4000}
    assert set(report["results"]["throughput"]["ratios"]["2"]) == {
        "vs_floor",
        "vs_aiobotocore",
        "filter_cpu_overhead",
        "handlers_vs_floor",
        "handlers_cpu_vs_floor",
    }
    assert report["machine"]["cpus"] >= 1


def test_throughput_with_two_processes_shares_the_shards(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["-s", "throughput", "--consumers", "fanout", "--shards", "4", "--records", "8000"]
    assert main([*argv, "--processes", "2", "--rounds", "1", "--out", str(out)]) == 0
    (path,) = out.glob("*.json")
    throughput = orjson.loads(path.read_bytes())["results"]["throughput"]
    rows = {r["consumer"]: r for r in throughput["rows"]}
    assert list(rows) == ["fanout", "fanout-2p"]
    two = rows["fanout-2p"]
    assert two["records"] == two["expected"] == 8000
    assert two["reread"] == 0  # no record read twice
    assert two["processes"] == 2
    # Both members ran; which one reads what depends on timing: a member still listing the
    # stream's shards takes none yet, and these shards are read in a fraction of a second,
    # so on a busy machine the other may read them all. The spread across workers is
    # tested where time is under control (tests/integration/test_leases.py).
    assert len(two["members"]) == 2
    assert sum(m["records"] for m in two["members"]) == 8000
    assert two["finished_shards"] == 4
    assert throughput["ratios"]["4"]["processes_2"] > 0


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"needs a git checkout: git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@pytest.fixture
def checkouts(tmp_path: Path) -> Iterator[Path]:
    """A directory for baseline checkouts; every checkout in it is removed afterwards."""
    root = tmp_path / "baselines"
    yield root
    for tree in root.glob("*"):
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)


def test_baseline_runs_beside_fanout_in_alternating_rounds(tmp_path: Path, checkouts: Path) -> None:
    sha = _git("rev-parse", "HEAD")
    short = _git("rev-parse", "--short", sha)
    out = tmp_path / "results"
    argv = ["-s", "throughput", "--consumers", "fanout,fanout-handlers", "--shards", "2"]
    argv += ["--records", "2000"]
    argv += ["--rounds", "2", "--baseline", "HEAD", "--baseline-dir", str(checkouts)]
    argv += ["--processes", "1"]

    assert main([*argv, "--out", str(out)]) == 0

    (path,) = out.glob("*.json")
    throughput = orjson.loads(path.read_bytes())["results"]["throughput"]
    tree = checkouts / short
    assert throughput["baseline"] == {
        "rev": "HEAD",
        "sha": sha,
        "tree": str(tree),
        "consumer": f"fanout@{short}",
    }
    rows = {r["consumer"]: r for r in throughput["rows"]}
    handlers = ["fanout-handlers", f"fanout-handlers@{short}"]
    assert list(rows) == ["fanout", f"fanout@{short}", *handlers]
    assert rows["fanout"]["tree"] == rows["fanout-handlers"]["tree"] == str(REPO)
    assert rows[f"fanout@{short}"]["tree"] == rows[handlers[1]]["tree"] == str(tree)
    for row in rows.values():
        assert row["records"] == row["expected"] == 2000
        assert row["rounds"] == len(row["per_round"]) == 2
        assert row["best_records_per_s"] >= row["records_per_s"] > 0
        assert 0 < row["best_cpu_s_per_million"] <= row["cpu_s_per_million"]
    for name in ("fanout", f"fanout@{short}"):  # null sinks
        assert set(rows[name]["sinks"]) == {"search", "notify", "audit"}
    for name in handlers:  # the same handler sinks, each tree's own code
        assert rows[name]["handled"] == {"search": ANY, "notify": ANY, "audit": 2000}
    ratio = throughput["ratios"]["2"]
    for key in ("vs_baseline", "cpu_vs_baseline", "handlers_vs_baseline"):
        assert ratio[key] > 0
    assert ratio["handlers_cpu_vs_baseline"] > 0
    # the checkout is a detached worktree at that commit, reused as it is
    assert (tree / "bench" / "child.py").is_file()
    assert checkout("HEAD", root=checkouts).tree == tree


def test_baseline_refuses_a_directory_that_is_not_its_checkout(checkouts: Path) -> None:
    short = _git("rev-parse", "--short", "HEAD")
    (checkouts / short).mkdir(parents=True)

    with pytest.raises(BaselineError, match="not a checkout"):
        checkout("HEAD", root=checkouts)


def test_baseline_rejects_an_unknown_revision(checkouts: Path) -> None:
    _git("rev-parse", "HEAD")
    with pytest.raises(BaselineError, match="rev-parse"):
        checkout("no-such-revision-anywhere", root=checkouts)


def test_budget_scenario_reports_peak_rss_against_the_budget(tmp_path: Path) -> None:
    from bench.budget import budget
    from bench.scenarios import Options

    opts = Options(
        out=tmp_path,
        budget_shards=50,
        budget_records_per_shard=4,
        budget_bytes=4 * 1024 * 1024,
        logs=tmp_path,
    )
    result = budget(opts)
    assert not result["timed_out"]
    assert 0 < result["records_read"] < result["records_written"]  # stopped at the budget
    assert result["buffered_mb"] <= result["budget_mb"]
    assert result["peak_rss_mb"] >= result["baseline_rss_mb"] > 0
