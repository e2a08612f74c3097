"""The client address (rate-limit key, access line) and scheme come from X-Forwarded-For and
X-Forwarded-Proto only when the peer is a proxy in FORWARDED_ALLOW_IPS.

A real uvicorn on 127.0.0.1 with the proxy options the image gives it (tests/core/served.py);
the peer is always 127.0.0.1, trusted by default and untrusted when the setting names another
proxy.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request

from {{ cookiecutter.package_name }}.core.ratelimit import client_address, network_key, rate_limit
from {{ cookiecutter.package_name }}.main import create_app
from tests.conftest import make_settings
from tests.core.served import served


def probe_app(database_url: str, **overrides: object) -> FastAPI:
    app = create_app(make_settings(database_url, log_level="INFO", **overrides))
    router = APIRouter(prefix="/_test")

    @router.get("/whoami", dependencies=[rate_limit("3/day", scope=uuid.uuid4().hex)])
    async def whoami(request: Request) -> dict[str, str]:
        return {"client": await client_address(request), "scheme": request.url.scheme}

    app.include_router(router)
    return app


def whoami(http: httpx.Client, forwarded_for: str, proto: str = "https") -> httpx.Response:
    return http.get(
        "/_test/whoami", headers={"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": proto}
    )


def test_a_trusted_proxy_forwards_the_client_address_and_scheme(
    database_url: str, migrated: object, capsys: pytest.CaptureFixture[str]
) -> None:
    app = probe_app(database_url)  # FORWARDED_ALLOW_IPS defaults to 127.0.0.1: the peer
    with served(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        capsys.readouterr()
        # The proxy appends the address it saw; whatever the client wrote stands to its left.
        first = whoami(http, "198.51.100.1, 203.0.113.50")
        assert first.status_code == 200, first.text
        assert first.json() == {"client": "203.0.113.50", "scheme": "https"}
        # Rotating the part the client writes does not give it a fresh budget ...
        statuses = [whoami(http, f"198.51.100.{i}, 203.0.113.50").status_code for i in (2, 3, 4)]
        assert statuses == [200, 200, 429]
        # ... while another client behind the same proxy has its own.
        assert whoami(http, "203.0.113.51").status_code == 200
    err = capsys.readouterr().err.splitlines()
    access = [line for line in err if "[access]" in line and "/_test/whoami" in line]
    assert len(access) == 5, err
    assert all("client=203.0.113.5" in line for line in access), access


def test_forwarded_headers_from_an_untrusted_peer_do_not_change_the_key(
    database_url: str, migrated: object, capsys: pytest.CaptureFixture[str]
) -> None:
    app = probe_app(database_url, forwarded_allow_ips=["192.0.2.10"])  # a proxy that is not us
    with served(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        capsys.readouterr()
        first = whoami(http, "203.0.113.50")
        assert first.status_code == 200, first.text
        assert first.json() == {"client": "127.0.0.1", "scheme": "http"}
        statuses = [whoami(http, f"203.0.113.{i}").status_code for i in (51, 52, 53)]
        assert statuses == [200, 200, 429]
    err = capsys.readouterr().err
    # Logged once, naming the setting, so an operator behind an unlisted proxy notices.
    assert err.count("forwarded_header_ignored") == 1, err
    assert "FORWARDED_ALLOW_IPS" in err


def test_an_ipv6_client_counts_as_its_64(
    database_url: str, migrated: object, capsys: pytest.CaptureFixture[str]
) -> None:
    app = probe_app(database_url)
    with served(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        # Addresses of one /64 share a budget, whichever the client picks ...
        picked = ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:2:abcd:ef01:2345:6789"]
        assert [whoami(http, a).status_code for a in picked] == [200, 200, 200]
        assert whoami(http, "2001:db8:1:2::42").status_code == 429
        # ... the next /64 is another client, and the address is still reported whole.
        other = whoami(http, "2001:db8:1:3::1")
        assert other.status_code == 200, other.text
        assert other.json()["client"] == "2001:db8:1:3::1"
        # An IPv4-mapped address is its IPv4 client, not one of a shared ::ffff:0:0/64.
        mapped = [whoami(http, f"::ffff:203.0.113.{i}").status_code for i in range(4)]
        assert mapped == [200] * 4
    capsys.readouterr()


def test_network_keys() -> None:
    assert network_key("203.0.113.9") == "203.0.113.9"
    assert network_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert network_key("2001:DB8:1:2::") == "2001:db8:1:2::/64"
    assert network_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert network_key("unknown") == "unknown"  # no client (a test transport)
