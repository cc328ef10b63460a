"""Outbound HTTP that user-supplied URLs may not turn against the host (SSRF guard).

Input files and webhooks are fetched from URLs a client chose. Without a guard, a request
could make a worker read cloud metadata credentials or poke services on the private network.
Every request sent through ``GuardedTransport`` (each redirect hop included, since httpx
sends every hop through the transport) resolves its host once, refuses unsafe addresses
unless ``fetch_allow`` lists them, and connects to exactly the address it checked, so DNS
cannot answer differently between check and connect. Host header, SNI and certificate
checks still use the original host name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

ALLOWED_SCHEMES = ("http", "https")

# Metadata services that sit on addresses Python counts as global, so only naming them refuses them.
METADATA_NETWORKS = (
    ipaddress.ip_network("168.63.129.16/32"),  # Azure wire server
    ipaddress.ip_network("192.0.0.192/32"),  # Oracle Cloud
)
MAPPED_IPV4 = ipaddress.IPv6Network("::ffff:0:0/96")
# IPv6 ranges whose last 32 bits are an IPv4 address the packet ends up at.
IPV4_SUFFIX_NETWORKS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"))


class AddressRefused(Exception):
    """The URL's scheme or address is not one this server may contact."""


def is_web_url(url: str) -> bool:
    """An absolute http(s) URL with a host: the only kind worth handing to the guard."""
    try:
        parts = urlsplit(url)
        return parts.scheme in ALLOWED_SCHEMES and bool(parts.hostname)
    except ValueError:
        return False


def system_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one tunnels to (mapped, 6to4, Teredo, NAT64, IPv4-compatible)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in IPV4_SUFFIX_NETWORKS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be contacted, or None when it is a public unicast address."""
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_loopback:
        return "loopback address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = refusal_reason(inner)
            return f"{reason} {inner} inside an IPv6 address" if reason else None
    checks = (
        ("link-local address", ip.is_link_local),
        ("site-local address", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
        ("multicast address", ip.is_multicast),
        ("cloud metadata address", any(ip in net for net in METADATA_NETWORKS if net.version == ip.version)),
        ("private address", ip.is_private),
        ("reserved address", ip.is_reserved),
        ("address that is not globally routable", not ip.is_global),
    )
    return next((reason for reason, hit in checks if hit), None)


@dataclass(frozen=True)
class AddressPolicy:
    """Refuse unsafe addresses except those ``fetch_allow`` names (host names, addresses, CIDRs)."""

    allowed_names: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    resolve: Resolver = system_resolve

    @classmethod
    def from_allow_list(cls, entries: Iterable[str], resolve: Resolver = system_resolve) -> AddressPolicy:
        names, networks = set(), []
        for entry in entries:
            try:
                networks.append(_unmapped_network(ipaddress.ip_network(entry.strip("[]"), strict=False)))
            except ValueError:
                names.add(_normal_name(entry))
        return cls(frozenset(names), tuple(networks), resolve)

    def addresses(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` to connect to; raises ``AddressRefused`` if any is unsafe.

        One unsafe address refuses the host even when others are fine: an attacker controls
        which of several DNS answers a client would try first.
        """
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            found = [str(literal)]
        else:
            try:
                found = self.resolve(host, port)
            except (OSError, UnicodeError) as error:
                raise AddressRefused(f"cannot resolve host {host!r}: {error}") from None
            if not found:
                raise AddressRefused(f"host {host!r} has no address")
        if _normal_name(host) in self.allowed_names:
            return found
        for address in found:
            ip = ipaddress.ip_address(address.split("%")[0])
            plain = (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip
            if any(plain.version == net.version and plain in net for net in self.allowed_networks):
                continue
            reason = refusal_reason(ip)
            if reason is not None:
                shown = host if literal is not None else f"{host} ({address})"
                raise AddressRefused(f"refusing to contact {shown}: {reason}")
        return found


def _unmapped_network(network: IPNetwork) -> IPNetwork:
    """``::ffff:a.b.c.d/n`` as the IPv4 network it means, so either spelling allows the same hosts."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(MAPPED_IPV4):
        mapped = network.network_address.ipv4_mapped
        return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


def _normal_name(name: str) -> str:
    return name.strip().lower().rstrip(".")


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport that checks the address of every request it sends and pins it."""

    def __init__(self, policy: AddressPolicy, **kwargs: object) -> None:
        # No kept-alive connections: a pooled connection is keyed by address, and reusing one
        # opened for another host name would skip that host's certificate check.
        super().__init__(limits=httpx.Limits(max_keepalive_connections=0), **kwargs)  # type: ignore[arg-type]
        self.policy = policy

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ALLOWED_SCHEMES:
            raise AddressRefused(f"only http and https URLs may be fetched, not {str(url)[:60]!r}")
        host = url.raw_host.decode("ascii")
        addresses = self.policy.addresses(host, url.port or (443 if url.scheme == "https" else 80))
        failure: httpx.ConnectError | None = None
        for address in addresses:
            pinned = httpx.Request(
                request.method,
                url.copy_with(host=address),
                headers=request.headers,  # keeps the Host header of the original URL
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": host},
            )
            try:
                return super().handle_request(pinned)
            except httpx.ConnectError as error:
                failure = error
        assert failure is not None
        raise failure


def guarded_client(
    allow: Iterable[str],
    *,
    timeout: httpx.Timeout,
    follow_redirects: bool,
    max_redirects: int = 0,
    resolve: Resolver = system_resolve,
) -> httpx.Client:
    """An httpx client whose every request, redirect hops included, passes the guard.

    ``trust_env`` is off: a proxy from the environment would connect on the guard's behalf to
    addresses it never checked.
    """
    return httpx.Client(
        transport=GuardedTransport(AddressPolicy.from_allow_list(allow, resolve)),
        timeout=timeout,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
        trust_env=False,
        headers={"user-agent": "openreel"},
    )
