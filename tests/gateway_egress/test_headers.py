"""Header allowlists in both directions (RFC 9110 §7.6.1; SECURITY.md D5-D8)."""

from __future__ import annotations

import pytest

from tokenbroker.errors import InvalidHeader
from tokenbroker.gateway.headers import (
    NEVER_FORWARDED,
    REQUEST_ALLOWED,
    RESPONSE_ALLOWED,
    extra_allowed,
    filter_request_headers,
    filter_response_headers,
)

# Every name a template might try to allow, and what the agent sends: never forwarded.
HOSTILE_REQUEST_HEADERS = [
    ("Authorization", "Bearer agent-token"),
    ("authorization", "Bearer agent-token"),
    ("AUTHORIZATION", "Basic dXNlcjpwYXNz"),
    ("Proxy-Authorization", "Basic eA=="),
    ("Cookie", "session=abc"),
    ("cookie", "session=abc"),
    ("Host", "evil.example"),
    ("Content-Length", "0"),  # framing is the gateway's (request smuggling)
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-For", "127.0.0.1"),
    ("X-Forwarded-Proto", "http"),
    ("Forwarded", "host=evil.example"),
    ("X-Real-IP", "10.0.0.1"),
    ("Via", "1.1 evil"),
    ("X-Original-URL", "/admin"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("Connection", "close"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Trailer", "X-Foo"),
    ("Transfer-Encoding", "chunked"),
    ("Upgrade", "websocket"),
    ("Proxy-Connection", "keep-alive"),
    ("As-User", "12345"),
    ("Dropbox-API-Select-User", "dbmid:other"),
    ("Dropbox-API-Select-Admin", "dbmid:admin"),
    ("DPoP", "eyJ.proof"),
    ("X-Api-Key", "agent-key"),
    ("Private-Token", "glpat-agent"),
    ("Set-Cookie", "a=b"),
    ("X-Amz-Security-Token", "t"),
]


def _names(headers: list[tuple[str, str]]) -> set[str]:
    return {name.lower() for name, _ in headers}


@pytest.mark.parametrize(("name", "value"), HOSTILE_REQUEST_HEADERS)
def test_hostile_request_header_never_forwarded(name: str, value: str) -> None:
    # Even a template that lists the header cannot re-enable it.
    template = frozenset({name.lower()})
    assert filter_request_headers([(name, value), ("Accept", "*/*")], template) == [
        ("Accept", "*/*")
    ]
    assert filter_request_headers([(name, value)], extra_allowed([name])) == []


def test_hostile_table_is_large() -> None:
    assert len(HOSTILE_REQUEST_HEADERS) >= 25


@pytest.mark.parametrize("name", ["X-Forwarded-Anything", "Proxy-Whatever"])
def test_never_forwarded_prefixes(name: str) -> None:
    assert filter_request_headers([(name, "x")], frozenset({name.lower()})) == []


def test_credential_and_hop_by_hop_names_are_in_never_forwarded() -> None:
    for name in ("authorization", "cookie", "proxy-authorization", "host", "connection", "te"):
        assert name in NEVER_FORWARDED
    assert not REQUEST_ALLOWED & NEVER_FORWARDED


def test_connection_named_headers_removed_even_if_allowed() -> None:
    headers = [
        ("Connection", "x-agent-id, Accept-Language"),
        ("X-Agent-Id", "agent-1"),
        ("Accept-Language", "fr"),
        ("Accept", "application/json"),
    ]
    kept = filter_request_headers(headers, frozenset({"x-agent-id"}))
    assert kept == [("Accept", "application/json")]


def test_connection_named_over_several_connection_headers() -> None:
    headers = [("Connection", "keep-alive"), ("connection", " If-Match "), ("If-Match", '"1"')]
    assert filter_request_headers(headers) == []


def test_allowed_headers_kept_in_order_with_duplicates() -> None:
    headers = [
        ("Accept", "application/json"),
        ("content-type", "application/json"),
        ("X-Request-Id", "r-1"),
        ("Accept", "text/plain"),
        ("Idempotency-Key", "k-1"),
        ("X-Unknown", "dropped"),
    ]
    assert filter_request_headers(headers) == [
        ("Accept", "application/json"),
        ("content-type", "application/json"),
        ("X-Request-Id", "r-1"),
        ("Accept", "text/plain"),
        ("Idempotency-Key", "k-1"),
    ]


def test_unknown_header_dropped_by_default() -> None:
    assert filter_request_headers([("X-Custom", "1"), ("Notion-Version", "2022-06-28")]) == []


def test_template_extra_header_forwarded() -> None:
    allowed = extra_allowed(["Notion-Version", "Authorization", "X-Forwarded-Host"])
    assert allowed == frozenset({"notion-version"})
    kept = filter_request_headers(
        [("Notion-Version", "2022-06-28"), ("Authorization", "Bearer x")], allowed
    )
    assert kept == [("Notion-Version", "2022-06-28")]


@pytest.mark.parametrize(
    "value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x00b", "Bearer x\r\nHost: evil"]
)
@pytest.mark.parametrize("name", ["Accept", "Authorization", "X-Unknown"])
def test_cr_lf_nul_in_any_value_refused(name: str, value: str) -> None:
    with pytest.raises(InvalidHeader) as info:
        filter_request_headers([("Accept", "*/*"), (name, value)])
    assert info.value.code == "invalid_header"
    assert info.value.status == 400


def test_non_token_name_that_lowercases_to_an_allowed_name_refused() -> None:
    # U+212A KELVIN SIGN lowercases to "k".
    with pytest.raises(InvalidHeader):
        filter_request_headers([("Idempotency-\u212aey", "k")])


def test_response_drops_set_cookie_hop_by_hop_and_unknown() -> None:
    headers = [
        ("Content-Type", "application/json"),
        ("Set-Cookie", "sid=1"),
        ("Connection", "keep-alive, X-Upstream-Secret"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("Trailer", "Expires"),
        ("Proxy-Authenticate", "Basic"),
        ("WWW-Authenticate", 'Bearer error="invalid_token"'),
        ("X-Upstream-Secret", "s"),
        ("Server", "nginx/1.2"),
        ("ETag", '"v1"'),
        ("X-RateLimit-Remaining", "42"),
        ("RateLimit-Policy", "10;w=1"),
        ("Retry-After", "3"),
    ]
    kept = filter_response_headers(headers)
    assert kept == [
        ("Content-Type", "application/json"),
        ("ETag", '"v1"'),
        ("X-RateLimit-Remaining", "42"),
        ("RateLimit-Policy", "10;w=1"),
        ("Retry-After", "3"),
    ]


def test_response_connection_named_allowed_header_dropped() -> None:
    headers = [("Connection", "ETag"), ("ETag", '"v1"'), ("Vary", "Accept")]
    assert filter_response_headers(headers) == [("Vary", "Accept")]


def test_response_set_cookie_only_if_template_allows() -> None:
    headers = [("Set-Cookie", "a=b"), ("X-Provider-Extra", "1")]
    assert filter_response_headers(headers, frozenset({"set-cookie", "x-provider-extra"})) == [
        ("Set-Cookie", "a=b"),
        ("X-Provider-Extra", "1"),
    ]


def test_response_never_returns_hop_by_hop_or_www_authenticate_even_if_allowed() -> None:
    extra = frozenset({"transfer-encoding", "www-authenticate", "connection", "proxy-authenticate"})
    headers = [
        ("Transfer-Encoding", "chunked"),
        ("WWW-Authenticate", "Bearer"),
        ("Connection", "close"),
        ("Proxy-Authenticate", "Basic"),
    ]
    assert filter_response_headers(headers, extra) == []


def test_response_value_with_crlf_dropped_not_raised() -> None:
    headers = [("Location", "https://x\r\nSet-Cookie: a=b"), ("ETag", "a\x00"), ("Vary", "*")]
    assert filter_response_headers(headers) == [("Vary", "*")]


def test_response_non_token_name_dropped() -> None:
    # U+212A KELVIN SIGN lowercases to "k": "Lin\u212a" would pass as "link".
    assert filter_response_headers([("Lin\u212a", "<x>"), ("Link", "<y>")]) == [("Link", "<y>")]


def test_response_allowed_covers_the_documented_names() -> None:
    for name in ("content-type", "etag", "location", "link", "retry-after", "date", "ratelimit"):
        assert name in RESPONSE_ALLOWED
    assert _names(filter_response_headers([("www-authenticate", "x")])) == set()
