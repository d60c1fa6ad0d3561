"""What a sink gets from the platform: SinkContext and the shared HTTP session."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from fanout import __version__
from fanout.aws.clients import AwsClients
from fanout.httpclient import HttpClient
from fanout.observe.metrics import Metrics
from fanout.sink import SinkContext


async def test_a_standalone_context_is_cheap_and_opens_nothing() -> None:
    context = SinkContext.standalone("audit")
    assert isinstance(context.metrics, Metrics)
    assert context.logger is logging.getLogger("fanout.sink.audit")
    assert isinstance(context.aws, AwsClients)
    assert not context.http.opened
    await context.aclose()
    await context.aclose()
    assert not context.http.opened


async def test_a_standalone_context_uses_what_it_is_given() -> None:
    metrics, aws, http = Metrics(), AwsClients(), HttpClient()
    context = SinkContext.standalone(metrics=metrics, aws=aws, http=http)
    assert (context.metrics, context.aws, context.http) == (metrics, aws, http)
    assert context.logger.name == "fanout.sink.sink"


def test_the_context_is_frozen_and_needs_every_part() -> None:
    context = SinkContext.standalone()
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.metrics = Metrics()  # type: ignore[misc]
    with pytest.raises(TypeError):
        SinkContext(logger=context.logger, aws=context.aws, http=context.http)  # type: ignore[call-arg]


async def test_the_http_session_is_shared_created_lazily_and_reopened_after_close() -> None:
    http = HttpClient()
    assert not http.opened
    session = http.session()
    assert http.session() is session
    assert http.opened
    await http.aclose()
    assert session.closed
    assert not http.opened
    await http.aclose()  # idempotent
    again = http.session()
    assert again is not session
    await http.aclose()


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"user_agent": request.headers.get("User-Agent")})

    app = web.Application()
    app.router.add_get("/", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/"))
    finally:
        await server.close()


async def test_the_shared_session_names_fanout_and_has_a_default_timeout(echo: str) -> None:
    http = HttpClient()
    try:
        session = http.session()
        async with session.get(echo) as resp:
            assert (await resp.json()) == {"user_agent": f"fanout/{__version__}"}
        assert session.timeout.total == 60.0
        assert session.timeout.sock_connect == 10.0
    finally:
        await http.aclose()


async def test_a_factory_makes_the_session_instead(echo: str) -> None:
    made: list[aiohttp.ClientSession] = []

    def factory() -> aiohttp.ClientSession:
        made.append(aiohttp.ClientSession(headers={"User-Agent": "probe"}))
        return made[-1]

    http = HttpClient(factory=factory)
    try:
        async with http.session().get(echo) as resp:
            assert (await resp.json()) == {"user_agent": "probe"}
        assert made == [http.session()]
    finally:
        await http.aclose()
    assert made[0].closed
