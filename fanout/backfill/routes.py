"""The sinks a ``fanout backfill`` run loads, built and started as a worker builds them:
each sink's filter, retry timing, gate and dead-letter destination."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from fanout.aws.clients import AwsClients
from fanout.config import Config, SinkConfig
from fanout.delivery import Route, SinkGate
from fanout.delivery import deadletter as dead_letters
from fanout.filters import compile_filters
from fanout.httpclient import HttpClient
from fanout.observe.metrics import Metrics
from fanout.retry import RetryPolicy
from fanout.sink import Sink, SinkContext


async def build_routes(
    config: Config,
    sinks: list[str],
    aws: AwsClients,
    http: HttpClient,
    metrics: Metrics,
    stack: AsyncExitStack,
) -> list[Route]:
    """Build and start ``sinks`` (and the sinks they dead-letter into) as a worker does;
    each is stopped, and each dead-letter destination closed, when ``stack`` closes."""
    names = list(sinks)
    for name in sinks:  # a dead-letter sink is built too
        dl = config.sinks[name].dead_letter
        if dl.type == "sink" and dl.sink is not None and dl.sink not in names:
            names.append(dl.sink)
    built: dict[str, Sink] = {}
    gates = {name: SinkGate(config.sinks[name].max_in_flight) for name in names}
    for name in names:
        cfg = config.sinks[name]
        context = SinkContext(
            metrics=metrics,
            logger=logging.getLogger(f"fanout.sink.{name}"),
            aws=aws,
            http=http,
            streams={s: config.settings.streams[s] for s in cfg.streams or config.settings.streams},
        )
        sink = config.sink_type(name).build(name, cfg, context)
        stack.push_async_callback(sink.stop)
        await sink.start()
        built[name] = sink
    routes = []
    for name in sinks:
        cfg = config.sinks[name]
        dead_letter = _dead_letter(config, name, cfg, aws, built, gates)
        stack.push_async_callback(dead_letter.aclose)
        routes.append(
            Route(
                name=name,
                sink=built[name],
                config=cfg,
                predicate=compile_filters(cfg.filters, path=f"sinks.{name}.filters"),
                dead_letter=dead_letter,
                backoff=RetryPolicy(cfg.retry.initial_backoff, cfg.retry.max_backoff),
                metrics=metrics,
                gate=gates[name],
            )
        )
    return routes


def _dead_letter(
    config: Config,
    name: str,
    cfg: SinkConfig,
    aws: AwsClients,
    built: dict[str, Sink],
    gates: dict[str, SinkGate],
) -> dead_letters.DeadLetter:
    dl = cfg.dead_letter
    if dl.type == "sink":
        assert dl.sink is not None
        return dead_letters.SinkDeadLetter(built[dl.sink], gates[dl.sink])
    if dl.type == "sqs":
        from fanout.delivery.deadletter.sqs import SqsDeadLetter

        return SqsDeadLetter.for_sink(config, name, aws)
    return dead_letters.FileDeadLetter(config.dead_letter_path(name), mode=dl.file_mode)
