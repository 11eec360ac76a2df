"""Outbound HTTP to URLs that users give (reporting webhooks, the webhook channel, later data files).

A workspace user must not be able to make Tidings call into the network it runs in (SSRF): every request
resolves its host and refuses private, loopback, link-local, multicast, reserved and unspecified
addresses, unless the operator sets ``TIDINGS_OUTBOUND_ALLOW_PRIVATE=true`` (tests and single-host setups
do). The check runs in the transport, so it covers every request a client makes, redirects included
(clients built here do not follow redirects at all, so a public URL cannot bounce to a private one).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import httpx


class OutboundRefused(Exception):
    """The URL may not be called: bad scheme, unresolvable host, or a non-public address."""


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse ``url`` unless it is http(s) to a host whose every address is public (or private ones are
    allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise OutboundRefused(f"only http and https URLs may be called, not {parts.scheme or 'no scheme'!r}")
    host = parts.hostname
    if not host:
        raise OutboundRefused("the URL has no host")
    if allow_private:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundRefused(f"cannot resolve {host}: {exc.strerror}") from exc
    for info in infos:
        address = str(info[4][0])
        if not _is_public(address):
            # The address itself is not named: the message reaches workspace users, who should not learn
            # the internal network's addresses from it.
            raise OutboundRefused(
                f"{host} resolves to a private or local address; the operator may set "
                "TIDINGS_OUTBOUND_ALLOW_PRIVATE=true to allow it"
            )


class GuardedTransport(httpx.BaseTransport):
    """Checks each request's URL before handing it to the real transport."""

    def __init__(self, inner: httpx.BaseTransport, *, allow_private: bool) -> None:
        self.inner = inner
        self.allow_private = allow_private

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            check_url(str(request.url), allow_private=self.allow_private)
        except OutboundRefused as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def http_client(*, allow_private: bool, timeout: float, http2: bool = False) -> httpx.Client:
    """A client for user-given URLs: guarded, no redirects, the given timeout for every phase."""
    transport = GuardedTransport(httpx.HTTPTransport(http2=http2), allow_private=allow_private)
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        headers={"User-Agent": "Tidings (Customer.io-compatible)"},
    )
