"""Origins match exactly (scheme, host and port): parsing, settings, and the websocket handshake.

Before this check, any port or scheme of an allowed host passed the websocket Origin check
(issue 16): ``http://127.0.0.1:9999`` could drive a session of the page on ``127.0.0.1:8000``.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from dar_site.asgi import application
from dar_site.origin_names import OriginError, normalize_origin, normalize_origins
from tests.factories import CatalogFactory, SearchSessionFactory, browser_session_key

TIMEOUT = 10


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://Shop.Example", "https://shop.example"),
        ("https://shop.example:443", "https://shop.example"),
        ("http://shop.example:80/", "http://shop.example"),
        ("https://shop.example:8443", "https://shop.example:8443"),
        ("http://shop.example:443", "http://shop.example:443"),
        ("http://127.0.0.1:8001", "http://127.0.0.1:8001"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("  https://shop.example  ", "https://shop.example"),
    ],
)
def test_origins_normalise_to_scheme_host_and_non_default_port(given: str, expected: str) -> None:
    assert normalize_origin(given) == expected


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("shop.example", "starts with https://"),
        ("ftp://shop.example", "starts with https://"),
        ("https://shop.example/products", "no path"),
        ("https://shop.example?x=1", "no path"),
        ("https://*.shop.example", "no wildcards"),
        ("https://user@shop.example", "no user name"),
        ("https://shop.example:99999", "not an origin"),
        ("", "cannot be empty"),
    ],
)
def test_anything_but_one_exact_origin_is_refused_saying_why(given: str, why: str) -> None:
    with pytest.raises(OriginError, match=why):
        normalize_origin(given)


def test_a_list_of_origins_keeps_order_and_drops_duplicates_and_blank_lines() -> None:
    given = ["https://b.example", "", "https://a.example", "https://B.example:443"]
    assert normalize_origins(given) == ["https://b.example", "https://a.example"]


def test_a_setting_that_is_not_an_exact_origin_stops_the_start() -> None:
    code = "import django; django.setup()"
    env = {
        "DJANGO_SETTINGS_MODULE": "dar_site.settings_test",
        "DAR_WEBSOCKET_ALLOWED_ORIGINS": "shop.example",
        "DATABASE_URL": "postgres://unused/unused",
        "REDIS_URL": "redis://unused:1/0",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "DAR_WEBSOCKET_ALLOWED_ORIGINS" in done.stderr
    assert "starts with https://" in done.stderr


# --- the websocket handshake ----------------------------------------------------------------------


async def handshake(
    origin: str | None, host: str | None = "127.0.0.1:8000", scheme: str = "ws", **extra: Any
) -> tuple[WebsocketCommunicator, bool]:
    """Connect to an anonymous shopper's own session, as their browser would (cookie included)."""
    session, key = await _anonymous_session()
    headers = [(b"cookie", f"sessionid={key}".encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if host is not None:
        headers.append((b"host", host.encode()))
    for name, value in extra.items():
        headers.append((name.replace("_", "-").encode(), value.encode()))
    comm = WebsocketCommunicator(application, f"/ws/search/{session.pk}/", headers=headers)
    comm.scope["scheme"] = scheme
    connected, _ = await comm.connect(timeout=TIMEOUT)
    return comm, connected


@sync_to_async
def _anonymous_session() -> tuple[Any, str]:
    key = browser_session_key()
    return SearchSessionFactory.create(session_key=key), key


@pytest.mark.django_db(transaction=True)
async def test_the_pages_own_origin_gets_in() -> None:
    comm, connected = await handshake("http://127.0.0.1:8000")
    assert connected
    assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "state"
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:9999",  # another port of the same host (passed before the fix)
        "http://127.0.0.1",  # the default port is another port too
        "https://127.0.0.1:8000",  # another scheme (passed before the fix)
        "http://localhost:8000",  # another allowed host, but not this page's
        "null",
    ],
)
async def test_another_port_scheme_or_host_of_an_allowed_host_is_refused(origin: str) -> None:
    _, connected = await handshake(origin)
    assert not connected


@pytest.mark.django_db(transaction=True)
async def test_a_missing_origin_or_a_host_outside_allowed_hosts_is_refused() -> None:
    assert not (await handshake(None))[1]
    assert not (await handshake("http://evil.example:8000", host="evil.example:8000"))[1]


@pytest.mark.django_db(transaction=True)
async def test_secure_sockets_match_https_pages_only() -> None:
    assert (await handshake("https://127.0.0.1:8000", scheme="wss"))[1]
    assert not (await handshake("http://127.0.0.1:8000", scheme="wss"))[1]


@pytest.mark.django_db(transaction=True)
async def test_behind_a_trusted_tls_proxy_the_page_is_https() -> None:
    proxy = {"x_forwarded_proto": "https"}
    with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        assert not (await handshake("https://shop.test", host="127.0.0.1", **proxy))[1]
        assert (await handshake("https://127.0.0.1", host="127.0.0.1", **proxy))[1]
    # Without the setting the header is not trusted: the socket is plain ws, the page http.
    assert not (await handshake("https://127.0.0.1", host="127.0.0.1", **proxy))[1]


@pytest.mark.django_db(transaction=True)
async def test_configured_origins_match_exactly() -> None:
    with override_settings(DAR_WEBSOCKET_ALLOWED_ORIGINS=["https://app.example"]):
        assert (await handshake("https://app.example"))[1]
        assert not (await handshake("https://app.example:8443"))[1]
        assert not (await handshake("http://app.example"))[1]


@pytest.mark.django_db(transaction=True)
async def test_a_catalogs_widget_origin_is_let_through_but_told_nothing_without_auth() -> None:
    await sync_to_async(CatalogFactory.create)(embed_origins=["http://shop.test:9000"])
    comm, connected = await handshake("http://shop.test:9000")
    assert connected
    # Not the page's own origin: the cookie counts for nothing, nothing is sent before "auth".
    assert await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()
    assert not (await handshake("http://shop.test:9001"))[1]
    assert not (await handshake("https://shop.test:9000"))[1]
