"""SSRF guard for the gateway's upstream connections (SECURITY.md D1, D2).

Follows the OWASP SSRF Prevention Cheat Sheet and RFC 9728 §7.7: only globally routable unicast
addresses are reachable, checked against the IANA special-purpose registries (RFC 6890) by
hand, so the answer does not depend on the Python version's ``ipaddress`` tables. IPv6 must be
global unicast (2000::/3); forms that embed an IPv4 address (mapped, NAT64, 6to4) are judged by
that address, and IPv4-compatible ``::a.b.c.d`` and Teredo are refused outright.

Two entry points cover both ways aiohttp reaches a host:

* :class:`GuardedResolver` filters what DNS returns. aiohttp connects to the addresses the
  resolver returned, so the address that was checked is the one connected to (DNS rebinding,
  D2); a host whose every address is refused raises :class:`DestinationNotAllowed`.
* :func:`check_host` must be called on the URL host before a request: aiohttp skips the
  resolver for IP literals (``http://127.0.0.1/``). It also reads the legacy numeric forms an
  attacker puts in a URL (``0x7f000001``, ``2130706433``, ``0177.0.0.1``, ``127.1``) the way
  ``inet_aton`` and the WHATWG URL parser do.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from typing import Final

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from tokenbroker.errors import DestinationNotAllowed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Policy = Callable[[str, IPAddress], bool]


def _table(*cidrs: str) -> tuple[tuple[int, int], ...]:
    nets = [ipaddress.ip_network(cidr) for cidr in cidrs]
    return tuple((int(net.network_address), int(net.netmask)) for net in nets)


# RFC 6890 / IANA IPv4 special-purpose address registry, plus multicast and class E.
_V4_BLOCKED: Final = _table(
    "0.0.0.0/8",  # "this network", incl. unspecified
    "10.0.0.0/8",  # RFC 1918
    "100.64.0.0/10",  # RFC 6598 CGNAT
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, cloud metadata
    "172.16.0.0/12",  # RFC 1918
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # TEST-NET-1
    "192.88.99.0/24",  # 6to4 relay anycast
    "192.168.0.0/16",  # RFC 1918
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",  # TEST-NET-3
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, incl. limited broadcast
)
# IPv6: only global unicast 2000::/3 (RFC 4291 §2.4) is reachable, minus the IANA
# special-purpose blocks inside it. Everything outside (::/8 incl. loopback and
# IPv4-compatible, fc00::/7, fe80::/10, fec0::/10, ff00::/8, 100::/64, 64:ff9b:1::/48) is
# refused by that rule; mapped, NAT64 and 6to4 addresses are judged by their IPv4 address.
_V6_GLOBAL_UNICAST: Final = _table("2000::/3")[0]
_V6_BLOCKED: Final = _table(
    "2001::/23",  # IETF protocol assignments, incl. Teredo 2001::/32, ORCHID, benchmarking
    "2001:db8::/32",  # documentation
    "3fff::/20",  # documentation (RFC 9637)
)
_NAT64: Final = _table("64:ff9b::/96")[0]
_SIX_TO_FOUR: Final = _table("2002::/16")[0]

# inet_aton / WHATWG "ends in a number": decimal, octal (leading 0) or hex (0x) parts.
_NUMERIC_LABEL_RE: Final = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)")


def _in(value: int, table: tuple[tuple[int, int], ...]) -> bool:
    return any(value & mask == net for net, mask in table)


def is_public_address(ip: IPAddress) -> bool:
    """True only for a globally routable unicast address (OWASP SSRF; RFC 9728 §7.7)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return not _in(int(ip), _V4_BLOCKED)
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return is_public_address(mapped)
    value = int(ip)
    if value & _NAT64[1] == _NAT64[0]:
        return is_public_address(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if value & _SIX_TO_FOUR[1] == _SIX_TO_FOUR[0]:
        return is_public_address(ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF))
    g_net, g_mask = _V6_GLOBAL_UNICAST
    return value & g_mask == g_net and not _in(value, _V6_BLOCKED)


def is_loopback_address(ip: IPAddress) -> bool:
    """127/8, ::1 and ``::ffff:127.x.y.z``."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _numeric_part(label: str) -> int:
    if label[:2] in ("0x", "0X"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label[0] == "0":
        if not label.isdigit() or "8" in label or "9" in label:
            raise DestinationNotAllowed("malformed numeric host")
        return int(label, 8)
    return int(label)


def _parse_numeric_v4(labels: list[str]) -> ipaddress.IPv4Address:
    if len(labels) > 4 or not all(_NUMERIC_LABEL_RE.fullmatch(label) for label in labels):
        raise DestinationNotAllowed("malformed numeric host")
    parts = [_numeric_part(label) for label in labels]
    last_bits = 8 * (5 - len(parts))
    if any(part > 0xFF for part in parts[:-1]) or parts[-1] >= 1 << last_bits:
        raise DestinationNotAllowed("malformed numeric host")
    value = parts[-1]
    for index, part in enumerate(parts[:-1]):
        value |= part << (24 - 8 * index)
    return ipaddress.IPv4Address(value)


def normalize_host(host: str) -> str:
    """Lowercase, strip IPv6 brackets and one trailing dot (``localhost.`` is ``localhost``)."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") and not host.endswith("..") else host


def parse_host_literal(host: str) -> IPAddress | None:
    """Return the address ``host`` denotes if it is an IP literal in any form, else ``None``.

    IPv6 is recognised with or without brackets (a zone ``%eth0`` is kept and makes it
    link-local). A host whose last label is numeric is an IPv4 literal in inet_aton form and
    must parse as one: ``foo.0x7f`` or ``1.2.3.4.5`` raise :class:`DestinationNotAllowed`.
    """
    name = normalize_host(host)
    if not name:
        raise DestinationNotAllowed("empty host")
    if ":" in name or host.lstrip().startswith("["):
        try:
            return ipaddress.IPv6Address(name)
        except ValueError:
            raise DestinationNotAllowed("malformed IPv6 host") from None
    labels = name.split(".")
    if _NUMERIC_LABEL_RE.fullmatch(labels[-1]) is None:
        return None
    return _parse_numeric_v4(labels)


def policy(allow_loopback_hosts: frozenset[str] = frozenset()) -> Policy:
    """Allow public addresses; loopback too, only for the hosts named (``allow_insecure_loopback``
    providers in tests and the demo). Private and link-local addresses are never allowed.
    """
    loopback_hosts = frozenset(normalize_host(name) for name in allow_loopback_hosts)

    def allow(host: str, ip: IPAddress) -> bool:
        if is_public_address(ip):
            return True
        return is_loopback_address(ip) and normalize_host(host) in loopback_hosts

    return allow


def check_host(host: str, allow: Policy) -> IPAddress | None:
    """Refuse an IP-literal ``host`` the policy does not allow; return its address, or ``None``
    for a DNS name (which :class:`GuardedResolver` checks at connect time).
    """
    ip = parse_host_literal(host)
    if ip is not None and not allow(host, ip):
        raise DestinationNotAllowed("destination address is not allowed")
    return ip


def _result_ip(result: ResolveResult) -> IPAddress | None:
    try:
        return ipaddress.ip_address(result["host"])
    except ValueError:
        return None


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that returns only the addresses ``allow`` accepts (D2, pinning)."""

    def __init__(self, allow: Policy, inner: AbstractResolver | None = None) -> None:
        self._allow = allow
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        check_host(host, self._allow)
        results = await self._inner.resolve(host, port, family)
        kept = []
        for result in results:
            ip = _result_ip(result)
            if ip is not None and self._allow(host, ip):
                kept.append(result)
        if not kept:
            raise DestinationNotAllowed("destination address is not allowed")
        return kept

    async def close(self) -> None:
        await self._inner.close()
