"""The benchmark's throughput scenario at a tiny size, so ``make bench`` cannot rot."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.__main__ import main

pytestmark = pytest.mark.integration


def test_throughput_scenario_reads_every_record_and_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["-s", "throughput", "--shards", "2", "--records", "4000", "--out", str(out)]

    assert main(argv) == 0

    (path,) = out.glob("*.json")
    report = orjson.loads(path.read_bytes())
    rows = report["results"]["throughput"]["rows"]
    assert sorted(r["consumer"] for r in rows) == [
        "aiobotocore",
        "fanout",
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
    assert set(report["results"]["throughput"]["ratios"]["2"]) == {
        "vs_floor",
        "vs_aiobotocore",
        "filter_cpu_overhead",
    }
    assert report["machine"]["cpus"] >= 1
