"""The sink contract: what every destination (built-in or third-party) implements, and how
sink types are found (the ``fanout.sinks`` entry point group)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from fanout.errors import ConfigError
from fanout.records import Record

if TYPE_CHECKING:
    from fanout.aws.clients import AwsClients
    from fanout.config.settings import Settings
    from fanout.config.streams import StreamConfig
    from fanout.httpclient import HttpClient
    from fanout.observe.metrics import Metrics

ENTRY_POINT_GROUP = "fanout.sinks"


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one record of a batch was not delivered.

    Args:
        retryable: True for a transient failure (resend later), False for a permanent one
            (the record goes to the dead-letter destination at once).
        reason: a short, human readable explanation; stored with the dead-lettered record.
        retry_after: seconds the destination asked to be left alone (an HTTP
            ``Retry-After``); the sink is not called again sooner (an hour at most).
    """

    retryable: bool
    reason: str
    retry_after: float | None = None


# Per-record outcomes of one send(): index in the batch -> Failure. A record whose index is
# absent was delivered. Sparse on purpose: the common answer ("all delivered") is an empty
# dict, so the hot path builds no per-record result objects.
Failures = dict[int, Failure]


@dataclass
class Run:
    """What ``send_run`` did with its batches, in order: ``seconds`` holds how long each
    batch delivered whole took; the batch after those (index ``len(seconds)``), if any,
    failed with ``failures`` or raised ``error`` after ``stop_seconds``, or was not sent
    (neither: ``may_go_on`` said no); later batches were not sent."""

    seconds: list[float] = field(default_factory=list)
    failures: Failures = field(default_factory=dict)
    error: BaseException | None = None
    stop_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What a sink gets from the worker when it is built: shared clients, metrics, a logger.

    Everything here is shared by every sink of the process and owned by whoever made the
    context (the worker, or the caller of ``standalone()``), which closes the clients after
    every sink's ``stop()``. A sink never closes them.

    Attributes:
        metrics: the process's metric families; label what a sink adds with its name.
        logger: the sink's logger, ``fanout.sink.<name>``.
        aws: shared aiobotocore clients (``await aws.client("sqs", region=...)``) and the
            process's credentials, for requests signed by hand with
            ``fanout.aws.signer.Signer.sign``.
        http: the shared aiohttp session (``http.session()``), for HTTP destinations.
        streams: the configurations of the streams that feed the sink, by name (empty
            outside a worker), for start-up checks of the sources (e.g. their view type).
    """

    metrics: Metrics
    logger: logging.Logger
    aws: AwsClients
    http: HttpClient
    streams: Mapping[str, StreamConfig] = field(default_factory=dict)

    @classmethod
    def standalone(
        cls,
        name: str = "sink",
        *,
        metrics: Metrics | None = None,
        aws: AwsClients | None = None,
        http: HttpClient | None = None,
        streams: Mapping[str, StreamConfig] | None = None,
    ) -> SinkContext:
        """A context for a sink built outside a worker (tests, command-line tools).

        Cheap: metrics on a fresh registry, the logger ``fanout.sink.<name>``, and clients
        that open nothing until a sink uses them. Close it with ``aclose()`` after the
        sink's ``stop()``.
        """
        from fanout.aws.clients import AwsClients
        from fanout.httpclient import HttpClient
        from fanout.observe.metrics import Metrics

        return cls(
            metrics=metrics if metrics is not None else Metrics(),
            logger=logging.getLogger(f"fanout.sink.{name}"),
            aws=aws if aws is not None else AwsClients(),
            http=http if http is not None else HttpClient(),
            streams=dict(streams or {}),
        )

    async def aclose(self) -> None:
        """Close the HTTP session and the AWS clients (for the owner of the context)."""
        try:
            await self.http.aclose()
        finally:
            await self.aws.aclose()


class Sink(Protocol):
    """A destination for change records.

    Lifecycle: ``start()`` once, then ``send()`` any number of times, then ``stop()``.
    ``stop()`` is idempotent and is called even if ``start()`` failed.

    Concurrency: ``send()`` may run concurrently for different shards (and, with
    ``parallelization_factor > 1``, for different item keys of one shard); batches of one
    shard and key arrive in stream order and never overlap.

    Attributes:
        name: the sink's name from the configuration.
        ordered: when True, a failed record holds back every later record of its batch
            (they are retried together, as Lambda does with ``batchItemFailures``); when
            False only the failed records are retried.

    A sink must not change the records it is given: other sinks receive the same objects.
    A sink that may (one that hands them to user code, as the ``handler`` sink does) says so
    with a true ``mutates_records`` attribute; it then receives records of its own, and a
    retry or the dead-letter destination gets them as they were read.
    """

    name: str
    ordered: bool

    async def start(self) -> None:
        """Open connections; raise to fail start-up."""

    async def send(self, batch: Sequence[Record]) -> Failures:
        """Deliver ``batch`` and report the records that were not delivered.

        Returns:
            A mapping from index in ``batch`` to ``Failure``; empty when all were delivered.

        Raises:
            Exception: any exception means nothing is known to be delivered; the whole
                batch counts as a retryable failure (and may be bisected).
        """
        ...

    async def stop(self) -> None:
        """Flush and close. Idempotent."""


class RunSink(Sink, Protocol):
    """A sink that can send several batches of one lane in one go (``send_run``), as
    calls one after the other that stop at the first failure; worth it when each send has
    a fixed cost of its own (a handler on a thread: two thread switches). A lane sends a
    run when several full batches are waiting and ``sends_runs`` is true.
    """

    @property
    def sends_runs(self) -> bool:
        """True while ``send_run`` may be used."""
        ...

    async def send_run(
        self, batches: Sequence[Sequence[Record]], may_go_on: Callable[[], bool]
    ) -> Run:
        """Send ``batches`` in order, as ``send`` would one by one, until one is not
        delivered whole (``Run.failures``, ``Run.error``) or ``may_go_on()`` (asked before
        each, from any thread) is false. Raises only the worker's own cancellation."""
        ...


C = TypeVar("C", bound=BaseModel)


def _no_check(name: str, config: Any, path: str) -> None:
    return None


def _no_settings_check(name: str, config: Any, path: str, settings: Settings) -> None:
    return None


@dataclass(frozen=True)
class SinkType(Generic[C]):
    """How to validate and build one kind of sink.

    Attributes:
        config: the pydantic model of the sink's options; a subclass of
            ``fanout.config.SinkConfig`` whose ``type`` field is a ``Literal`` of its name.
        build: makes the sink from its name, validated config and context.
        check: extra start-up validation that needs no network (raise ConfigError naming
            the field; ``path`` is the sink's path in the config, e.g. ``sinks.audit``).
        check_settings: like ``check``, for what depends on the rest of the configuration
            (the streams, other sinks); called after ``check`` with the whole ``Settings``.
    """

    config: type[C]
    build: Callable[[str, C, SinkContext], Sink]
    check: Callable[[str, C, str], None] = _no_check
    check_settings: Callable[[str, C, str, Settings], None] = _no_settings_check


class SinkRegistry(Mapping[str, "SinkType[Any]"]):
    """Sink types by name: the ones given, then the ``fanout.sinks`` entry points.

    Built-in sinks are entry points of the ``fanout`` distribution itself, so they are found
    exactly as third-party sinks are. A type given explicitly shadows an entry point of its
    name. Entry points are loaded on first use, one at a time, so a broken plugin fails only
    a configuration that uses it.
    """

    def __init__(
        self, types: Mapping[str, SinkType[Any]] | None = None, *, entry_points: bool = True
    ) -> None:
        self._types: dict[str, SinkType[Any]] = dict(types or {})
        self._use_entry_points = entry_points
        self._points: dict[str, EntryPoint] | None = None

    def _entry_points(self) -> dict[str, EntryPoint]:
        if self._points is None:
            self._points = {}
            if self._use_entry_points:
                for ep in entry_points(group=ENTRY_POINT_GROUP):
                    self._points.setdefault(ep.name, ep)
        return self._points

    def __getitem__(self, kind: str) -> SinkType[Any]:
        found = self._types.get(kind)
        if found is not None:
            return found
        ep = self._entry_points()[kind]  # KeyError: unknown type
        try:
            loaded = ep.load()
        except Exception as exc:
            raise ConfigError(
                "", f"sink type {kind!r} ({ep.value}) cannot be loaded: {exc}"
            ) from exc
        if not isinstance(loaded, SinkType):
            raise ConfigError("", f"sink type {kind!r} ({ep.value}) is not a fanout.sink.SinkType")
        self._types[kind] = loaded
        return loaded

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._types) | set(self._entry_points())))

    def __len__(self) -> int:
        return len(set(self._types) | set(self._entry_points()))

    def __contains__(self, kind: object) -> bool:
        return kind in self._types or kind in self._entry_points()
