"""Loading the configuration: the YAML file, ``${VAR}`` substitution, validation of the
settings and of each sink's options by its type's model, every error found reported at once
(``ConfigError``, naming the field), and the result, ``Config``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from fanout.config.settings import DEFAULT_APPLICATION, Settings
from fanout.config.sinks import SinkConfig
from fanout.config.streams import StreamConfig
from fanout.errors import ConfigError
from fanout.sink import SinkRegistry, SinkType


class Config:
    """Validated settings plus each sink's typed config and the sink types that made them."""

    def __init__(
        self,
        settings: Settings,
        sinks: dict[str, SinkConfig],
        types: dict[str, SinkType[Any]] | None = None,
        *,
        code_path: str | None = None,
        source: Path | None = None,
    ) -> None:
        self.settings = settings
        self.sinks = sinks
        self.types = types or {}
        self.code_path = code_path or str(Path.cwd())
        """The resolved top-level ``code_path`` (an absolute directory)."""
        self.notes: list[str] = []
        """What loading it noted (settings of a trigger file that are ignored here)."""
        self.source = source

    @property
    def application(self) -> str:
        """Who the checkpoints belong to: ``application``, else the config file's name
        without its extension, else ``fanout``."""
        if self.settings.application:
            return self.settings.application
        if self.source is not None:
            return application_from_path(self.source)
        return DEFAULT_APPLICATION

    @property
    def processes(self) -> int:
        """Worker processes to start on this host (``auto``: the CPU count)."""
        wanted = self.settings.processes
        if wanted == "auto":
            return max(1, os.cpu_count() or 1)
        return wanted

    @property
    def max_buffered_bytes(self) -> int:
        """The byte budget of buffered records: ``max_buffered_bytes``, else the most the
        default budget grows to (it follows the shards being read): half the container's
        memory limit, else 512 MiB."""
        from fanout.stream.budget import default_budget

        return self.settings.max_buffered_bytes or default_budget()

    def sink_set(self) -> dict[str, str]:
        """Every sink's name and type: what the workers of one application must share."""
        return {name: cfg.type for name, cfg in sorted(self.sinks.items())}

    def sink_type(self, name: str) -> SinkType[Any]:
        """The type of the sink called ``name``."""
        return self.types[name]

    def dead_letter_path(self, sink: str) -> Path:
        """The sink's dead-letter file: its ``dead_letter.path``, else ``dlq-<sink>.jsonl``
        next to the checkpoint database."""
        path = self.sinks[sink].dead_letter.path
        if path:
            return Path(path)
        return Path(self.settings.checkpoints.path).parent / f"dlq-{sink}.jsonl"

    @property
    def streams(self) -> dict[str, StreamConfig]:
        return self.settings.streams


def application_from_path(path: str | os.PathLike[str]) -> str:
    """The default application name of a config file: its name without the extension, with
    characters a name cannot hold replaced by ``-`` (``orders.yaml``: ``orders``)."""
    stem = Path(path).stem
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", stem).lstrip("._-")[:128]
    return name or DEFAULT_APPLICATION


def _is_str_mapping(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Unresolved:
    """Collects the ``${VAR}`` references that had no value, instead of failing on the first
    (for commands that use only part of the config; see ``read_yaml``)."""

    def __init__(self) -> None:
        self.refs: dict[str, str] = {}  # config path -> variable name

    def errors(self, paths: set[str] | None = None) -> list[ConfigError]:
        """An error per unresolved reference (at ``paths`` only, when given)."""
        return [
            ConfigError(path, f"environment variable {name} is not set")
            for path, name in self.refs.items()
            if paths is None or path in paths
        ]


def _substitute(
    value: Any, path: str, env: dict[str, str], unresolved: Unresolved | None = None
) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of the parsed YAML."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            if unresolved is None:
                raise ConfigError(path, f"environment variable {name} is not set")
            unresolved.refs[path] = name
            return match.group(0)

        return _VAR.sub(repl, value)
    if isinstance(value, dict):
        return {
            k: _substitute(v, f"{path}.{k}" if path else str(k), env, unresolved)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", env, unresolved) for i, v in enumerate(value)]
    return value


def substitute(data: dict[str, Any], unresolved: Unresolved | None = None) -> dict[str, Any]:
    """``data`` with every ``${VAR}`` reference replaced from the environment (see
    ``read_yaml``)."""
    result: dict[str, Any] = _substitute(data, "", dict(os.environ), unresolved)
    return result


def _loc(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else part
    return path


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # Drop pydantic's "function-after[...]" style loc parts of model validators.
    return tuple(p for p in loc if not (isinstance(p, str) and "[" in p))


def _errors_of(exc: ValidationError, prefix: str = "") -> list[ConfigError]:
    """One ConfigError per error pydantic found, each naming its field."""
    return [
        ConfigError(
            _loc(prefix, _clean_loc(error["loc"])), error["msg"].removeprefix("Value error, ")
        )
        for error in exc.errors()
    ]


def combine(errors: list[ConfigError]) -> ConfigError:
    """One ConfigError that reports every error of ``errors``, one per line (its ``path`` is
    the first one's)."""
    lines = [line for error in errors for line in str(error).splitlines()]
    combined = ConfigError(errors[0].path, "; ".join(lines))
    combined.args = ("\n".join(lines),)
    return combined


def _from_validation_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    return combine(_errors_of(exc, prefix))


def read_yaml(path: str | os.PathLike[str], unresolved: Unresolved | None = None) -> dict[str, Any]:
    """Parse the YAML config file and substitute ``${VAR}`` references.

    A reference to a variable that is not set (and has no default) is an error, unless
    ``unresolved`` is given: then it stays as it is and is noted there.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {file}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{file} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not _is_str_mapping(data):
        raise ConfigError("", f"{file} must hold a mapping at the top level")
    result: dict[str, Any] = _substitute(data, "", dict(os.environ), unresolved)
    return result


def build_config(
    data: dict[str, Any],
    registry: SinkRegistry | Mapping[str, SinkType[Any]] | None = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    check: bool = True,
    source: Path | None = None,
) -> Config:
    """Validate raw settings (YAML data; the environment overrides it) into a Config.

    Every error found is reported at once (one line each, naming its field): the settings'
    own, then each sink's (its type, options, streams, filters, dead letter and its type's
    start-up check, e.g. that a handler imports).

    Args:
        data: the parsed YAML file.
        registry: where sink types are looked up; default: the ``fanout.sinks`` entry points
            (the built-in sinks and every installed plugin).
        base_dir: the config file's directory: relative ``code_path`` values are relative to
            it, and it is the default ``code_path`` (default: the working directory).
        check: run each sink type's start-up check (False: options are validated, nothing
            is imported).
        source: the config file (its name is the default application name).
    """
    registry = SinkRegistry() if registry is None else registry
    base = Path(base_dir if base_dir is not None else Path.cwd()).resolve()
    errors: list[ConfigError] = []
    settings: Settings | None
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        errors.extend(_errors_of(exc))
        settings = None
    if settings is not None:
        raw_sinks: dict[str, Any] = settings.sinks
        streams: set[str] | None = set(settings.streams)
        top = settings.code_path
    else:  # still check every sink that can be checked
        given = data.get("sinks")
        raw_sinks = given if isinstance(given, dict) else {}
        raw_streams = data.get("streams")
        streams = set(raw_streams) if isinstance(raw_streams, dict) else None
        top = data.get("code_path") if isinstance(data.get("code_path"), str) else None
    code_path = str((base / top).resolve()) if top else str(base)

    sink_configs: dict[str, SinkConfig] = {}
    types: dict[str, SinkType[Any]] = {}
    for name, raw in raw_sinks.items():
        if not isinstance(raw, dict):
            continue  # pydantic reported it
        try:
            cfg, entry = _build_sink(name, raw, registry, base, code_path, streams, raw_sinks)
            if check:
                entry.check(name, cfg, f"sinks.{name}")
                if settings is not None:
                    entry.check_settings(name, cfg, f"sinks.{name}", settings)
        except ConfigError as exc:
            errors.append(exc)
            continue
        sink_configs[name] = cfg
        types[name] = entry
    if errors:
        raise combine(errors)
    assert settings is not None
    return Config(settings, sink_configs, types, code_path=code_path, source=source)


def _build_sink(
    name: str,
    raw: dict[str, Any],
    registry: Mapping[str, SinkType[Any]],
    base: Path,
    code_path: str,
    streams: set[str] | None,
    sinks: dict[str, Any],
) -> tuple[SinkConfig, SinkType[Any]]:
    """One sink's typed config and its type; ConfigError with every error found."""
    from fanout import filters

    prefix = f"sinks.{name}"
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ConfigError(f"{prefix}.type", "missing sink type")
    try:
        entry = registry[kind]
    except KeyError:
        valid = ", ".join(registry)
        raise ConfigError(
            f"{prefix}.type", f"unknown sink type {kind!r}; the types are: {valid}"
        ) from None
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.type", exc.message) from exc
    if "code_path" in entry.config.model_fields:
        # A sink type that imports user code gets its code_path resolved against the
        # config file's directory, and the top-level one when it sets none.
        own = raw.get("code_path")
        raw = {
            **raw,
            "code_path": str((base / own).resolve()) if isinstance(own, str) else code_path,
        }
    try:
        cfg = entry.config.model_validate(raw)
    except ValidationError as exc:
        raise _from_validation_error(exc, prefix) from None
    if not isinstance(cfg, SinkConfig):
        raise ConfigError(
            f"{prefix}.type", f"sink type {kind!r}: its config model is not a SinkConfig"
        )
    errors: list[ConfigError] = []
    for stream in cfg.streams or ():
        if streams is not None and stream not in streams:
            errors.append(ConfigError(f"{prefix}.streams", f"unknown stream {stream!r}"))
    if cfg.filters is not None:
        try:
            filters.compile_filters(cfg.filters, path=f"{prefix}.filters")
        except ConfigError as exc:
            errors.append(exc)
    dl = cfg.dead_letter
    if dl.type == "sink" and (dl.sink not in sinks or dl.sink == name):
        errors.append(ConfigError(f"{prefix}.dead_letter.sink", f"unknown sink {dl.sink!r}"))
    if errors:
        raise combine(errors)
    return cfg, entry


def load_config(
    path: str | os.PathLike[str] | None,
    registry: SinkRegistry | None = None,
    *,
    check: bool = True,
) -> Config:
    """Read the YAML file (``path`` or ``$FANOUT_CONFIG``), apply the environment, validate.

    The file's directory is the default ``code_path`` (and what relative ones are relative
    to), as Lambda's task root is for a function's handler.
    """
    path = path or os.environ.get("FANOUT_CONFIG")
    data = read_yaml(path) if path else {}
    base = Path(path).resolve().parent if path else None
    source = Path(path) if path else None
    return build_config(data, registry, base_dir=base, check=check, source=source)
