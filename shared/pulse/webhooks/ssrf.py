"""The SSRF guard of the webhook channel: which URLs Pulse may POST to on a tenant's behalf.

A webhook URL is chosen by whoever calls the API, so without a guard Pulse could be made to reach
services that only it can reach: its own database and broker, the cloud's metadata endpoint,
anything on the private network. Only http(s) URLs are allowed, and every address the host resolves
to must be public, unless the host or the address is in the operator's allowlist
(`PULSE_WEBHOOK_ALLOWLIST`: comma-separated host names, addresses or CIDR networks, a name or an
address optionally with `:port` to exempt that port only).

Pure functions; name resolution is injectable so that tests need no DNS.
"""

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[IPAddress]]

ALLOWED_SCHEMES = ("http", "https")
# Cloud instance metadata (AWS, GCP, Azure, ...; AWS's IPv6 one): credentials live there.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


class RefusedUrl(ValueError):
    """The URL may not be called; the message says why."""


@dataclass(frozen=True)
class Allowlist:
    """Hosts (lower-case names or literal addresses) and networks exempt from the guard, each on
    every port (port None) or on one."""

    hosts: frozenset[tuple[str, int | None]] = frozenset()
    networks: tuple[tuple[IPNetwork, int | None], ...] = ()

    @classmethod
    def parse(cls, entries: str | Iterable[str] | None) -> "Allowlist":
        """From `PULSE_WEBHOOK_ALLOWLIST`, e.g. `127.0.0.1:8025,localhost:8025,10.0.0.0/8,hooks.internal`."""
        if entries is None:
            return cls()
        if isinstance(entries, str):
            entries = entries.split(",")
        hosts: set[tuple[str, int | None]] = set()
        networks: list[tuple[IPNetwork, int | None]] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            host, port = _host_and_port(entry)
            try:
                networks.append((ipaddress.ip_network(host, strict=False), port))
            except ValueError:
                hosts.add((host.rstrip("."), port))
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        return (host, None) in self.hosts or (host, port) in self.hosts

    def allows_address(self, address: IPAddress, port: int) -> bool:
        address = _unmapped(address)
        return any(
            address.version == network.version and address in network and allowed in (None, port)
            for network, allowed in self.networks
        )


def _host_and_port(entry: str) -> tuple[str, int | None]:
    """An allowlist entry's host and port: `host:port`, `[v6 address]:port`, or a bare host,
    address or network (a bare IPv6 one has several colons, so it never carries a port)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":") or None
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    else:
        return entry, None
    if port is None:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"webhook allowlist entry {entry!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def refusal_reason(address: IPAddress) -> str | None:
    """Why an address may not be called (None: it is public)."""
    address = _unmapped(address)
    if address in METADATA_ADDRESSES:
        return "cloud metadata address"
    for reason, refused in (
        ("unspecified address", address.is_unspecified),
        ("loopback address", address.is_loopback),
        ("link-local address", address.is_link_local),
        ("multicast address", address.is_multicast),
        ("private address", address.is_private),
        ("reserved address", address.is_reserved),
    ):
        if refused:
            return reason
    if not address.is_global:  # shared address space (100.64/10) and other special-purpose ranges
        return "non-public address"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The host as an IP address, if it is one (`[::1]` included)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or RefusedUrl."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise RefusedUrl(f"not a valid URL: {error}") from error
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise RefusedUrl(f"only http and https URLs are allowed, not {scheme or 'a relative URL'!r}")
    if not parts.hostname:
        raise RefusedUrl("the URL has no host")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def check_literal(url: str, allowlist: Allowlist) -> None:
    """What the gateway can check without resolving names: the scheme, and a literal IP host."""
    _scheme, host, port = split_url(url)
    address = literal_address(host)
    if address is None or allowlist.allows_host(host, port) or allowlist.allows_address(address, port):
        return
    if (reason := refusal_reason(address)) is not None:
        raise RefusedUrl(f"{host} is a {reason}")


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to (literal addresses resolve to themselves)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_url(url: str, allowlist: Allowlist, *, resolver: Resolver = resolve) -> list[IPAddress]:
    """Check a URL before calling it: its scheme, and every address its host resolves to.

    Returns the checked addresses. A host allowlisted (on the URL's port) skips the address check;
    otherwise each address must be public or in a network allowlisted (on the URL's port): one
    refused address refuses the URL, so that a name cannot mix a public and a private address.
    """
    _scheme, host, port = split_url(url)
    literal = literal_address(host)
    if allowlist.allows_host(host, port):
        return [literal] if literal is not None else []
    try:
        addresses = [literal] if literal is not None else list(resolver(host, port))
    except (OSError, UnicodeError) as error:
        raise RefusedUrl(f"cannot resolve {host}: {error}") from error
    if not addresses:
        raise RefusedUrl(f"{host} resolves to no address")
    for address in addresses:
        if allowlist.allows_address(address, port):
            continue
        if (reason := refusal_reason(address)) is not None:
            raise RefusedUrl(f"{host} resolves to {address}, a {reason}")
    return addresses


def _unmapped(address: IPAddress) -> IPAddress:
    """`::ffff:10.0.0.1` is 10.0.0.1 on the wire: judge the IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
