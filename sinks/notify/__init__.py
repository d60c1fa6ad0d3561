"""Notification sinks: ``sns``, ``sqs``, ``eventbridge`` and ``webhook``.

``format`` (the body: raw, plain, template), ``common`` (options, the claim check and the
batching ``send`` of the AWS sinks), one module per sink type. docs/notifications.md
describes them.
"""
