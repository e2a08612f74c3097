"""Real servers on 127.0.0.1 for tests: a free port, an ASGI app under uvicorn in a thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Literal

import uvicorn
from starlette.types import ASGIApp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve_in_thread(
    app: ASGIApp,
    what: str,
    *,
    lifespan: Literal["auto", "on", "off"] = "auto",
    timeout: float = 15.0,
) -> Iterator[str]:
    """Serve `app` with uvicorn (its own event loop, in a thread); yield its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        assert thread.is_alive(), f"{what} died while starting"
        assert time.monotonic() < deadline, f"{what} did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@asynccontextmanager
async def serving(app: ASGIApp, *, start_within: float = 15.0) -> AsyncIterator[str]:
    """Serve an app the test has started (lifespan off) with uvicorn on the test's own event
    loop; yield its base URL.

    A real connection, which the client can drop mid-response (what an in-process
    transport cannot do), while the test reads the app's state in between. The app's
    logging is left alone (no log config).
    """
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(start_within):
            while not server.started:
                if task.done():
                    task.result()  # its error, if it raised one
                    raise AssertionError("uvicorn stopped while starting")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
