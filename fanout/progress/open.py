"""The checkpoint store a config asks for (``checkpoints.store``), for its application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fanout.progress.store import CheckpointStore

if TYPE_CHECKING:
    from fanout.aws.clients import AwsClients
    from fanout.config import Config


def open_store(config: Config, aws: AwsClients) -> CheckpointStore:
    """The configured store (not opened yet): the SQLite file or the DynamoDB table."""
    cp = config.settings.checkpoints
    if cp.store == "dynamodb":
        from fanout.progress.dynamodb import DynamoDBCheckpointStore

        store = DynamoDBCheckpointStore(
            cp.table_name,
            config.application,
            aws,
            region=cp.region,
            endpoint_url=cp.endpoint_url,
            create_table=cp.create_table,
        )
        # a heartbeat that takes longer than a renewal interval is a failed one
        store.heartbeat_timeout = cp.lease_duration / 3
        return store
    from fanout.progress.sqlite import SQLiteCheckpointStore

    return SQLiteCheckpointStore(cp.path, config.application)
