"""Notification sinks: ``sns``, ``sqs``, ``eventbridge`` and ``webhook``.

``format`` (the body: raw, plain, template; paths and text templates), ``config`` (the
options), ``common`` (the claim check, attributes and FIFO ids, and the batching ``send`` of
the AWS sinks), one module per sink type. docs/notifications.md describes them.
"""
