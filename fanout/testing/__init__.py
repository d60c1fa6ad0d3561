"""Tools for testing with fanout: record and event builders, DynamoDB Local, the worker
in-process, pytest fixtures, a controllable stream server, the sink contract suite, the demo.

For users' Lambda handlers:

* ``fanout.testing.events``: records and events built from plain values, as the worker
  delivers them (unit tests);
* ``fanout.testing.handler(config, sink)``: the function a handler sink calls, found the way
  the worker finds it (from the config's ``code_path``);
* ``fanout.testing.local`` and the pytest fixtures of ``fanout.testing.pytest_plugin``
  (``fanout_table``, ``fanout_worker``): functional tests on DynamoDB Local.

docs/testing.md shows them at work.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def handler(config: str | Path, sink: str, *, table: str | None = None) -> Callable[..., Any]:
    """The function the handler sink ``sink`` of ``config`` calls, imported from its
    ``code_path`` as the worker imports it (no ``PYTHONPATH`` needed).

    Args:
        config: a fanout config, or a trigger file (triggers.json, CloudFormation/SAM
            template, serverless.yml).
        sink: the handler sink's name (a trigger's name).
        table: the stream's table, for a trigger file that names none.

    Raises:
        fanout.errors.ConfigError: the config is invalid or the sink is not a handler sink.
    """
    from fanout.cli.loader import read_config_data
    from fanout.config import build_config
    from fanout.errors import ConfigError
    from sinks.handler import HandlerSinkConfig, load_handler

    path = Path(config).resolve()
    loaded = build_config(read_config_data(str(path), table), base_dir=path.parent, check=False)
    options = loaded.sinks.get(sink)
    if not isinstance(options, HandlerSinkConfig):
        raise ConfigError(f"sinks.{sink}", f"{config} has no handler sink {sink!r}")
    return load_handler(options.handler, f"sinks.{sink}.handler", options.code_path)
