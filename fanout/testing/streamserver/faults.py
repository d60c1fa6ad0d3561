"""Scripted failures and delays: which calls a fault matches, when it fires, what it answers.

Faults are scripted through :class:`~fanout.testing.streamserver.StreamServer` (``fail``,
``throttle``, ``slow``); the wire asks the :class:`FaultScript` about every call before
answering it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fanout.testing.streamserver.errors import DEFAULT_MESSAGES


@dataclass(slots=True)
class Call:
    """What a fault predicate sees about one request."""

    op: str
    body: dict[str, Any]
    stream_arn: str | None = None
    shard_id: str | None = None
    page: int | None = None  # DescribeStream: 0 for the first page, 1 for the next...


@dataclass(eq=False)
class Fault:
    """A scripted failure or delay; see :meth:`StreamServer.fail`.

    A fault matches a call by ``op``, ``shard``, ``page`` and ``where`` (None matches all).
    The first ``after`` matching calls pass untouched; then each matching call fires with
    ``probability`` (drawn from the server's seeded RNG) until it has fired ``times`` times
    (None: forever). A firing fault sleeps ``delay`` seconds, then answers with ``error``:
    an error code (``"LimitExceededException"``, ``"InternalServerError"``...), an HTTP
    status for a plain-text answer (``503``; ``200`` with ``body`` serves a malformed answer),
    ``"reset"`` to drop the connection without an answer, or None for a delay only.
    ``status``, ``message`` and ``body`` override parts of the answer.
    """

    op: str | None = None
    error: str | int | None = "InternalServerError"
    times: int | None = 1
    probability: float = 1.0
    after: int = 0
    shard: str | None = None
    page: int | None = None
    delay: float = 0.0
    message: str | None = None
    status: int | None = None
    body: bytes | None = None
    where: Callable[[Call], bool] | None = None
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def matches(self, call: Call) -> bool:
        if self.op is not None and self.op != call.op:
            return False
        if self.shard is not None and self.shard != call.shard_id:
            return False
        if self.page is not None and self.page != call.page:
            return False
        return self.where is None or self.where(call)


class FaultScript:
    """The scripted faults, in the order they were added, and the RNG of their probabilities.

    Not thread-safe: the server holds its lock around every use.
    """

    def __init__(self, seed: int) -> None:
        self.faults: list[Fault] = []
        self._rng = random.Random(seed)

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def pick(self, call: Call) -> tuple[Fault | None, float]:
        """The fault that answers ``call`` (None: answer normally), and the total delay.

        Every matching delay-only fault adds its delay; the first matching fault with an
        error ends the search.
        """
        delay = 0.0
        for fault in self.faults:
            if fault.exhausted or not fault.matches(call):
                continue
            fault.seen += 1
            if fault.seen <= fault.after:
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue
            fault.fired += 1
            delay += fault.delay
            if fault.error is not None:
                return fault, delay
        return None, delay


def fault_message(code: str, call: Call, *, account: str, expired: Callable[[], str]) -> str:
    """The message of a fault answering ``code`` without a scripted message.

    ``expired`` words an ExpiredIteratorException for an iterator just past its age limit.
    """
    if code == "LimitExceededException" and call.shard_id is not None:
        return (
            f"Rate exceeded for shard {call.shard_id} in stream {call.stream_arn} "
            f"under account {account}."
        )
    if code == "ExpiredIteratorException":
        return expired()
    return DEFAULT_MESSAGES.get(code, code)
