"""Pure parts of the shard reader: gap estimates, backoff with jitter, timestamp skipping."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from fanout.stream.gaps import estimate_lost, iso, sequence_stride, skip_older
from fanout.stream.reader import ReaderOptions


def page(*seqs: int, created: float = 0.0) -> list[dict[str, Any]]:
    return [
        {"dynamodb": {"SequenceNumber": str(s), "ApproximateCreationDateTime": created}}
        for s in seqs
    ]


def timed(*times: float) -> list[dict[str, Any]]:
    return [
        {"dynamodb": {"SequenceNumber": str(i), "ApproximateCreationDateTime": t}}
        for i, t in enumerate(times, 1)
    ]


def test_sequence_stride_is_the_mean_spacing_of_a_page() -> None:
    assert sequence_stride(page(100, 110, 120, 130)) == 10
    assert sequence_stride(page(100, 130)) == 30
    assert sequence_stride(page(100)) is None
    assert sequence_stride([]) is None
    assert sequence_stride(None) is None
    assert sequence_stride([{"dynamodb": {}}, {"dynamodb": {}}]) is None  # malformed


def test_sequence_stride_handles_forty_digit_sequence_numbers() -> None:
    base = 10**39
    assert sequence_stride(page(base, base + 7, base + 14)) == 7


@pytest.mark.parametrize(
    ("after", "upper", "stride", "inclusive", "expected"),
    [
        ("100", "510", 10, False, 40),  # 110..500 lost, 510 is the first one left
        ("100", "110", 10, False, 0),  # nothing between
        ("100", "500", 10, True, 40),  # through the shard's last record
        ("100", "100", 10, True, 0),
        ("100", "90", 10, False, 0),
        (None, "510", 10, False, None),  # the gap's start is unknown
        ("100", None, 10, False, None),  # so is its end
        ("100", "510", None, False, None),  # no spacing to go by
        ("100", "510", 0.0, False, None),
        ("100", "405", 30, False, 9),  # rounded to the nearest whole record
    ],
)
def test_estimate_lost(
    after: str | None,
    upper: str | None,
    stride: float | None,
    inclusive: bool,
    expected: int | None,
) -> None:
    assert estimate_lost(after, upper, stride, inclusive=inclusive) == expected


def test_backoff_grows_is_capped_and_jittered() -> None:
    retry = replace(ReaderOptions().retry, rng=random.Random(1))  # the reader's default
    for errors, ceiling in [(1, 0.2), (2, 0.4), (3, 0.8), (6, 6.4), (7, 10.0), (200, 10.0)]:
        delays = {retry.delay(errors) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) == 50  # never the same wait twice: readers do not retry in step
    assert retry.delay(0) <= 0.2


def test_skip_older_drops_what_came_before_the_starting_time() -> None:
    records = timed(10, 20, 30)
    assert skip_older(records, 40) == ([], False)  # still before it
    assert skip_older(records, 5) == (records, True)  # all after it: skipping ends
    deliver, done = skip_older(records, 20)
    assert [r["dynamodb"]["ApproximateCreationDateTime"] for r in deliver] == [20, 30]
    assert done
    missing_time = [{"dynamodb": {"SequenceNumber": "1"}}]
    assert skip_older(missing_time, 1) == ([], False)


def test_times_are_logged_as_utc() -> None:
    assert iso(0) == "1970-01-01T00:00:00Z"
    assert iso(None) is None
