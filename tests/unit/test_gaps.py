"""Gap accounting (estimates, measuring, the loss policy), the reader's backoff with jitter,
and skipping by time."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from fanout.observe.metrics import Metrics
from fanout.stream.gaps import (
    GAP_EMPTY_PAGES,
    DataLossError,
    Gap,
    OpenGap,
    created,
    estimate_lost,
    iso,
    last_sequence,
    measure_gap,
    record_loss,
    sequence_stride,
    skip_older,
    unknown_gap,
    vanished_gap,
)
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


def test_a_gap_is_measured_with_the_first_record_left_after_it() -> None:
    gap = OpenGap("100", 5.0, "record", "trimmed")
    measured = measure_gap(
        "s1", gap, page(510, 520), ended=False, ending_sequence=None, stride_before=None
    )
    assert measured == Gap(
        "s1", "100", 5.0, "record", "510", 0.0, 40, "sequence_spacing", "trimmed"
    )


def test_an_empty_page_after_a_gap_is_read_past_a_few_times_first() -> None:
    gap = OpenGap("100", None, "record", "trimmed")
    for _ in range(GAP_EMPTY_PAGES):
        assert (
            measure_gap("s1", gap, [], ended=False, ending_sequence=None, stride_before=10) is None
        )
    assert gap.empty_pages == GAP_EMPTY_PAGES
    measured = measure_gap("s1", gap, [], ended=False, ending_sequence=None, stride_before=10)
    assert measured is not None
    assert (measured.before_seq, measured.records, measured.count_basis) == (
        None,
        1,
        "lower_bound",
    )


def test_a_gap_through_a_shard_end_counts_to_its_last_record() -> None:
    gap = OpenGap("100", None, "record", "trimmed")
    measured = measure_gap("s1", gap, [], ended=True, ending_sequence="500", stride_before=10)
    assert measured is not None
    assert (measured.records, measured.count_basis) == (40, "sequence_spacing")


def test_a_shard_that_vanished_after_its_last_record_lost_nothing() -> None:
    assert vanished_gap("s1", "500", (1.0, 10.0), "500", "gone") is None
    lost = vanished_gap("s1", "100", (1.0, 10.0), "500", "gone")
    assert lost is not None
    assert (lost.records, lost.count_basis, lost.after_time) == (40, "sequence_spacing", 1.0)
    unknown = vanished_gap("s1", None, None, None, "gone")
    assert unknown is not None
    assert (unknown.records, unknown.count_basis) == (None, "unknown")


def test_the_last_sequence_number_of_a_malformed_page() -> None:
    assert last_sequence([*page(1, 2), {"dynamodb": {}}, {"x": 1}]) == "2"
    assert last_sequence([{"dynamodb": {}}, {"dynamodb": "garbage"}]) is None
    assert created({"dynamodb": {"ApproximateCreationDateTime": 7}}) == 7.0
    assert created({}) == 0.0
    assert created({"dynamodb": "garbage"}) == 0.0


def test_a_loss_is_counted_logged_and_failed_by_policy(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    gap = unknown_gap("s1", "100", 0.0, "the shard is no longer listed")
    record_loss(
        gap, stream="orders", stream_arn="arn", policy="resume_trim_horizon", metrics=metrics
    )
    counted = Gap("s2", None, None, "record", "510", None, 3, "sequence_spacing", "trimmed")
    with pytest.raises(DataLossError, match="about 3 records of shard s2 at its start"):
        record_loss(counted, stream="orders", stream_arn="arn", policy="fail", metrics=metrics)
    sample = metrics.registry.get_sample_value
    assert sample("fanout_data_loss_events_total", {"stream": "orders"}) == 2
    assert sample("fanout_records_lost_total", {"stream": "orders"}) == 3
    logged = [r.__dict__ for r in caplog.records if r.getMessage() == "data_loss_detected"]
    assert [(e["shard"], e["lost_from"], e["policy"]) for e in logged] == [
        ("s1", "1970-01-01T00:00:00Z", "resume_trim_horizon"),
        ("s2", None, "fail"),
    ]
