"""Server-sent events that stop, and close what they relay, when the client goes away."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class EventStreamResponse(StreamingResponse):
    """`text/event-stream` that watches for the client's disconnect the whole time.

    Starlette's own response notices a disconnect only when a write fails, which
    may be long after (a model thinking before its first token). Here a watcher
    cancels the stream as soon as the client leaves, and the event generator is
    always closed, so its `finally` (close upstream, write the ledger) runs now.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(
            events,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._events = events
        # Run at the end whatever happened: closing a generator that never started
        # does not run its `finally`.
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        async def stream() -> None:
            with contextlib.suppress(OSError):  # the client went away mid-write
                await self.stream_response(send)
            group.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(watch)
                group.start_soon(stream)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self._events, "aclose", None)
                if aclose is not None:
                    await aclose()
                if self._on_close is not None:
                    await self._on_close()
