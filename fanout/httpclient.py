"""The process's one HTTP client session for sinks (webhooks, OpenSearch, anything HTTP)."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

# Generous defaults for sinks that set none per request: a connect must not hang a lane, a
# bulk request may take a while. Sinks pass their own ``timeout=`` for tighter bounds.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=60.0, sock_connect=10.0)
# Connections open at once across every sink. Each sink's concurrency is bounded by its
# ``max_in_flight`` and lanes; this bounds the process's sockets.
DEFAULT_LIMIT = 512


class HttpClient:
    """Hands out the shared ``aiohttp.ClientSession``: one connection pool, DNS cache and
    keep-alive for every sink of the process.

    The session is created on first use, inside the event loop, so a worker whose sinks
    make no HTTP calls opens nothing. The worker closes it at shutdown, after every sink's
    ``stop()``; a sink must never close it. A later ``session()`` opens a new one.

    Args:
        limit: connections open at once, across every host.
        timeout: the default timeout of a request.
        factory: makes the session instead (tests: a session whose connector resolves names
            to a local server); the default is a session with the settings above.
    """

    def __init__(
        self,
        *,
        limit: int = DEFAULT_LIMIT,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        factory: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> None:
        self._limit = limit
        self._timeout = timeout
        self._factory = factory
        self._session: aiohttp.ClientSession | None = None

    def _create(self) -> aiohttp.ClientSession:
        if self._factory is not None:
            return self._factory()
        from fanout import __version__

        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300),
            timeout=self._timeout,
            headers={"User-Agent": f"fanout/{__version__}"},
        )

    def session(self) -> aiohttp.ClientSession:
        """The shared session; call it from the event loop (it is created on first use)."""
        session = self._session
        if session is None or session.closed:
            session = self._session = self._create()
        return session

    @property
    def opened(self) -> bool:
        """True while a session is open."""
        return self._session is not None and not self._session.closed

    async def aclose(self) -> None:
        """Close the session, if one was opened. Idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
