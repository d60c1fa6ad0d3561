"""A handler that never returns: a sink blocked for good, so every record read stays buffered."""

from __future__ import annotations

import asyncio
from typing import Any


async def blocked(event: dict[str, Any], context: Any) -> None:
    await asyncio.Event().wait()
