"""The HTTP side: JSON 1.0 requests in, answers and scripted faults out, served by aiohttp.

Requests are POSTs with ``X-Amz-Target: DynamoDBStreams_20120810.<Op>`` (or
``DynamoDB_20120810.DescribeTable``) and a JSON body; answers are
``application/x-amz-json-1.0`` with an ``x-amzn-RequestId`` (and ``x-amz-crc32`` for the
DynamoDB target, which botocore checks). The server runs in the caller's event loop or in a
thread with its own.
"""

from __future__ import annotations

import asyncio
import threading
import zlib
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from fanout.testing.streamserver.errors import HTTP_REASONS, ApiError
from fanout.testing.streamserver.faults import Call, FaultScript, fault_message
from fanout.testing.streamserver.operations import DYNAMODB_TARGET, parse_iterator

if TYPE_CHECKING:
    from fanout.testing.streamserver.faults import Fault
    from fanout.testing.streamserver.operations import Operation, Operations
    from fanout.testing.streamserver.state import ServerState

JSON_CONTENT_TYPE = "application/x-amz-json-1.0"


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or SerializationException."""
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            "SerializationException", "Start of structure or map found where not expected."
        ) from exc
    if not isinstance(body, dict):
        raise ApiError("SerializationException", "Expected a JSON object")
    return body


def check_auth(auth: str | None) -> None:
    """Accept a SigV4 Authorization header by its shape (signatures are not verified)."""
    if not auth:
        raise ApiError(
            "MissingAuthenticationTokenException", "Request is missing Authentication Token"
        )
    if not auth.startswith("AWS4-HMAC-SHA256 ") or not all(
        part in auth for part in ("Credential=", "SignedHeaders=", "Signature=")
    ):
        raise ApiError(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
            f"parameters. Authorization={auth[:40]}",
        )


class Wire:
    """Serves a server's operations over HTTP, counting calls and applying scripted faults.

    Counters and settings are the server's (read on every request, so tests may change them
    at any time); every model access happens under the server's ``lock``.
    """

    def __init__(
        self,
        server: ServerState,
        operations: Operations,
        faults: FaultScript,
        lock: threading.RLock,
    ) -> None:
        self._server = server
        self._operations = operations
        self._faults = faults
        self._lock = lock
        self._handlers = operations.handlers()
        self._request_counter = 0
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return self._runner is not None

    @property
    def threaded(self) -> bool:
        """Whether the server runs in a thread of its own (:meth:`listen_in_thread`)."""
        return self._thread is not None

    async def listen(self, host: str, port: int) -> int:
        """Listen in the running loop; return the port (``port`` 0 picks a free one)."""
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        return int(runner.addresses[0][1])

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def listen_in_thread(self, host: str, port: int, timeout: float) -> int:
        """Serve from a background thread with its own event loop; return the port."""
        ready = threading.Event()
        failure: list[BaseException] = []
        bound: list[int] = []

        async def serve() -> None:
            stop = asyncio.Event()
            try:
                bound.append(await self.listen(host, port) if not self.listening else port)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller thread
                failure.append(exc)
                ready.set()
                return
            self._thread_loop = asyncio.get_running_loop()
            self._thread_stop = stop
            ready.set()
            try:
                await stop.wait()
            finally:
                await self.close()

        thread = threading.Thread(
            target=lambda: asyncio.run(serve()), name="streamserver", daemon=True
        )
        thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the stream server did not start in time")
        if failure:
            thread.join(timeout)
            raise failure[0]
        self._thread = thread
        return bound[0]

    def close_thread(self, timeout: float) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop = self._thread_loop, self._thread_stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        self._thread_loop = None
        self._thread_stop = None

    # -- requests ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        target = request.headers.get("X-Amz-Target", "")
        op = target.rpartition(".")[2] or "Unknown"
        raw = await request.read()
        server = self._server
        try:
            if request.method != "POST":
                raise ApiError("UnknownOperationException", "", status=404)
            if server.require_auth:
                check_auth(request.headers.get("Authorization"))
            handler = self._operation(target)
            body = parse_body(raw)
            with self._lock:
                call = self._call(op, body)
                fault, delay = self._faults.pick(call)
            if delay > 0:
                await asyncio.sleep(delay)
            if fault is not None and fault.error is not None:
                return self._fault_response(request, op, fault, call)
            with self._lock:
                payload = handler(body)
            headers = {"Content-Type": JSON_CONTENT_TYPE, "x-amzn-RequestId": self._request_id()}
            if target.startswith(DYNAMODB_TARGET):
                headers["x-amz-crc32"] = str(zlib.crc32(payload))
            return web.Response(body=payload, status=200, headers=headers)
        except ApiError as err:
            with self._lock:
                server.errors[(op, err.code)] += 1
            return self._error_response(err)

    def _operation(self, target: str) -> Operation:
        prefix, _, op = target.rpartition(".")
        handler = self._handlers.get(prefix + ".", {}).get(op)
        if handler is None:
            raise ApiError("UnknownOperationException", "")
        return handler

    def _call(self, op: str, body: dict[str, Any]) -> Call:
        """Count the call and find the stream, shard and page it is about."""
        server = self._server
        call = Call(op, body)
        server.calls[op] += 1
        if op == "GetRecords":
            try:
                it = parse_iterator(str(body.get("ShardIterator", "")))
                call.stream_arn, call.shard_id = it.stream_arn, it.shard_id
            except ApiError:
                pass
        elif op in ("GetShardIterator", "DescribeStream"):
            call.stream_arn = body.get("StreamArn")
            if op == "GetShardIterator":
                call.shard_id = body.get("ShardId")
            else:
                call.page = self._operations.describe_stream_page(body)
        if call.shard_id is not None:
            server.shard_calls[(op, call.shard_id)] += 1
        return call

    # -- answers -----------------------------------------------------------------------------

    def _fault_response(
        self, request: web.Request, op: str, fault: Fault, call: Call
    ) -> web.StreamResponse:
        server = self._server
        error = fault.error
        if error == "reset":
            with self._lock:
                server.errors[(op, "reset")] += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if isinstance(error, int):
            with self._lock:
                server.errors[(op, str(error))] += 1
            status = fault.status or error
            text = fault.body
            if text is None:
                text = (fault.message or f"{status} {HTTP_REASONS.get(status, 'Error')}").encode()
            return web.Response(body=text, status=status, headers={"Content-Type": "text/plain"})
        assert error is not None
        message = fault.message or fault_message(
            error,
            call,
            account=server.account,
            expired=lambda: self._operations.expired_message(
                server.now() - server.iterator_ttl - 1
            ),
        )
        err = ApiError(error, message, status=fault.status)
        with self._lock:
            server.errors[(op, err.code)] += 1
        if fault.body is not None:
            return web.Response(
                body=fault.body,
                status=err.status,
                headers={"Content-Type": JSON_CONTENT_TYPE, "x-amzn-RequestId": self._request_id()},
            )
        return self._error_response(err)

    def _error_response(self, err: ApiError) -> web.Response:
        payload = orjson.dumps({"__type": err.wire_type, "message": err.message})
        headers = {"Content-Type": JSON_CONTENT_TYPE, "x-amzn-RequestId": self._request_id()}
        return web.Response(body=payload, status=err.status, headers=headers)

    def _request_id(self) -> str:
        with self._lock:
            self._request_counter += 1
            n = self._request_counter
        return f"{n:010d}{zlib.crc32(n.to_bytes(8, 'big')):08X}".ljust(52, "A")
