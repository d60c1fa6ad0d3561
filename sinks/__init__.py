"""Built-in sinks: ``handler``, ``file``, ``stdout``, ``opensearch`` and ``aggregate``
(packages), and the notification sinks (``sns``, ``sqs``, ``eventbridge``, ``webhook``:
``sinks.notify``).

Each module holds a sink's config model (a ``fanout.config.SinkConfig`` subclass), the sink
and a ``fanout.sink.SinkType``. They are registered in ``pyproject.toml`` under the
``fanout.sinks`` entry point group, exactly as a third-party sink registers its own.
"""
