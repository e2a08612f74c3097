"""The container files (with use_docker): production stays production, no proxy trusted by default.

Compose gives a service's `environment:` precedence over its `env_file:`, and the process
environment wins over `.env` in the settings; so an explicit ENVIRONMENT under the app's
`environment:` is what keeps a `.env` written for development (ENVIRONMENT=development)
from turning the container back into development.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
COMPOSE = PROJECT_ROOT / "compose.yaml"


def block(lines: list[str], start: int) -> list[str]:
    """The lines indented deeper than lines[start], up to the next one that is not."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    return body


@pytest.mark.skipif(not COMPOSE.exists(), reason="no compose.yaml (use_docker is off)")
def test_compose_runs_the_app_in_production_whatever_env_says() -> None:
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    services = block(lines, lines.index("services:"))
    app = block(services, services.index("  app:"))
    assert "    env_file: .env" in app
    environment = block(app, app.index("    environment:"))
    assert "      ENVIRONMENT: production" in environment


@pytest.mark.skipif(not DOCKERFILE.exists(), reason="no Dockerfile (use_docker is off)")
def test_the_image_trusts_no_forwarded_header_by_default() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    allowed = re.findall(r"FORWARDED_ALLOW_IPS=(\S+)", text)
    assert allowed == ["127.0.0.1"]
    assert "ENVIRONMENT=production" in text
    # The app applies the forwarded headers itself; uvicorn must not do it with other rules.
    (command,) = [line for line in text.splitlines() if line.startswith("CMD ")]
    assert "--no-proxy-headers" in command
    assert "--forwarded-allow-ips" not in command
