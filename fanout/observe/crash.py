"""No secret leaves the process through its crash output or a command's output.

``install()`` (called first thing by every command) routes what logging never sees through
the log redactor (``fanout.observe.logs.REDACTOR``):

* ``sys.excepthook`` and ``threading.excepthook``: the traceback of an exception nobody
  caught (the process is dying) is printed redacted;
* ``loop_exception_handler``: what asyncio reports of a task or callback that failed with
  nobody awaiting it goes to the ``fanout.loop`` logger (whose formatter redacts) with the
  error's text redacted;
* ``sys.stdout`` and ``sys.stderr`` are wrapped (``RedactingStream``), so whatever a command
  prints (URLs with a password in them, a provider's error text) is masked too.

The redactor knows the AWS credentials of the environment from the start and the config's
secrets once a command loaded its config (``register_config``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from fanout.observe.logs import REDACTOR, config_secrets, env_secrets

if TYPE_CHECKING:
    from fanout.config import Config

log = logging.getLogger("fanout.loop")


class RedactingStream:
    """A text stream that writes everything through the redactor to ``wrapped``."""

    def __init__(self, wrapped: TextIO) -> None:
        self.wrapped = wrapped

    def write(self, text: str) -> int:
        self.wrapped.write(REDACTOR.redact(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.wrapped.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer...
        return getattr(self.wrapped, name)


def unwrapped(stream: TextIO) -> TextIO:
    """The stream under a ``RedactingStream`` (a log handler redacts on its own)."""
    inner = stream.wrapped if isinstance(stream, RedactingStream) else stream
    return inner


def _print_redacted(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    text = "".join(traceback.format_exception(kind, value, tb))
    stream = unwrapped(sys.__stderr__ or sys.stderr)
    stream.write(REDACTOR.redact(text))
    stream.flush()


def _thread_hook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    _print_redacted(args.exc_type, args.exc_value, args.exc_traceback)


def loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's handler for errors nobody awaited: logged, redacted, never printed raw."""
    exc = context.get("exception")
    fields: dict[str, Any] = {"error": REDACTOR.redact(str(context.get("message", "")))}
    if isinstance(exc, BaseException):
        fields["error_class"] = type(exc).__name__
        log.error("loop_error", extra=fields, exc_info=(type(exc), exc, exc.__traceback__))
    else:
        log.error("loop_error", extra=fields)


def install() -> None:
    """Redact uncaught-exception output from here on (see the module docstring)."""
    REDACTOR.add(*env_secrets())
    sys.excepthook = _print_redacted
    threading.excepthook = _thread_hook


def register_config(config: Config, path: str | os.PathLike[str] | None) -> None:
    """Mask the secrets of ``config`` (and what its ``${VAR}`` references expanded to)."""
    REDACTOR.add(*config_secrets(config, path))


@contextmanager
def redacted_output() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` redacted within the block."""
    out, err = sys.stdout, sys.stderr
    sys.stdout = RedactingStream(out)
    sys.stderr = RedactingStream(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


async def guarded(call: Any, *args: Any) -> Any:
    """Run ``call(*args)`` with ``loop_exception_handler`` as the loop's handler."""
    asyncio.get_running_loop().set_exception_handler(loop_exception_handler)
    return await call(*args)
