"""The composition root: builds every part from the config, runs them, shuts down in order.

Start-up: open the checkpoint store, register this worker with the application's lease
coordinator (which refuses to start beside live workers running other sinks), start the
sinks, then read: a shard is read only under a lease of this worker.

Shutdown (SIGTERM/SIGINT, or ``Worker.stop()``):
  1. stop reading and taking leases: every shard reader is cancelled, lanes get no new
     records (leases are still renewed);
  2. drain: lanes deliver what they hold, for at most ``shutdown_grace`` seconds;
  3. write checkpoints (shielded), so a restart resumes right after what was settled;
  4. release every lease, so peers take the shards at once;
  5. stop the sinks in reverse order of starting.

After a signal, ``ExitDeadline`` ends the process ``EXIT_MARGIN_S`` after the grace if it
is still there (a handler blocking the event loop for good); ``LoopWatchdog`` reports an
event loop that does not run.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack

import anyio
from anyio.abc import TaskGroup
from prometheus_client import CollectorRegistry

from fanout.aws.clients import AwsClients
from fanout.config import Config, SinkConfig, StreamConfig
from fanout.delivery import Route, SinkGate
from fanout.delivery import deadletter as dead_letters
from fanout.errors import ConfigError, FanoutError
from fanout.filters import compile_filters
from fanout.httpclient import HttpClient
from fanout.observe.metrics import Metrics
from fanout.observe.watchdog import EXIT_MARGIN_S, ExitDeadline, LoopWatchdog
from fanout.progress.leases import LeaseCoordinator
from fanout.progress.open import open_store
from fanout.progress.renewals import LeaseTiming
from fanout.progress.store import CheckpointStore
from fanout.progress.tracker import ShardProgress
from fanout.progress.writer import CheckpointWriter
from fanout.retry import RetryPolicy
from fanout.sink import Sink, SinkContext
from fanout.stream.api import StreamsAPI
from fanout.stream.budget import PER_SHARD_BYTES, MemoryBudget
from fanout.stream.client import StreamsClient
from fanout.stream.follow import StreamWorker
from fanout.stream.reader import ReaderOptions

log = logging.getLogger("fanout.app")


class Worker:
    """One fanout process: every configured stream, sink and the checkpoint store.

    Args:
        config: the whole configuration.
        metrics: the metrics to fill (a fresh registry by default).
        reader_options: polling knobs and stream retry timing (tests shrink them); the
            checkpoint writer retries with the same ``retry`` policy.
        backoff: every sink's retry policy, instead of the one its config gives.
        handle_signals: stop on SIGTERM/SIGINT.
        streams: builds the DynamoDB Streams calls of a configured stream (a fake, in
            tests; the caller opens and closes it). Default: a ``StreamsClient`` per region
            and endpoint, opened and closed by the worker.
        store: the checkpoint store (opened and closed by the worker). Default: the one
            ``checkpoints`` configures, for the config's application.
        group_size: worker processes started together on this host (``--processes``).
        worker_id: this worker's id in the lease table (default: host, pid, random).
    """

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        reader_options: ReaderOptions | None = None,
        backoff: RetryPolicy | None = None,
        handle_signals: bool = True,
        streams: Callable[[StreamConfig], StreamsAPI] | None = None,
        store: CheckpointStore | None = None,
        aws: AwsClients | None = None,
        group_size: int = 1,
        worker_id: str | None = None,
    ) -> None:
        self.config = config
        self.settings = config.settings
        self.metrics = metrics or Metrics()
        self.reader_options = reader_options
        self.backoff = backoff
        self.handle_signals = handle_signals
        self._streams_factory = streams
        # One AWS session and one HTTP session for the process (the checkpoint store, the
        # stream clients, the sinks and the SQS dead-letter destinations use them); closed at
        # shutdown unless they were handed in.
        self.aws = aws or AwsClients()
        self._owns_aws = aws is None
        self.http = HttpClient()
        self.store: CheckpointStore = store if store is not None else open_store(config, self.aws)
        self.checkpoints = CheckpointWriter(
            self.store,
            self.metrics,
            shards=self._shard_progress,
            interval=self.settings.checkpoints.interval,
            retry=(reader_options or ReaderOptions()).retry,
            on_flush=self.update_gauges,
        )
        self.leases = LeaseCoordinator(
            self.store,
            self.metrics,
            sinks=config.sink_set(),
            timing=LeaseTiming(self.settings.checkpoints.lease_duration),
            group_size=group_size,
            worker_id=worker_id,
            shared_clock=self.settings.checkpoints.store == "sqlite",
            call=lambda fn: self.checkpoints.call(fn, stream="*"),
        )
        self.checkpoints.on_rejected = self.leases.rejected
        self._first_start = any(c.backfill == "on_first_start" for c in config.sinks.values())
        if self._first_start:
            from fanout.backfill import onstart

            def plan(previous: dict[str, str] | None) -> Awaitable[None]:
                return onstart.plan(config, self.store, self.aws, previous)

            self.leases.before_record = plan
        self.workers: list[StreamWorker] = []
        self.sinks: dict[str, Sink] = {}
        # One gate per sink, shared by its lanes and by dead-letter writes into it.
        self.gates = {name: SinkGate(cfg.max_in_flight) for name, cfg in config.sinks.items()}
        self.http_port: int | None = None
        self.started = anyio.Event()
        self.watchdog = LoopWatchdog(self.metrics, self.settings.loop_block_threshold)
        self.exit_deadline = ExitDeadline(self.settings.shutdown_grace + EXIT_MARGIN_S)
        self._stop = anyio.Event()
        self._fatal: BaseException | None = None
        # Bytes of records read and not settled, for the whole process (max_buffered_bytes).
        # Unset, it follows the shards being read (``fanout.stream.budget``).
        self.budget = MemoryBudget(
            config.max_buffered_bytes,
            None if self.settings.max_buffered_bytes else PER_SHARD_BYTES,
        )
        self.metrics.buffered_bytes.set_function(lambda: self.budget.used)
        self.metrics.buffered_bytes_limit.set_function(lambda: self.budget.limit or 0)
        names = list(self.settings.streams)
        self.metrics.declare(
            names, {name: cfg.streams or names for name, cfg in config.sinks.items()}
        )

    @property
    def streams(self) -> list[StreamWorker]:
        """The readers of every configured stream (empty until ``run`` starts them)."""
        return self.workers

    @property
    def registry(self) -> CollectorRegistry:
        """The Prometheus registry ``/metrics`` serves."""
        return self.metrics.registry

    @property
    def listen(self) -> tuple[str, int]:
        """Where ``/metrics``, ``/healthz`` and ``/readyz`` are served."""
        return self.settings.http.host, self.settings.http.port

    def stop(self) -> None:
        """Ask for a graceful shutdown."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once a shutdown was asked for."""
        return self._stop.is_set()

    def _on_fatal(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._stop.set()

    # -- building ---------------------------------------------------------------------------

    def _build_sinks(self) -> dict[str, Sink]:
        sinks: dict[str, Sink] = {}
        for name, cfg in self.config.sinks.items():
            entry = self.config.sink_type(name)
            context = SinkContext(
                metrics=self.metrics,
                logger=logging.getLogger(f"fanout.sink.{name}"),
                aws=self.aws,
                http=self.http,
                streams={s: self.settings.streams[s] for s in cfg.streams or self.settings.streams},
            )
            sinks[name] = entry.build(name, cfg, context)
        return sinks

    def _dead_letter(self, name: str, cfg: SinkConfig) -> dead_letters.DeadLetter:
        dl = cfg.dead_letter
        if dl.type == "sink":
            assert dl.sink is not None
            return dead_letters.SinkDeadLetter(self.sinks[dl.sink], self.gates[dl.sink])
        if dl.type == "sqs":
            from fanout.delivery.deadletter.sqs import SqsDeadLetter

            return SqsDeadLetter.for_sink(self.config, name, self.aws)
        if dl.type == "s3":
            from fanout.delivery.deadletter.s3 import S3DeadLetter

            return S3DeadLetter.for_sink(self.config, name, self.aws)
        return dead_letters.FileDeadLetter(self.config.dead_letter_path(name), mode=dl.file_mode)

    def _routes(self) -> list[Route]:
        routes = []
        for name, cfg in self.config.sinks.items():
            retry = cfg.retry
            backoff = self.backoff or RetryPolicy(retry.initial_backoff, retry.max_backoff)
            routes.append(
                Route(
                    name=name,
                    sink=self.sinks[name],
                    config=cfg,
                    predicate=compile_filters(cfg.filters, path=f"sinks.{name}.filters"),
                    dead_letter=self._dead_letter(name, cfg),
                    backoff=backoff,
                    metrics=self.metrics,
                    gate=self.gates[name],
                )
            )
        return routes

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; returns the process exit code (0 on a clean stop)."""
        try:
            async with AsyncExitStack() as stack:
                if self._owns_aws:
                    stack.push_async_callback(self.aws.aclose)  # after everything using it
                await self.store.open()
                stack.push_async_callback(self.store.aclose)
                stack.push_async_callback(self.http.aclose)
                await self.leases.start()
                clients = await self._stream_clients(stack)
                self.sinks = self._build_sinks()
                for sink in self.sinks.values():
                    stack.push_async_callback(sink.stop)
                    await sink.start()
                routes = self._routes()
                for route in routes:
                    stack.push_async_callback(route.dead_letter.aclose)
                async with anyio.create_task_group() as services:
                    services.start_soon(self.watchdog.run)
                    if self.handle_signals:
                        services.start_soon(self._watch_signals)
                    if self.settings.http.enabled:
                        from fanout.observe.health import serve

                        self.http_port = await services.start(serve, self)
                    services.start_soon(self.checkpoints.run)
                    services.start_soon(self.leases.run)
                    if self._first_start:
                        from fanout.backfill import onstart

                        services.start_soon(
                            onstart.run_pending,
                            self.config,
                            self.store,
                            self.aws,
                            routes,
                            self.leases.worker_id,
                            self.metrics,
                        )
                    await self._read_and_drain(clients, routes)
                    # Leases are still renewed here: the last checkpoints are written under
                    # them, then they are released so peers take the shards at once.
                    # Shielded, and bounded: a store that stopped answering must not keep
                    # the process from exiting (peers then wait for the leases to expire).
                    bound = max(5.0, self.settings.checkpoints.lease_duration)
                    with anyio.CancelScope(shield=True):
                        try:
                            with anyio.fail_after(bound):
                                await self.checkpoints.close()
                        except TimeoutError:
                            log.error("checkpoint_failed", extra={"error": "final flush timed out"})
                        finally:
                            with anyio.move_on_after(bound):
                                await self.leases.release_all()
                    services.cancel_scope.cancel()
                log.info("worker_stopped", extra={"reason": "fatal" if self._fatal else "stop"})
        except ConfigError as exc:
            log.error("worker_failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return 2
        except FanoutError as exc:
            log.error("worker_failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return 1
        if self._fatal is not None:
            log.error(
                "worker_failed", extra={"error": f"{type(self._fatal).__name__}: {self._fatal}"}
            )
            return 1
        return 0

    async def _stream_clients(self, stack: AsyncExitStack) -> dict[str, StreamsAPI]:
        """The DynamoDB Streams calls of every configured stream, by stream name."""
        if self._streams_factory is not None:
            factory = self._streams_factory
            return {name: factory(cfg) for name, cfg in self.settings.streams.items()}
        clients: dict[tuple[str | None, str | None], StreamsClient] = {}
        for stream in self.settings.streams.values():
            key = (stream.region, stream.endpoint_url)
            if key not in clients:
                client = await StreamsClient.create(
                    self.aws, region=stream.region, endpoint_url=stream.endpoint_url
                )
                await client.open()
                stack.push_async_callback(client.aclose)
                clients[key] = client
        return {
            name: clients[(cfg.region, cfg.endpoint_url)]
            for name, cfg in self.settings.streams.items()
        }

    async def _read_and_drain(self, clients: dict[str, StreamsAPI], routes: list[Route]) -> None:
        grace = self.settings.shutdown_grace
        drain = anyio.CancelScope()
        with drain:
            async with anyio.create_task_group() as lanes:
                self.workers = [
                    StreamWorker(
                        name,
                        cfg,
                        clients[name],
                        self.store,
                        self.checkpoints,
                        routes,
                        self.metrics,
                        lanes,
                        self.reader_options,
                        on_fatal=self._on_fatal,
                        leases=self.leases,
                        budget=self.budget,
                    )
                    for name, cfg in self.settings.streams.items()
                ]
                async with anyio.create_task_group() as readers:
                    for worker in self.workers:
                        readers.start_soon(self._run_stream, worker, readers)
                    self.started.set()
                    log.info(
                        "worker_started",
                        extra={
                            "application": self.store.application,
                            "worker": self.leases.worker_id,
                            "streams": list(self.settings.streams),
                            "sinks": list(self.sinks),
                        },
                    )
                    await self._stop.wait()
                    self.leases.stop_taking()
                    readers.cancel_scope.cancel()
                log.info("draining", extra={"grace_s": grace})
                drain.deadline = anyio.current_time() + grace
        if drain.cancelled_caught:
            pending = [
                {"stream": w.name, "shard": p.shard_id, "lease_valid": p.may_deliver()}
                for w in self.workers
                for p in list(w.progress.values())
                if p.pending
            ]
            log.warning(
                "drain_timed_out",
                extra={"grace_s": grace, "pending_shards": len(pending), "shards": pending[:10]},
            )

    async def _run_stream(self, worker: StreamWorker, readers: TaskGroup) -> None:
        try:
            await worker.run()
        except FanoutError as exc:
            log.error(
                "stream_failed",
                extra={"stream": worker.name, "error": f"{type(exc).__name__}: {exc}"},
            )
            self._on_fatal(exc)

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            # Whatever a handler does (even block the event loop for good), the process
            # ends within shutdown_grace + EXIT_MARGIN_S of the signal.
            self.exit_deadline.install((signal.SIGTERM, signal.SIGINT))
            async for signum in signals:
                log.info("signal_received", extra={"signal": signal.Signals(signum).name})
                self.stop()

    def _shard_progress(self) -> Iterator[ShardProgress]:
        """The progress of every shard of every stream (what the checkpoint writer flushes)."""
        for worker in self.workers:
            yield from worker.progress.values()

    def update_gauges(self) -> None:
        stall = self.settings.http.stall_timeout
        now = time.monotonic()
        for worker in self.workers:
            progresses = list(worker.progress.values())
            pending = sum(t.pending for p in progresses for t in p.tickets)
            self.metrics.in_flight.labels(worker.name).set(pending)
            stalled = sum(1 for p in progresses if p.pending and now - p.last_progress > stall)
            self.metrics.stalled_shards.labels(worker.name).set(stalled)
            if progresses:
                oldest = min(p.last_progress for p in progresses)
                self.metrics.progress_age.labels(worker.name).set(max(0.0, now - oldest))

    def stalled_shards(self) -> list[tuple[str, str, float]]:
        """(stream, shard, seconds without progress) of shards stuck with pending records."""
        stall = self.settings.http.stall_timeout
        now = time.monotonic()
        return [
            (w.name, p.shard_id, now - p.last_progress)
            for w in self.workers
            for p in list(w.progress.values())
            if p.pending and now - p.last_progress > stall
        ]
