"""Logging: JSON lines (default) or text, with stream/shard/sink fields, and no secrets.

Every line is one JSON object::

    {"timestamp": "2024-05-01T12:00:00.123Z", "level": "warning", "logger": "fanout.dispatch",
     "event": "batch_retrying", "stream": "orders", "shard": "shardId-...", "sink": "search",
     "seq": "4900...", "records": 3, "attempt": 2, "delay_s": 0.4}

``event`` is a snake_case past-tense name; everything else is a field passed with
``extra=``. Secrets are removed from every line before it is written, whatever logged it:

* values of fields whose name looks secret (``secret``, ``password``, ``token``, ...);
* every value registered with the formatter's ``Redactor``: by ``setup(secrets=...)`` with
  ``config_secrets(config)``, i.e. what ``${VAR}`` references in the config file expanded to,
  secret-looking config options, credentials in URLs, and the AWS credentials in the
  environment;
* anything shaped like a credential: user:password in a URL, secret-looking query
  parameters, AWS access key ids, SigV4 signatures, bearer and basic authorization values.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

import orjson
from pydantic import BaseModel, SecretBytes, SecretStr

if TYPE_CHECKING:
    from fanout.config import Config

MASK = "***"
# Shorter values are not registered as secrets: masking every "ab" in every line would
# garble the logs, and a secret that short protects nothing.
MIN_SECRET_LENGTH = 4

# Attributes every LogRecord has; anything else came in through ``extra=`` and is a field.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
_SECRET_WORDS = (
    "secret",
    "password",
    "passwd",
    "token",
    "authorization",
    "credential",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "private_key",
    "signing_key",
    "cookie",
)
# Environment variables that hold AWS credentials (botocore's names).
_AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")

# Credential-shaped text, masked wherever it appears.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host and scheme://token@host, up to the last "@" followed by a
    # host, so a password with an unencoded "@" or "/" is masked whole
    (
        re.compile(
            r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s\"'<>]+@"
            r"(?=[a-z0-9.\-\[\]:]+(?:[/?#\s\"'<>),;]|$))"
        ),
        rf"\1{MASK}@",
    ),
    # ?token=..., &X-Amz-Signature=..., &api_key=...
    (
        re.compile(
            r"(?i)([?&;][a-z0-9_.-]*(?:token|secret|signature|password|passwd|credential|"
            r"apikey|api_key|api-key|sig|key)=)[^&\s\"'#<>]+"
        ),
        rf"\1{MASK}",
    ),
    # AWS access key ids (long-term AKIA, temporary ASIA)
    (re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"), MASK),
    # SigV4 Authorization header parts
    (re.compile(r"(?i)(Signature=)[0-9a-f]{16,}"), rf"\1{MASK}"),
    (re.compile(r"(?i)(Credential=)[^,\s\"']+"), rf"\1{MASK}"),
    # (a credential has a capital, a digit or a sign in it: "Basic authentication" is prose)
    (
        re.compile(
            r"\b([Bb]earer|[Bb]asic|BEARER|BASIC)\s+"
            r"(?=[a-z._~-]*[A-Z0-9+/=])[A-Za-z0-9._~+/=-]{8,}"
        ),
        rf"\1 {MASK}",
    ),
    (re.compile(r"(?i)(aws_secret_access_key\s*[=:]\s*)\S+"), rf"\1{MASK}"),
)


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


class Redactor:
    """Replaces registered secret values and credential-shaped text with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *values: str) -> None:
        """Register secret values (and their URL-encoded forms)."""
        before = len(self._secrets)
        for value in values:
            if not isinstance(value, str) or len(value.strip()) < MIN_SECRET_LENGTH:
                continue
            self._secrets.add(value)
            self._secrets.add(quote(value, safe=""))
            self._secrets.add(quote_plus(value, safe=""))
        if len(self._secrets) != before:
            # Longest first, so a secret that contains another one is masked whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def __len__(self) -> int:
        return len(self._secrets)

    def redact(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def clean(self, value: Any, key: str = "") -> Any:
        """A JSON-ready copy of ``value`` with every secret masked."""
        if key and _secret_name(key) and value is not None:
            return MASK
        if isinstance(value, str):
            return self.redact(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {str(k): self.clean(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.clean(v) for v in value]
        return self.redact(str(value))


# The redactor of the handler ``setup`` installs; formatters made without one use it too.
REDACTOR = Redactor()


def _fields(record: logging.LogRecord, redactor: Redactor) -> dict[str, Any]:
    return {
        key: redactor.clean(value, key)
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    """One JSON object a line: timestamp, level, logger, event, then the fields."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or REDACTOR

    def format(self, record: logging.LogRecord) -> str:
        redact = self.redactor.redact
        data: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        data.update(_fields(record, self.redactor))
        if record.exc_info:
            data["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(data).decode()


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm level event key=value ...`` for people at a terminal."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or REDACTOR

    def format(self, record: logging.LogRecord) -> str:
        redact = self.redactor.redact
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        stamp += f".{int(record.msecs):03d}"
        extras = " ".join(
            f"{k}={v if isinstance(v, str) else orjson.dumps(v).decode()}"
            for k, v in _fields(record, self.redactor).items()
        )
        event = redact(record.getMessage())
        line = f"{stamp} {record.levelname.lower():7} {event} {extras}".rstrip()
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def _url_secrets(text: str) -> list[str]:
    """Credentials inside a URL: user and password, secret-looking query values."""
    if "://" not in text:
        return []
    try:
        parts = urlsplit(text.strip())
        username, password = parts.username, parts.password
    except ValueError:
        return []
    found = [v for v in (username, password) if v]
    found += [v for k, v in parse_qsl(parts.query) if _secret_name(k) or k.lower() == "key"]
    return found


def _walk(value: Any, key: str, out: list[str]) -> None:
    if isinstance(value, SecretStr):
        out.append(value.get_secret_value())
    elif isinstance(value, SecretBytes):
        out.append(value.get_secret_value().decode("utf-8", "replace"))
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _walk(getattr(value, name), name, out)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            # A secret-named mapping (``headers: {authorization: ...}`` or ``secrets: {...}``)
            # makes everything under it secret.
            _walk(v, f"{key}.{k}" if key and _secret_name(key) else str(k), out)
    elif isinstance(value, list | tuple):
        for item in value:
            _walk(item, key, out)
    elif isinstance(value, str):
        if _secret_name(key):
            out.append(value)
        out.extend(_url_secrets(value))


def config_secrets(
    config: Config,
    config_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Every value of ``config`` that must never be logged.

    Args:
        config: the validated configuration.
        config_path: the YAML file it came from: whatever its ``${VAR}`` references
            expanded to counts as secret (that is what they are for).
        env: the environment (default ``os.environ``); AWS credentials in it count too.
    """
    env = os.environ if env is None else env
    found: list[str] = []
    _walk(config.settings, "", found)
    for sink in config.sinks.values():
        _walk(sink, "", found)
    if config_path is not None:
        try:
            text = Path(config_path).read_text(encoding="utf-8")
        except OSError:
            text = ""
        found += [env[name] for name in _VAR.findall(text) if name in env]
    found += env_secrets(env)
    return found


def env_secrets(env: Mapping[str, str] | None = None) -> list[str]:
    """The AWS credentials of the environment, and every variable whose name looks secret
    (``OPENSEARCH_PASSWORD``, ``*_TOKEN``...): sinks read some of them without the config
    naming them. Values under 8 characters of the latter (``TOKEN_TTL=3600``, flags) are
    not secrets worth garbling every line that holds them."""
    env = os.environ if env is None else env
    return [v for k, v in env.items() if v and (k in _AWS_ENV or (_secret_name(k) and len(v) >= 8))]


def setup(
    fmt: str = "json",
    level: str = "INFO",
    stream: TextIO | None = None,
    *,
    secrets: Iterable[str] = (),
) -> logging.Handler:
    """Route every logger to stderr (stdout stays free for the stdout sink).

    Args:
        fmt: ``json`` or ``text``.
        level: the root level.
        stream: where lines go (default stderr).
        secrets: values to mask, e.g. ``config_secrets(config, path)``; the AWS credentials
            in the environment are always masked.

    Returns:
        The installed handler.
    """
    REDACTOR.add(*secrets)
    REDACTOR.add(*env_secrets())
    # Lines are redacted here: skip the redacting wrapper commands put around stderr.
    handler = logging.StreamHandler(stream or getattr(sys.stderr, "wrapped", sys.stderr))
    handler.setFormatter(JsonFormatter(REDACTOR) if fmt == "json" else TextFormatter(REDACTOR))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # botocore logs request headers (with the SigV4 Authorization) at DEBUG: never enable it.
    for noisy in ("botocore", "aiobotocore", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
