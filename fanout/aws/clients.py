"""One AWS session per process, and the clients made from it.

Every part of fanout that talks to AWS through aiobotocore (dead-letter queues, notification
sinks, the aggregate sink, the stream client's credentials and endpoints) gets its clients
here, so credentials are resolved once and refreshed by aiobotocore's refreshable
credentials (awaited, never blocking the event loop), and every client is closed at shutdown.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import anyio

# Timeouts and retries of every client: short connects, reads long enough for batch calls,
# botocore's "standard" retry mode for throttling and 5xx (a few quick attempts; fanout's own
# RetryPolicy takes over after that).
_DEFAULT_CONFIG: dict[str, Any] = {
    "retries": {"mode": "standard", "max_attempts": 3},
    "connect_timeout": 5,
    "read_timeout": 30,
}


class AwsClients:
    """Shared aiobotocore clients, one per (service, region, endpoint), and credentials.

    Use ``await clients.client("sqs", region=..., endpoint_url=...)`` for a client that lives
    until ``aclose()``; ``credentials()`` for the frozen credentials of a request signed by
    hand. Safe to call from many tasks at once.
    """

    def __init__(self, session: Any = None) -> None:
        self._session = session
        self._stack = AsyncExitStack()
        self._clients: dict[tuple[str, str | None, str | None], Any] = {}
        self._lock = anyio.Lock()
        self._credentials: Any = None

    @property
    def session(self) -> Any:
        """The aiobotocore session (created on first use)."""
        if self._session is None:
            from aiobotocore.session import get_session

            self._session = get_session()
        return self._session

    async def client(
        self, service: str, *, region: str | None = None, endpoint_url: str | None = None
    ) -> Any:
        """The shared client of ``service`` for ``region`` and ``endpoint_url``.

        Raises:
            botocore.exceptions.NoRegionError: no region given and none configured.
        """
        key = (service, region, endpoint_url)
        found = self._clients.get(key)
        if found is not None:
            return found
        async with self._lock:
            found = self._clients.get(key)
            if found is None:
                from aiobotocore.config import AioConfig

                found = await self._stack.enter_async_context(
                    self.session.create_client(
                        service,
                        region_name=region,
                        endpoint_url=endpoint_url,
                        config=AioConfig(**_DEFAULT_CONFIG),
                    )
                )
                self._clients[key] = found
        return found

    async def credentials(self) -> Any:
        """The process's credentials (aiobotocore's refreshable object), or None if none
        are configured. ``await creds.get_frozen_credentials()`` before signing."""
        if self._credentials is None:
            self._credentials = await self.session.get_credentials()
        return self._credentials

    async def aclose(self) -> None:
        """Close every client. Idempotent."""
        self._clients.clear()
        stack, self._stack = self._stack, AsyncExitStack()
        await stack.aclose()
