"""Fetching a feed's images (and feeds themselves) from URLs a shop gives, without becoming a proxy
into our own network.

* Only http and https. Each host is resolved ONCE and the connection is made to the address that
  was checked (TLS still verifies the host name), so a DNS answer cannot change between the check
  and the connection (DNS rebinding).
* Addresses that are not globally routable (private, loopback, link-local such as the cloud
  metadata service at 169.254.169.254, shared, reserved, multicast, IPv4-mapped forms of these)
  are refused, unless the host name or address is listed in ``DAR_FETCH_ALLOWED_HOSTS``.
* Redirects are followed by hand, at most ``DAR_FETCH_MAX_REDIRECTS``, each hop checked again.
* One deadline for the whole fetch (``DAR_FETCH_TIMEOUT``, redirects and a slow trickle of bytes
  included) and a size cap read as the bytes come (a Content-Length is not trusted).

What comes back are bytes only; the ingest's validation judges them as it does an upload.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from django.conf import settings

_CHUNK = 1 << 16
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(Exception):
    """The URL was not fetched; the message says why (shown in the sync report)."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    timeout: float
    max_redirects: int
    allowed_hosts: frozenset[str]

    @classmethod
    def from_settings(cls, max_bytes: int | None = None) -> Limits:
        return cls(
            max_bytes=int(max_bytes or settings.DAR_MAX_IMAGE_BYTES),
            timeout=float(settings.DAR_FETCH_TIMEOUT),
            max_redirects=int(settings.DAR_FETCH_MAX_REDIRECTS),
            allowed_hosts=frozenset(h.strip().lower() for h in settings.DAR_FETCH_ALLOWED_HOSTS),
        )


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int, limits: Limits) -> str:
    """The one address this fetch connects to, checked; FetchError if refused."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host}: {exc}") from None
    if not infos:
        raise FetchError(f"cannot resolve {host}")
    address = str(infos[0][4][0])
    allowed = host.lower() in limits.allowed_hosts or address in limits.allowed_hosts
    if not allowed:
        # Every answer is checked, not only the one used: a name that resolves to a private
        # address among public ones is someone probing.
        for info in infos:
            if not is_public(str(info[4][0])):
                raise FetchError(
                    f"{host} resolves to a private, loopback or link-local address "
                    f"({info[4][0]}); not fetched (DAR_FETCH_ALLOWED_HOSTS allows a host)"
                )
    return address


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _remaining(deadline: float, limits: Limits) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(f"took longer than {limits.timeout:g} s (DAR_FETCH_TIMEOUT)")
    return left


def fetch(url: str, *, limits: Limits | None = None, accept: str = "image/*") -> bytes:
    """The body of ``url`` after at most ``max_redirects`` checked redirects; FetchError if not."""
    limits = limits or Limits.from_settings()
    deadline = time.monotonic() + limits.timeout
    for _hop in range(limits.max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(f"only http and https URLs are fetched, not {parts.scheme or url!r}")
        host = parts.hostname
        if not host:
            raise FetchError(f"no host in {url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise FetchError(f"bad port in {url!r}") from None
        address = resolve(host, port, limits)
        kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        conn = kind(host, port, address, _remaining(deadline, limits))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request(
                "GET", target, headers={"User-Agent": "dar-feed-fetcher", "Accept": accept}
            )
            # Kept: getresponse() drops the connection's reference when the server closes after.
            sock = conn.sock
            response = conn.getresponse()
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise FetchError(f"redirect ({response.status}) without a Location")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise FetchError(f"HTTP {response.status} {response.reason}".strip())
            return _body(sock, response, deadline, limits)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError | socket.timeout):
                raise FetchError(
                    f"took longer than {limits.timeout:g} s (DAR_FETCH_TIMEOUT)"
                ) from None
            raise FetchError(f"fetch failed: {exc.__class__.__name__}: {exc}") from None
        finally:
            conn.close()
    raise FetchError(f"more than {limits.max_redirects} redirects (DAR_FETCH_MAX_REDIRECTS)")


def _body(
    sock: socket.socket | None,
    response: http.client.HTTPResponse,
    deadline: float,
    limits: Limits,
) -> bytes:
    too_big = f"larger than {limits.max_bytes:,} bytes"
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise FetchError(too_big)
    buffer = bytearray()
    while True:
        if sock is not None:
            sock.settimeout(_remaining(deadline, limits))
        chunk = response.read1(_CHUNK)
        if not chunk:
            return bytes(buffer)
        buffer += chunk
        if len(buffer) > limits.max_bytes:
            raise FetchError(too_big)
        _remaining(deadline, limits)
