"""What happens to a batch whose first send failed: retry rounds, bisection, give-ups.

Delivery of one batch ends only when every record in it is settled: delivered, or written to
the dead-letter destination.

When a send fails, the batch goes through retry *rounds* separated by backoff (full
jitter). Within a round:

* a send that raises fails all its records; with ``bisect_on_error`` it is split in halves,
  sent at once, until the failing record is alone (at most ``ceil(log2(n)) + 1`` sends
  contain it per round). An ordered sink stops at the first failing half: the records after
  it wait. After a whole-send failure in a round with no success yet (in it or the round
  before), an unordered sink sends the other halves whole instead of splitting them
  further, so an outage costs a handful of calls per round, not one per record. A send that
  raised with a ``retry_after`` is not split at once (its halves would call the sink sooner
  than it asked): its records wait for the next round;
* per-record answers are honoured: delivered records are done, permanent failures go to the
  dead-letter destination at once, retryable ones are sent again next round (for an ordered
  sink, with every later record of the batch);
* a record is given up on (dead-lettered) once it failed ``max_attempts`` rounds or is older
  than ``max_record_age``. For an ordered sink only the first failing record of an answer
  counts an attempt; once it is given up, the records behind it are sent again at once.

The wait before the next round is at least the longest ``retry_after`` an answer of the round
asked for (and the sink's gate starts no call of any lane sooner).

A record running out of attempts (``max_attempts``) in a round in which the sink did nothing
right makes the sink *suspected down*. Two more sends of other records failing as a whole
(an exception, or every record failed: for an ordered sink only when that send held one
record, since its answer after the first failure says nothing) with nothing succeeding in
between make it *down*: from then on, until a send succeeds, a send that fails as a whole is
given up at once, without bisection or backoff, since its records have waited through a
whole retry budget already. This keeps a sink that is down from holding its shards back for
much longer than one retry budget, so the other sinks of those shards keep flowing; a poison
record alone never makes a sink count as down, and the first successful send ends it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from fanout.delivery import deadletter as dead_letters
from fanout.delivery.gate import retry_after
from fanout.delivery.giveup import DeadLetterWriter
from fanout.delivery.route import Route
from fanout.delivery.telemetry import LaneTelemetry
from fanout.records import Record, change_time
from fanout.sink import Failure, Failures

log = logging.getLogger("fanout.dispatch")

# Error classes stored with dead-lettered records that did not fail with an exception.
RETRYABLE_FAILURE = "SinkFailure"
PERMANENT_FAILURE = "Rejected"
_DOWN = 3  # strikes (see SinkHealth) that make a sink count as down
_DOWN_NOTE = (
    "gave up without further retries: the sink failed every call since a retry budget ran out"
)

Attempt = Callable[[Sequence[Record]], Awaitable[tuple[Failures, BaseException | None]]]
"""One send of some records: ``(failures, None)``, or ``({}, exception)`` if it raised."""


class SinkHealth:
    """Whether a lane's sink is taken to be down (see the module docstring).

    ``strikes`` is 0 while the sink works; 1 once a budget ran out while every call failed
    (suspected down); each later whole-send failure of other records adds one; ``_DOWN`` and
    above: down. It outlives batches: one per lane.
    """

    __slots__ = ("_announced", "strikes")

    def __init__(self) -> None:
        self.strikes = 0
        self._announced = False  # the current down period was logged

    @property
    def down(self) -> bool:
        """True while the sink is taken to be down."""
        return self.strikes >= _DOWN

    def works(self) -> None:
        """A send succeeded (or was answered sensibly): the sink is not down."""
        self.strikes = 0

    def suspect(self) -> None:
        """A retry budget ran out in a round in which the sink did nothing right."""
        if not self.strikes:
            self.strikes = 1
            self._announced = False

    def strike(self) -> None:
        """A send failed as a whole; it counts only once the sink is suspected."""
        if self.strikes:
            self.strikes += 1

    def announce(self) -> bool:
        """True the first time it is asked in a down period (log ``sink_down`` then)."""
        if self._announced:
            return False
        self._announced = True
        return True


class _Round:
    """Bookkeeping of one retry round of one batch."""

    __slots__ = ("blind", "blocked", "give_ups", "progress", "trusted", "wait")

    def __init__(self, trusted: bool = False) -> None:
        self.progress = False  # some send of this round was answered sensibly
        self.trusted = trusted  # the previous round's sends were: always bisect
        self.blind = False  # a send failed as a whole before anything succeeded
        self.blocked = False  # ordered: a retained failure holds back the rest
        self.give_ups: list[tuple[int, str, str]] = []  # (index in batch, class, message)
        self.wait: float | None = None  # the longest retry_after an answer asked for

    def asked(self, seconds: float | None) -> None:
        if seconds is not None and (self.wait is None or seconds > self.wait):
            self.wait = seconds


class Recovery:
    """The retry rounds of one batch after its first send failed.

    Pieces are lists of indices into the batch, in stream order; ``tries[i]`` counts the
    rounds in which record ``i`` failed.

    Args:
        batch: the records, in stream order.
        route: the sink's route (retry policy, ordering, backoff).
        send: sends some records through the sink's gate.
        health: the lane's view of whether the sink is down.
        telemetry: the lane's metrics and log fields.
        give_ups: writes what is given up on.
    """

    def __init__(
        self,
        batch: list[Record],
        *,
        route: Route,
        send: Attempt,
        health: SinkHealth,
        telemetry: LaneTelemetry,
        give_ups: DeadLetterWriter,
    ) -> None:
        self.batch = batch
        self.route = route
        self.tries = [0] * len(batch)
        self.first_failed = [0.0] * len(batch)
        self._send = send
        self._health = health
        self._telemetry = telemetry
        self._give_ups = give_ups
        policy = route.config.retry
        self._bisect = policy.bisect_on_error
        self._ordered = route.sink.ordered
        self._max_attempts: float = math.inf if policy.max_attempts == -1 else policy.max_attempts
        self._work: deque[list[int]] = deque()  # pieces still to send in this round
        self._pending: deque[list[int]] = deque()  # pieces for the next round
        self._round = _Round()

    async def run(self, failures: Failures, exc: BaseException | None) -> None:
        """Settle every record: ``failures``/``exc`` answered the first send of the batch."""
        known: tuple[Failures, BaseException | None] | None = (failures, exc)
        self._pending.append(list(range(len(self.batch))))
        rounds = 0
        while True:
            self._work, self._pending = self._pending, deque()
            self._round = _Round(trusted=self._round.progress)
            while self._work:
                piece = self._work.popleft()
                if self._round.blocked:
                    self._pending.append(piece)
                    continue
                if known is not None:
                    (failures, exc), known = known, None
                else:
                    failures, exc = await self._send([self.batch[i] for i in piece])
                if exc is None:
                    self._answered(piece, failures)
                else:
                    self._raised(piece, exc)
            if self._round.give_ups:
                await self._give_ups.write(self._entries(time.time()))
            if not self._pending:
                return
            rounds += 1
            await self._next_round(rounds)

    async def _next_round(self, rounds: int) -> None:
        retrying = sum(len(p) for p in self._pending)
        self._telemetry.retries.inc()
        self._telemetry.retried.inc(retrying)
        backoff = self.route.backoff
        delay = backoff.delay(rounds, self._round.wait)
        head = self._pending[0][0]
        log.warning(
            "batch_retrying",
            extra=self._telemetry.fields(
                self.batch[head],
                records=retrying,
                attempt=self.tries[head] + 1,
                round=rounds + 1,
                delay_s=round(delay, 3),
            ),
        )
        await backoff.sleep(delay)

    # -- one answer -----------------------------------------------------------------------------

    def _raised(self, piece: list[int], exc: BaseException) -> None:
        """The send of ``piece`` raised: bisect it, or fail it as a whole."""
        state = self._round
        wait = retry_after(exc)
        state.asked(wait)
        log.warning(
            "sink_send_failed",
            extra=self._telemetry.fields(
                self.batch[piece[0]], records=len(piece), error=f"{type(exc).__name__}: {exc}"
            ),
        )
        if (
            self._bisect
            and wait is None
            and len(piece) > 1
            and not self._health.down
            and (state.progress or state.trusted or not state.blind)
        ):
            middle = len(piece) // 2
            self._work.appendleft(piece[middle:])
            self._work.appendleft(piece[:middle])
            return
        if not state.progress:
            state.blind = True
        error_class = type(exc).__name__
        reason = f"{error_class}: {exc}" if str(exc) else error_class
        failure = Failure(True, reason)
        self._fail_whole(piece, error_class, dict.fromkeys(range(len(piece)), failure))

    def _answered(self, piece: list[int], failures: Failures) -> None:
        """The send of ``piece`` returned per-record ``failures``."""
        if failures and (min(failures) < 0 or max(failures) >= len(piece)):
            failures = {k: v for k, v in failures.items() if 0 <= k < len(piece)}
        state = self._round
        if not failures:
            state.progress = True
            self._health.works()
            self._telemetry.count_delivered(len(piece), change_time(self.batch[piece[0]]))
            return
        state.asked(retry_after(failures))
        healthy = len(failures) < len(piece) or any(not f.retryable for f in failures.values())
        if healthy:
            state.progress = True
            self._health.works()
        if not healthy and (self._health.down or not self._ordered or len(piece) == 1):
            self._fail_whole(piece, RETRYABLE_FAILURE, failures)
        elif self._ordered:
            resend = self._classify_ordered(piece, failures)
            if resend:
                self._work.appendleft(resend)
        else:
            self._classify_unordered(piece, failures)

    # -- classifying one answer -----------------------------------------------------------------

    def _failed(self, i: int, now: float) -> str | None:
        """Record ``i`` failed a round: count it; why its retry budget is spent, or None."""
        self.tries[i] += 1
        if not self.first_failed[i]:
            self.first_failed[i] = now
        attempts = self.tries[i]
        policy = self.route.config.retry
        if policy.max_attempts != -1 and attempts >= policy.max_attempts:
            return f"gave up after {attempts} attempts"
        limit = policy.max_record_age
        if limit != -1:
            created = change_time(self.batch[i])
            if created is not None and now - created > limit:
                return f"record older than max_record_age ({limit:g}s)"
        return None

    def _fail_whole(self, piece: list[int], error_class: str, failures: Failures) -> None:
        """Every record of ``piece`` failed (``failures`` holds a retryable one for each,
        maybe a permanent one for some): count the attempt, give up or keep each."""
        now = time.time()
        self._health.strike()  # another send failing as a whole since the budget ran out
        spent: dict[int, str] = {}
        for position, i in enumerate(piece):
            why = self._failed(i, now)
            if why is not None:
                spent[position] = why
        state = self._round
        if not state.progress and any(self.tries[i] >= self._max_attempts for i in piece):
            self._health.suspect()
        keep: list[int] = []
        for position, i in enumerate(piece):
            failure = failures[position]
            if not failure.retryable:
                state.give_ups.append((i, PERMANENT_FAILURE, failure.reason))
            elif position in spent:
                state.give_ups.append((i, error_class, f"{failure.reason} ({spent[position]})"))
            elif self._health.down:
                self._announce_down(self.batch[i])
                state.give_ups.append((i, error_class, f"{failure.reason} ({_DOWN_NOTE})"))
            else:
                keep.append(i)
        if keep:
            self._pending.append(keep)
            if self._ordered:
                state.blocked = True

    def _classify_unordered(self, piece: list[int], failures: Failures) -> None:
        now = time.time()
        state = self._round
        keep: list[int] = []
        for position in sorted(failures):
            failure = failures[position]
            i = piece[position]
            if not failure.retryable:
                state.give_ups.append((i, PERMANENT_FAILURE, failure.reason))
                continue
            why = self._failed(i, now)
            if why is not None:
                state.give_ups.append((i, RETRYABLE_FAILURE, f"{failure.reason} ({why})"))
            else:
                keep.append(i)
        self._telemetry.count_delivered(
            len(piece) - len(failures), change_time(self.batch[piece[0]])
        )
        if keep:
            self._pending.append(keep)

    def _classify_ordered(self, piece: list[int], failures: Failures) -> list[int] | None:
        """Records before the first retryable failure are delivered; that one counts an
        attempt. If it is kept, it and every later record wait for the next round; if it
        is given up, the later records are returned to be sent again at once (their answers
        only echoed the failure in front of them). Permanent failures are given up anyway.
        """
        now = time.time()
        state = self._round
        positions = sorted(failures)
        first = next((p for p in positions if failures[p].retryable), None)
        for position in positions:
            failure = failures[position]
            if not failure.retryable:
                state.give_ups.append((piece[position], PERMANENT_FAILURE, failure.reason))
        sample = change_time(self.batch[piece[0]])
        if first is None:  # only permanent failures: everything else was delivered
            self._telemetry.count_delivered(len(piece) - len(failures), sample)
            return None
        self._telemetry.count_delivered(first - sum(1 for p in positions if p < first), sample)
        i = piece[first]
        rest = [
            piece[p]
            for p in range(first + 1, len(piece))
            if p not in failures or failures[p].retryable
        ]
        why = self._failed(i, now)
        if why is None:
            self._pending.append([i, *rest])
            state.blocked = True
            return None
        if not state.progress and self.tries[i] >= self._max_attempts:
            self._health.suspect()
        state.give_ups.append((i, RETRYABLE_FAILURE, f"{failures[first].reason} ({why})"))
        return rest or None

    def _announce_down(self, record: Record) -> None:
        if self._health.announce():
            log.error(
                "sink_down",
                extra=self._telemetry.fields(
                    record,
                    note="every call failed since a retry budget ran out; records of sends "
                    "that fail as a whole are dead-lettered without retries until one succeeds",
                ),
            )

    def _entries(self, now: float) -> list[dead_letters.Entry]:
        give_ups = self._give_ups
        return [
            give_ups.entry(
                self.batch[i],
                error_class=error_class,
                message=message,
                attempts=max(1, self.tries[i]),
                first_failure_at=self.first_failed[i] or now,
                last_failure_at=now,
            )
            for i, error_class, message in sorted(self._round.give_ups)
        ]
