"""Gap accounting: records lost before they were read, how many, and what to do about it.

Everything here is pure but ``record_loss``, which counts, logs and applies ``on_data_loss``
to one gap. The rules are written out in ``docs/shards.md`` ("Data loss").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fanout.errors import FanoutError
from fanout.observe.metrics import Metrics
from fanout.records import Record

log = logging.getLogger("fanout.stream")

# Empty pages read past the start of a gap, looking for the first record still available,
# before the gap is accounted for without one.
GAP_EMPTY_PAGES = 2


class DataLossError(FanoutError):
    """Records were lost before they were read and ``on_data_loss`` is ``fail``."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Records of one shard that were lost between two positions.

    ``after_seq`` is the last record read (or the checkpoint) before the gap, None when the
    gap starts at the shard's beginning; ``before_seq`` is the first record still available
    after it, None when none is. ``records`` is None when the count cannot be known.
    """

    shard_id: str
    after_seq: str | None
    after_time: float | None
    after_time_basis: str  # "record" (its creation time) or "checkpoint" (when it was written)
    before_seq: str | None
    before_time: float | None
    records: int | None
    count_basis: str  # "sequence_spacing", "lower_bound" or "unknown"
    cause: str


@dataclass(slots=True)
class OpenGap:
    """The start of a gap a reader ran into; it is measured with the first page read after.

    ``empty_pages`` counts the empty pages read since, looking for the first record left.
    """

    after_seq: str | None
    after_time: float | None
    after_time_basis: str
    cause: str
    empty_pages: int = 0


def sequence_stride(records: Sequence[Record] | None) -> float | None:
    """The mean distance between consecutive sequence numbers of a page (None below 2)."""
    if not records or len(records) < 2:
        return None
    try:
        first = int(records[0]["dynamodb"]["SequenceNumber"])
        last = int(records[-1]["dynamodb"]["SequenceNumber"])
    except (KeyError, TypeError, ValueError):
        return None
    stride = (last - first) / (len(records) - 1)
    return stride if stride > 0 else None


def estimate_lost(
    after: str | None, upper: str | None, stride: float | None, *, inclusive: bool
) -> int | None:
    """How many records lay after ``after`` and before ``upper`` (through it if
    ``inclusive``), from the sequence-number spacing ``stride`` seen around the gap.

    DynamoDB does not say how many records a trimmed range held; sequence numbers only grow.
    Where a shard's records are evenly spaced the estimate is exact. None: not estimable.
    """
    if after is None or upper is None or stride is None or stride <= 0:
        return None
    span = int(upper) - int(after)
    if span <= 0:
        return 0
    return max(0, round(span / stride) - (0 if inclusive else 1))


def measure_gap(
    shard_id: str,
    gap: OpenGap,
    records: list[Record],
    *,
    ended: bool,
    ending_sequence: str | None,
    stride_before: float | None,
) -> Gap | None:
    """The gap ``gap`` measured with the first page read after it, or None while it cannot
    be yet (an empty page of a shard that goes on: read a little further first).

    Args:
        shard_id: the shard.
        gap: where the gap started; its ``empty_pages`` count goes up when None is returned.
        records: the page read after the gap.
        ended: that page was the shard's last one.
        ending_sequence: the shard's last sequence number, if it is closed.
        stride_before: the sequence-number spacing of the last page read before the gap.
    """
    if not records and not ended and gap.empty_pages < GAP_EMPTY_PAGES:
        gap.empty_pages += 1
        return None
    stride = sequence_stride(records) or stride_before
    before = first_sequence(records)
    if before is not None:
        count = estimate_lost(gap.after_seq, before, stride, inclusive=False)
    else:
        end = ending_sequence if ended else None
        count = estimate_lost(gap.after_seq, end, stride, inclusive=True)
    if count is None:
        # The service said the position after the last record is gone: at least one.
        count, basis = 1, "lower_bound"
    else:
        count, basis = max(count, 1), "sequence_spacing"
    return Gap(
        shard_id=shard_id,
        after_seq=gap.after_seq,
        after_time=gap.after_time,
        after_time_basis=gap.after_time_basis,
        before_seq=before,
        before_time=created(records[0]) if records else None,
        records=count,
        count_basis=basis,
        cause=gap.cause,
    )


def unknown_gap(shard_id: str, after_seq: str | None, after_time: float | None, cause: str) -> Gap:
    """A gap whose size cannot be known: a shard or stream that vanished before it was read
    to its end (positions come from a checkpoint)."""
    return Gap(
        shard_id=shard_id,
        after_seq=after_seq,
        after_time=after_time,
        after_time_basis="checkpoint",
        before_seq=None,
        before_time=None,
        records=None,
        count_basis="unknown",
        cause=cause,
    )


def vanished_gap(
    shard_id: str,
    last_seen: str | None,
    last_read: tuple[float, float | None] | None,
    ending_sequence: str | None,
    cause: str,
) -> Gap | None:
    """The records a shard took with it when it vanished while being read, or None when
    none were left (its last record was read; only the end-of-shard page was missed).

    Args:
        last_seen: the last sequence number read (or the checkpoint).
        last_read: creation time of the last record read and the stride of its page.
        ending_sequence: the shard's last sequence number, if it was listed as closed.
    """
    if last_seen is not None and last_seen == ending_sequence:
        return None
    stride = last_read[1] if last_read else None
    count = estimate_lost(last_seen, ending_sequence, stride, inclusive=True)
    return Gap(
        shard_id=shard_id,
        after_seq=last_seen,
        after_time=last_read[0] if last_read else None,
        after_time_basis="record",
        before_seq=None,
        before_time=None,
        records=count or None,
        count_basis="sequence_spacing" if count else "unknown",
        cause=cause,
    )


def skip_older(records: list[Record], before: float) -> tuple[list[Record], bool]:
    """The records of a page created at or after ``before``, and whether the skipping is
    over (the page reached that time: records of a shard come in time order)."""
    if created(records[-1]) < before:
        return [], False
    if created(records[0]) >= before:
        return records, True
    return [r for r in records if created(r) >= before], True


def created(record: Record) -> float:
    """A record's ApproximateCreationDateTime (epoch seconds; 0 when it has none)."""
    part = record.get("dynamodb") if isinstance(record, dict) else None
    value = part.get("ApproximateCreationDateTime") if isinstance(part, dict) else None
    return float(value) if isinstance(value, int | float) else 0.0


def first_sequence(records: Sequence[Record]) -> str | None:
    """The first sequence number of a page (records without one are skipped)."""
    for record in records:
        part = record.get("dynamodb") if isinstance(record, dict) else None
        seq = part.get("SequenceNumber") if isinstance(part, dict) else None
        if isinstance(seq, str):
            return seq
    return None


def last_sequence(records: Sequence[Record]) -> str | None:
    """The last sequence number of a page that holds malformed records, if any."""
    for record in reversed(records):
        part = record.get("dynamodb") if isinstance(record, dict) else None
        seq = part.get("SequenceNumber") if isinstance(part, dict) else None
        if isinstance(seq, str):
            return seq
    return None


def iso(epoch: float | None) -> str | None:
    """An epoch time as UTC ISO 8601 to the second, for logs."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def record_loss(
    gap: Gap, *, stream: str, stream_arn: str | None, policy: str, metrics: Metrics
) -> None:
    """Count, log and apply ``on_data_loss`` (``policy``) to a gap of stream ``stream``.

    Raises:
        DataLossError: ``policy`` is ``fail``.
    """
    metrics.data_loss_events.labels(stream).inc()
    if gap.records:
        metrics.records_lost.labels(stream).inc(gap.records)
    log.error(
        "data_loss_detected",
        extra={
            "stream": stream,
            "stream_arn": stream_arn,
            "shard": gap.shard_id,
            "lost_after_seq": gap.after_seq,
            "lost_before_seq": gap.before_seq,
            "lost_from": iso(gap.after_time),
            "lost_from_basis": gap.after_time_basis,
            "lost_until": iso(gap.before_time),
            "records_lost": gap.records,
            "count_basis": gap.count_basis,
            "cause": gap.cause,
            "policy": policy,
        },
    )
    if policy == "fail":
        count = "an unknown number of" if gap.records is None else f"about {gap.records}"
        after = f"after sequence number {gap.after_seq}" if gap.after_seq else "at its start"
        raise DataLossError(
            f"stream {stream}: {count} records of shard {gap.shard_id} {after} were "
            f"lost before they were read ({gap.cause}); on_data_loss is 'fail': set it to "
            "'resume_trim_horizon' to accept the loss and continue"
        )
