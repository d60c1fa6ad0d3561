"""Error reports to Sentry: handler and sink failures, tagged with stream, shard, sink and
sequence number (optional: ``pip install 'fanout[sentry]'``, on when ``FANOUT_SENTRY_DSN`` is
set).

What is reported are the worker's own log lines for failures that need a person, not every
retry: a send that failed as a whole (``sink_send_failed``), a record given up on
(``record_dead_lettered``), a failing dead-letter write, a malformed record, a sink that is
down, and a stream or worker that stopped. Each kind is reported at most once a minute per
sink and error class; the report says how many like it were left out since the last one.

Nothing of a record is sent: an event holds the log line's name, the error's class and its
message (secrets masked as in logs, cut at 500 characters), and the tags. The SDK runs with
no integrations (no logging or excepthook capture, no breadcrumbs, no local variables, no
request or user data), and ``before_send`` keeps only those fields.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from fanout import __version__
from fanout.errors import ConfigError

if TYPE_CHECKING:
    from sentry_sdk.types import Event

ENV_DSN = "FANOUT_SENTRY_DSN"
ENV_ENVIRONMENT = "FANOUT_SENTRY_ENVIRONMENT"

REPORTED = {
    "sink_send_failed": "warning",
    "record_dead_lettered": "error",
    "dead_letter_failed": "error",
    "record_malformed": "error",
    "sink_down": "error",
    "stream_failed": "fatal",
    "worker_failed": "fatal",
}
"""Log events reported, with their Sentry level."""

_TAGS = {"stream": "stream", "shard": "shard", "sink": "sink", "seq": "sequence_number"}
_EVENT_KEYS = {
    "message",
    "level",
    "tags",
    "fingerprint",
    "extra",
    "release",
    "environment",
    "platform",
    "timestamp",
    "event_id",
    "server_name",
    "sdk",
    "logger",
}
_MESSAGE_LIMIT = 500


def setup(
    env: Mapping[str, str] | None = None,
    *,
    transport: Any = None,
    min_interval_s: float = 60.0,
) -> SentryReporter | None:
    """Start reporting to Sentry when ``FANOUT_SENTRY_DSN`` is set; None when it is not.

    Args:
        env: the environment (default ``os.environ``).
        transport: a ``sentry_sdk`` transport instead of the network one (tests).
        min_interval_s: the least time between two reports of one kind.

    Raises:
        ConfigError: the DSN is set but sentry-sdk is not installed.
    """
    env = os.environ if env is None else env
    dsn = env.get(ENV_DSN)
    if not dsn:
        return None
    try:
        import sentry_sdk
    except ImportError:
        raise ConfigError(
            ENV_DSN, "is set, but sentry-sdk is not installed: pip install 'fanout[sentry]'"
        ) from None
    sentry_sdk.init(
        dsn=dsn,
        transport=transport,
        release=f"fanout@{__version__}",
        environment=env.get(ENV_ENVIRONMENT),
        default_integrations=False,
        integrations=[],
        auto_enabling_integrations=False,
        include_local_variables=False,
        include_source_context=False,
        max_breadcrumbs=0,
        before_send=_scrub,
    )
    reporter = SentryReporter(min_interval_s)
    logging.getLogger("fanout").addHandler(reporter)
    return reporter


def _scrub(event: Event, hint: dict[str, Any]) -> Event | None:
    """Keep only what this module put in an event."""
    return cast("Event", {key: value for key, value in event.items() if key in _EVENT_KEYS})


class SentryReporter(logging.Handler):
    """Turns the failure lines of the worker's log into Sentry events, rate-limited."""

    def __init__(self, min_interval_s: float = 60.0) -> None:
        super().__init__(logging.WARNING)
        self.min_interval_s = min_interval_s
        self._last: dict[tuple[str, str, str], float] = {}
        self._suppressed: dict[tuple[str, str, str], int] = {}
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        name = record.getMessage()
        level = REPORTED.get(name)
        if level is None:
            return
        try:
            self._report(name, level, record)
        except Exception:  # noqa: BLE001 - reporting must never break the worker
            self.handleError(record)

    def _report(self, name: str, level: str, record: logging.LogRecord) -> None:
        import sentry_sdk

        fields = record.__dict__
        error = str(fields.get("error") or fields.get("reason") or "")
        error_class = str(fields.get("error_class") or error.partition(":")[0] or name)
        key = (name, str(fields.get("sink", "")), error_class)
        now = time.monotonic()
        with self._guard:
            last = self._last.get(key)
            if last is not None and now - last < self.min_interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        tags = {tag: str(fields[f]) for f, tag in _TAGS.items() if fields.get(f) is not None}
        event: dict[str, Any] = {
            "message": f"{name}: {_masked(error)}" if error else name,
            "level": level,
            "logger": record.name,
            "tags": {"event": name, "error_class": error_class, **tags},
            "fingerprint": [name, key[1], error_class],
            "extra": {"suppressed_since_last_report": suppressed},
        }
        sentry_sdk.capture_event(cast("Event", event))

    def close(self) -> None:
        """Stop reporting and send what is queued (at most 2 seconds)."""
        import sentry_sdk

        logging.getLogger("fanout").removeHandler(self)
        sentry_sdk.get_client().close(timeout=2.0)
        super().close()


def _masked(text: str) -> str:
    from fanout.observe.logs import REDACTOR

    text = REDACTOR.redact(text)
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."
