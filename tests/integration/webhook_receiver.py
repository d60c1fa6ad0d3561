"""A local webhook receiver for tests: verifies Standard Webhooks signatures (its own
implementation of the specification, not the sink's) and answers from a script."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

TOLERANCE_S = 300  # the specification's recommended tolerance: five minutes


@dataclass(frozen=True)
class Answer:
    status: int = 200
    retry_after: str | None = None
    text: str = ""


OK = Answer()


@dataclass
class Request:
    """One request the receiver got."""

    at: float  # time.monotonic()
    webhook_id: str
    timestamp: str
    body: bytes
    headers: dict[str, str]
    status: int  # what it answered
    rejected: str | None  # why the signature check failed, if it did

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def keys(self) -> list[str]:
        """The pk of each record the request carried (plain format)."""
        data = self.json
        records = data["records"] if "records" in data else [data]
        return [str(r["keys"]["pk"]) for r in records]


def key_of(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def verify(key: bytes, headers: Any, body: bytes, now: float) -> str | None:
    """Why the request fails Standard Webhooks verification, or None if it passes."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        return "missing headers"
    try:
        sent = int(stamp)
    except ValueError:
        return "bad timestamp"
    if abs(now - sent) > TOLERANCE_S:
        return "timestamp outside the tolerance"
    signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for item in signatures.split(" "):
        version, _, value = item.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return None
    return "no matching signature"


@dataclass
class Receiver:
    """Answers ``by_key[pk]`` in turn for requests about item ``pk`` (record mode), then
    ``sequence`` in turn, then ``decide(request)``, then 200. Unsigned or badly signed
    requests get 401 (when ``secret`` is set)."""

    secret: str | None = None
    by_key: dict[str, list[Answer]] = field(default_factory=dict)
    sequence: list[Answer] = field(default_factory=list)
    decide: Callable[[Request], Answer | None] | None = None
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def accepted(self) -> list[Request]:
        return [r for r in self.requests if 200 <= r.status < 300]

    def accepted_keys(self) -> list[str]:
        return [k for r in self.accepted() for k in r.keys]

    def event_ids(self) -> list[str]:
        """eventIDs of the records accepted (raw format)."""
        found = []
        for r in self.accepted():
            data = r.json
            found += [x["eventID"] for x in data.get("records", [data])]
        return found

    def _answer(self, request: Request) -> Answer:
        try:
            keys = request.keys
        except (KeyError, TypeError, orjson.JSONDecodeError):
            keys = []
        if len(keys) == 1 and self.by_key.get(keys[0]):
            return self.by_key[keys[0]].pop(0)
        if self.sequence:
            return self.sequence.pop(0)
        if self.decide is not None:
            decided = self.decide(request)
            if decided is not None:
                return decided
        return OK

    def handle(self, headers: Any, body: bytes) -> Answer:
        """Check and answer one request (called from the server's threads)."""
        rejected = None
        if self.secret is not None:
            rejected = verify(key_of(self.secret), headers, body, time.time())
        request = Request(
            at=time.monotonic(),
            webhook_id=headers.get("webhook-id", ""),
            timestamp=headers.get("webhook-timestamp", ""),
            body=body,
            headers=dict(headers),
            status=401,
            rejected=rejected,
        )
        with self._lock:
            answer = Answer(401, text=rejected) if rejected else self._answer(request)
            request.status = answer.status
            self.requests.append(request)
        return answer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver
    receiver: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        answer = self.receiver.handle(self.headers, body)
        text = answer.text.encode()
        self.send_response(answer.status)
        if answer.retry_after:
            self.send_header("Retry-After", answer.retry_after)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def serving(receiver: Receiver) -> Iterator[Receiver]:
    """Serve ``receiver`` on 127.0.0.1 (a free port, its own threads) at ``receiver.url``."""
    handler = type("Handler", (_Handler,), {"receiver": receiver})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
