"""The app under a real uvicorn on 127.0.0.1, configured the way the image runs it."""

from __future__ import annotations

import re
import shlex
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from tests.conftest import PROJECT_ROOT
from tests.loopback import free_port

DOCKERFILE = PROJECT_ROOT / "Dockerfile"


def image_server_options() -> dict[str, Any]:
    """Uvicorn's proxy options as the Dockerfile sets them (its CMD flags and ENV).

    Without a Dockerfile (use_docker off): those of `python -m <package> serve`, which
    leaves the forwarded headers to the app.
    """
    if not DOCKERFILE.exists():
        return {"proxy_headers": False}
    text = DOCKERFILE.read_text(encoding="utf-8")
    (command,) = [line for line in text.splitlines() if line.startswith("CMD ")]
    words = shlex.split(command.replace('\\"', '"'))
    options: dict[str, Any] = {"proxy_headers": "--no-proxy-headers" not in command}
    if "--forwarded-allow-ips" in words:
        options["forwarded_allow_ips"] = words[words.index("--forwarded-allow-ips") + 1]
    elif found := re.search(r"FORWARDED_ALLOW_IPS=(\S+)", text):
        options["forwarded_allow_ips"] = found.group(1).strip("\"'")
    return options


@contextmanager
def served(app: FastAPI, *, timeout: float = 15.0) -> Iterator[str]:
    """Serve `app` (lifespan on) in a thread, with the image's proxy options; yield its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            **image_server_options(),
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
