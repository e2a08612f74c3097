"""The app under a real uvicorn on 127.0.0.1, started the way the image starts it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from tests.loopback import free_port


@contextmanager
def served(app: FastAPI, *, timeout: float = 15.0) -> Iterator[str]:
    """Serve `app` (lifespan on) in a thread; yield its base URL.

    Uvicorn's own proxy-header handling is off (`--no-proxy-headers`, as in the Dockerfile
    and `python -m <package> serve`): what the app sees as the client address is its own doing.
    """
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            proxy_headers=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        assert thread.is_alive(), "the app died while starting"
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
