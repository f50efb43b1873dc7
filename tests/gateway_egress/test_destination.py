"""SSRF guard: address classes, numeric host tricks, DNS rebinding, pinning (SECURITY.md D1, D2)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from tokenbroker.errors import DestinationNotAllowed
from tokenbroker.gateway.destination import (
    GuardedResolver,
    check_host,
    is_loopback_address,
    is_public_address,
    parse_host_literal,
    policy,
)

# One address per blocked range (so removing a range fails a test), plus the D1 corpus.
HOSTILE_HOSTS = [
    "169.254.169.254",
    "10.0.0.1",
    "10.255.255.255",
    "127.0.0.1",
    "127.255.255.254",
    "127.1",
    "127.0.1",
    "[::1]",
    "::1",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::ffff:169.254.169.254]",
    "[::ffff:10.0.0.1]",
    "0x7f000001",
    "0X7F000001",
    "0x7f.0x0.0x0.0x1",
    "0x7f.1",
    "2130706433",
    "017700000001",
    "0177.0.0.1",
    "0177.0.0.01",
    "127.0.0.1.",
    "100.64.0.1",
    "100.127.255.254",
    "fd00::1",
    "[fc00::1]",
    "0.0.0.0",
    "0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "198.18.0.1",
    "198.19.255.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "192.0.0.8",
    "192.0.2.1",
    "192.88.99.1",
    "198.51.100.7",
    "203.0.113.9",
    "240.0.0.1",
    "255.255.255.255",
    "[::]",
    "[::127.0.0.1]",
    "[fe80::1]",
    "[fe80::1%25eth0]",
    "[fec0::1]",
    "[ff02::1]",
    "[100::1]",
    "[64:ff9b:1::1]",
    "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b::127.0.0.1]",
    "[2002:7f00:1::1]",
    "[2002:a9fe:a9fe::]",
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
    "[2001:db8::1]",
    "[3fff::1]",
    "[4000::1]",
]

PUBLIC_HOSTS = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "[2606:4700:4700::1111]",
    "[::ffff:8.8.8.8]",
    "[64:ff9b::808:808]",
    "[2002:808:808::1]",
    "172.32.0.1",
    "100.128.0.1",
    "11.0.0.1",
]

MALFORMED_HOSTS = [
    "1.2.3.4.5",
    "1.2.3.4.0",
    "0.0.0.0.0.0",
    "foo.0x7f",
    "evil.example.127",
    "256.1.1.1",
    "1.256.1.1",
    "1.2.65536",
    "4294967296",
    "08.1.1.1",
    "0189",
    "127..1",
    "[::zz]",
    "[127.0.0.1]",
    "",
    "[]",
]


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_hostile_host_refused(host: str) -> None:
    ip = parse_host_literal(host)
    assert ip is not None
    assert not is_public_address(ip)
    with pytest.raises(DestinationNotAllowed) as info:
        check_host(host, policy())
    assert info.value.code == "destination_not_allowed"
    assert info.value.status == 403


@pytest.mark.parametrize("host", PUBLIC_HOSTS)
def test_public_host_allowed(host: str) -> None:
    assert check_host(host, policy()) is not None


@pytest.mark.parametrize("host", MALFORMED_HOSTS)
def test_malformed_numeric_host_refused(host: str) -> None:
    with pytest.raises(DestinationNotAllowed):
        parse_host_literal(host)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("0x7f000001", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.2", "10.1.0.2"),
        ("0x0a.0x010203", "10.1.2.3"),
        ("0x", "0.0.0.0"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("LOCALHOST", None),
        ("api.example.com", None),
        ("1a.example", None),
        ("example.0a", None),
    ],
)
def test_parse_host_literal(host: str, expected: str | None) -> None:
    ip = parse_host_literal(host)
    assert (None if ip is None else str(ip)) == expected


def test_loopback_only_for_named_hosts_and_never_private() -> None:
    allow = policy(frozenset({"LocalHost.", "127.0.0.1", "[::1]"}))
    loop4, loop6 = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")
    assert allow("localhost", loop4)
    assert allow("LOCALHOST.", loop4)
    assert allow("localhost", loop6)
    assert allow("localhost", ipaddress.ip_address("::ffff:127.0.0.1"))
    assert allow("127.0.0.1", loop4)
    assert allow("::1", loop6)
    assert not allow("other.example", loop4)
    for private in ("10.0.0.1", "169.254.169.254", "192.168.0.1", "fe80::1", "fd00::1"):
        assert not allow("localhost", ipaddress.ip_address(private))
    assert allow("other.example", ipaddress.ip_address("8.8.8.8"))
    check_host("127.0.0.1", allow)
    with pytest.raises(DestinationNotAllowed):
        check_host("127.0.0.2", policy(frozenset({"localhost"})))


def test_is_loopback_address() -> None:
    assert is_loopback_address(ipaddress.ip_address("::ffff:127.0.0.5"))
    assert not is_loopback_address(ipaddress.ip_address("::ffff:10.0.0.1"))


class FakeResolver(AbstractResolver):
    """Answers from a fixed table and counts lookups."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        self.closed = True


async def test_dns_rebinding_to_loopback_refused() -> None:
    inner = FakeResolver({"rebind.example": ["127.0.0.1"]})
    resolver = GuardedResolver(policy(), inner)
    with pytest.raises(DestinationNotAllowed):
        await resolver.resolve("rebind.example", 443)
    assert inner.calls == ["rebind.example"]


async def test_mixed_answer_keeps_only_public_addresses() -> None:
    inner = FakeResolver({"mixed.example": ["10.0.0.1", "93.184.215.14", "::1", "not-an-ip"]})
    kept = await GuardedResolver(policy(), inner).resolve("mixed.example", 443)
    assert [result["host"] for result in kept] == ["93.184.215.14"]


async def test_loopback_allowed_for_named_host() -> None:
    inner = FakeResolver({"localhost": ["127.0.0.1", "10.0.0.1"]})
    resolver = GuardedResolver(policy(frozenset({"localhost"})), inner)
    kept = await resolver.resolve("localhost", 8080)
    assert [result["host"] for result in kept] == ["127.0.0.1"]
    await resolver.close()
    assert inner.closed


async def test_numeric_host_refused_before_dns() -> None:
    inner = FakeResolver({"0x7f000001": ["127.0.0.1"]})
    with pytest.raises(DestinationNotAllowed):
        await GuardedResolver(policy(), inner).resolve("0x7f000001", 80)
    assert inner.calls == []


class CountingServer:
    """A raw TCP HTTP server that counts every connection it accepts."""

    def __init__(self) -> None:
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()


@pytest.fixture
async def counting_server() -> AsyncIterator[tuple[CountingServer, int]]:
    state = CountingServer()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield state, port
    server.close()
    await server.wait_closed()


async def _get(url: str, allow_loopback: frozenset[str]) -> str:
    resolver = GuardedResolver(policy(allow_loopback))
    connector = aiohttp.TCPConnector(resolver=resolver, family=socket.AF_INET)
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(url, allow_redirects=False) as response,
        ):
            return await response.text()
    finally:
        await resolver.close()


async def test_end_to_end_localhost_refused_without_connecting(
    counting_server: tuple[CountingServer, int],
) -> None:
    state, port = counting_server
    with pytest.raises(DestinationNotAllowed):
        await _get(f"http://localhost:{port}/", frozenset())
    assert state.connections == 0


async def test_end_to_end_localhost_served_when_allowed(
    counting_server: tuple[CountingServer, int],
) -> None:
    state, port = counting_server
    assert await _get(f"http://localhost:{port}/", frozenset({"localhost"})) == "ok"
    assert state.connections == 1


async def test_ip_literal_url_needs_check_host(counting_server: tuple[CountingServer, int]) -> None:
    # aiohttp does not consult the resolver for an IP literal: check_host is the guard.
    state, port = counting_server
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(DestinationNotAllowed):
        check_host("127.0.0.1", policy())
    assert state.connections == 0
    check_host("127.0.0.1", policy(frozenset({"127.0.0.1"})))
    assert await _get(url, frozenset()) == "ok"
    assert state.connections == 1
