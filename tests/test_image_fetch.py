"""The feed image fetcher: real HTTP from a local server, and the addresses it must refuse."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from catalog.services import fetch
from tests.factories import image_bytes
from tests.image_server import ImageServer, image_server


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with image_server() as running:
        yield running


def limits(**overrides: Any) -> fetch.Limits:
    values: dict[str, Any] = {
        "max_bytes": 1024 * 1024,
        "timeout": 5.0,
        "max_redirects": 3,
        "allowed_hosts": frozenset({"127.0.0.1"}),
    }
    values.update(overrides)
    return fetch.Limits(**values)


def test_an_allowed_local_host_is_fetched(server: ImageServer) -> None:
    data = image_bytes()
    url = server.add("/a.png", data)
    assert fetch.fetch(url, limits=limits()) == data


def test_loopback_is_refused_without_the_setting(server: ImageServer) -> None:
    url = server.add("/a.png", image_bytes())
    with (
        override_settings(DAR_FETCH_ALLOWED_HOSTS=[]),
        pytest.raises(fetch.FetchError, match="private, loopback or link-local"),
    ):
        fetch.fetch(url)
    assert server.hits.get("/a.png") is None  # refused before connecting
    with override_settings(DAR_FETCH_ALLOWED_HOSTS=["127.0.0.1"]):
        assert fetch.fetch(url) == image_bytes()


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/a.png",
        "http://192.168.0.10/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
        "http://0.0.0.0/a.png",
        "http://localhost/a.png",
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused(url: str) -> None:
    with pytest.raises(fetch.FetchError, match="private, loopback or link-local"):
        fetch.fetch(url, limits=limits(allowed_hosts=frozenset()))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(fetch.FetchError, match="only http and https"):
        fetch.fetch(url, limits=limits())


def test_a_redirect_to_a_private_address_is_refused(server: ImageServer) -> None:
    url = server.redirect("/go", "http://10.0.0.1/secret.png")
    with pytest.raises(fetch.FetchError, match=r"10\.0\.0\.1"):
        fetch.fetch(url, limits=limits())
    assert server.hits["/go"] == 1


def test_redirects_are_followed_up_to_the_limit(server: ImageServer) -> None:
    data = image_bytes()
    server.add("/final.png", data)
    server.redirect("/r1", "/final.png")
    server.redirect("/r2", server.url("/r1"))
    assert fetch.fetch(server.url("/r2"), limits=limits(max_redirects=2)) == data
    with pytest.raises(fetch.FetchError, match="more than 1 redirects"):
        fetch.fetch(server.url("/r2"), limits=limits(max_redirects=1))


def test_a_redirect_loop_stops(server: ImageServer) -> None:
    server.redirect("/loop", "/loop")
    with pytest.raises(fetch.FetchError, match="redirects"):
        fetch.fetch(server.url("/loop"), limits=limits())


@pytest.mark.parametrize("declare", [True, False])
def test_too_big_is_refused(server: ImageServer, declare: bool) -> None:
    url = server.stream("/big", 300_000, declare=declare)
    with pytest.raises(fetch.FetchError, match="larger than 100,000 bytes"):
        fetch.fetch(url, limits=limits(max_bytes=100_000))


def test_a_slow_trickle_is_refused(server: ImageServer) -> None:
    # Each byte arrives well within a per-read timeout; the whole body would take 20 s.
    url = server.trickle("/slow.png", image_bytes(), pause=0.1)
    with pytest.raises(fetch.FetchError, match=r"took longer than 0\.5 s"):
        fetch.fetch(url, limits=limits(timeout=0.5))


def test_http_errors_are_reported(server: ImageServer) -> None:
    with pytest.raises(fetch.FetchError, match="HTTP 404"):
        fetch.fetch(server.url("/missing.png"), limits=limits())


def test_the_host_is_resolved_once_and_the_checked_address_used(
    server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name that resolves to the allowed address first and somewhere else afterwards (DNS
    # rebinding) is connected to the address that was checked.
    import socket

    real = socket.getaddrinfo
    calls: list[str] = []

    def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(host)
        if host == "shop.example":
            return (
                real("127.0.0.1", *args, **kwargs)
                if len(calls) == 1
                else real("10.9.9.9", *args, **kwargs)
            )
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    data = image_bytes()
    url = server.add("/a.png", data).replace("127.0.0.1", "shop.example")
    assert fetch.fetch(url, limits=limits(allowed_hosts=frozenset({"shop.example"}))) == data
    assert calls.count("shop.example") == 1  # (the connection looks up only the address)
