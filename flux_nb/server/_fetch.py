"""Fetching input_image URLs without reaching the server's own private network.

A server on a team's network that fetches any URL it is given is a way to probe internal hosts
and cloud metadata addresses. So every connection the fetch client opens, the first and each
redirect's, goes through GuardedBackend: the host is resolved here, every address it resolves to
is checked, and the socket is opened to the checked address itself (no second lookup that DNS
rebinding could answer differently). TLS still verifies the certificate against the host name.
Checking resolved addresses covers every spelling of one: `localhost`, `127.1`, `2130706433`,
`0x7f.0.0.1`, `[::1]`, `[::ffff:127.0.0.1]`, NAT64 and 6to4 wrappings of a private IPv4.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# What each kind is called in the refusal, most telling first.
KINDS = (
    ("is_loopback", "a loopback address"),
    ("is_unspecified", "an unspecified address"),
    ("is_link_local", "a link-local address (cloud metadata lives there)"),
    ("is_multicast", "a multicast address"),
    ("is_reserved", "a reserved address"),
    ("is_private", "a private address"),
)


class BlockedAddress(Exception):
    """A URL's host resolved to an address this server does not fetch from; str() is one line."""


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, NAT64, 6to4, Teredo), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if any(ip in net for net in NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why this address is not fetched from (its kind), or None for a public address."""
    for candidate in (embedded_ipv4(ip), ip):  # the wrapped IPv4 names it best
        if candidate is None:
            continue
        for attribute, kind in KINDS:
            if getattr(candidate, attribute):
                return kind
        if not candidate.is_global:
            return "a non-public address"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to for TCP, in the resolver's order (OSError if none)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if ip not in seen:
            seen.append(ip)
    return seen


def check(
    host: str,
    addresses: Iterable[IPAddress],
    refuse: Callable[[IPAddress], str | None] = refusal,
) -> None:
    """BlockedAddress when any address is not public (one private answer is enough to refuse:
    a mixed answer is how rebinding attacks start)."""
    for ip in addresses:
        kind = refuse(ip)
        if kind is not None:
            shown = host if host == str(ip) else f"{host} ({ip})"
            raise BlockedAddress(
                f"its host {shown} is {kind}, and this server does not fetch from private"
                " networks: send the image as a data: URI, or start the server with"
                " --allow-private-urls on a trusted network."
            )


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's network backend with the address check before each TCP connection.
    resolver and refuse are the lookup and the policy (tests give their own)."""

    def __init__(
        self,
        resolver: Callable[[str, int], list[IPAddress]] = resolve,
        refuse: Callable[[IPAddress], str | None] = refusal,
    ) -> None:
        self._inner = httpcore.SyncBackend()
        self._resolve, self._refuse = resolver, refuse

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self._resolve(host, port)
        except (OSError, UnicodeError, ValueError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        check(host, addresses, self._refuse)
        error: Exception | None = None
        for ip in addresses:  # to the checked address itself, never the name again
            try:
                return self._inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        raise error or httpcore.ConnectError(f"no address for {host}")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise BlockedAddress("a Unix socket is not fetched from")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport on GuardedBackend. httpx has no public way to give its pool a network
    backend, so the pool it made is replaced by one made the same way with ours; the assert
    keeps an httpx that renamed the attribute from silently dropping the guard."""

    def __init__(self, backend: GuardedBackend | None = None, **options: Any) -> None:
        super().__init__(**options)
        pool = getattr(self, "_pool", None)
        assert isinstance(pool, httpcore.ConnectionPool), "httpx changed: update _fetch.py"
        self._pool = httpcore.ConnectionPool(
            ssl_context=pool._ssl_context,
            max_connections=pool._max_connections,
            max_keepalive_connections=pool._max_keepalive_connections,
            keepalive_expiry=pool._keepalive_expiry,
            network_backend=backend or GuardedBackend(),
        )


def fetch_client(*, allow_private: bool, max_redirects: int = 3) -> httpx.Client:
    """The client input_image URLs are fetched with. Proxy variables are ignored (trust_env off):
    a proxy would make the connection, and the check would see only the proxy's address."""
    transport = httpx.HTTPTransport() if allow_private else GuardedTransport()
    return httpx.Client(
        transport=transport, follow_redirects=True, max_redirects=max_redirects, trust_env=False
    )
