"""Configuration: a YAML file plus ``FANOUT_``-prefixed environment overrides (env wins).

Sinks and streams are mappings keyed by name, so one environment variable can reach one sink
(``FANOUT_SINKS__AUDIT__PATH=/tmp/a.jsonl``). Each sink's own options are validated by the
config model of its type (``fanout.sink.SinkRegistry``: the ``fanout.sinks`` entry points);
every error names the field path.

Modules:

* ``fanout.config.types``: primitive types (``Duration``, ``ByteSize``, ``FileMode``, their
  parsers) and ``Model``, the base of every config model;
* ``fanout.config.streams``: ``StreamConfig``, one stream to read;
* ``fanout.config.sinks``: ``SinkConfig`` (the options every sink has), ``RetryConfig``,
  ``DeadLetterConfig`` and ``OverflowConfig``;
* ``fanout.config.settings``: ``Settings``, the whole configuration, and its other sections
  (``CheckpointConfig``, ``BackfillConfig``, ``HttpConfig``);
* ``fanout.config.loading``: reading the YAML file, ``${VAR}`` substitution, validation
  (``build_config``, ``load_config``) and its result, ``Config``.

The names most code needs are importable from ``fanout.config`` itself.
"""

from fanout.config.loading import Config, build_config, load_config
from fanout.config.settings import Settings
from fanout.config.sinks import SinkConfig
from fanout.config.streams import StreamConfig

__all__ = [
    "Config",
    "Settings",
    "SinkConfig",
    "StreamConfig",
    "build_config",
    "load_config",
]
