"""return_to checks: no open redirector (RFC 9700 §4.11, SECURITY.md A5)."""

from __future__ import annotations

import pytest

from tokenbroker.errors import ConfigError, UnsafeRedirect
from tokenbroker.protocol.redirects import check_return_to, origin_of

PUBLIC = "https://broker.example.com/base"
ALLOWED = ["https://app.example.com", "http://localhost:3000"]

GOOD = [
    ("/", "https://broker.example.com/"),
    ("/connections", "https://broker.example.com/connections"),
    ("/connections?tab=a&b=c#top", "https://broker.example.com/connections?tab=a&b=c#top"),
    ("/a//b", "https://broker.example.com/a//b"),
    ("/path%20with%20space", "https://broker.example.com/path%20with%20space"),
    ("/caf%C3%A9", "https://broker.example.com/caf%C3%A9"),
    ("/x?next=//evil.com", "https://broker.example.com/x?next=//evil.com"),
    ("https://broker.example.com/done", "https://broker.example.com/done"),
    ("https://broker.example.com:443/done", "https://broker.example.com:443/done"),
    ("HTTPS://Broker.Example.com/done", "HTTPS://Broker.Example.com/done"),
    ("https://app.example.com/settings?x=1", "https://app.example.com/settings?x=1"),
    ("https://app.example.com", "https://app.example.com"),
    ("http://localhost:3000/cb", "http://localhost:3000/cb"),
]

HOSTILE = [
    "",
    "//evil.com",
    "//evil.com/path",
    "///evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "\\/evil.com",
    "/\t/evil.com",
    "/\n/evil.com",
    "/\r\n/evil.com",
    "/ /evil.com",
    " /foo",
    "/foo\x00",
    "/foo\x7f",
    "/foo bar",
    "/fo\\o",
    "https:evil.com",
    "https:/evil.com",
    "http:evil.com",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "javascript://broker.example.com/%0aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox",
    "file:///etc/passwd",
    "https://evil.com",
    "https://evil.com/",
    "https://broker.example.com.evil.com/",
    "https://broker.example.com@evil.com/",
    "https://user:pw@broker.example.com/",
    "https://evil.com\\@broker.example.com/",
    "https://evil.com#@broker.example.com/",
    "http://broker.example.com/",
    "https://broker.example.com:8443/",
    "https://app.example.com:444/",
    "http://localhost:3001/",
    "https://broker.example.com//evil.com",
    "/%2f%2fevil.com",
    "/%2F%2Fevil.com",
    "/%5cevil.com",
    "/%5Cevil.com",
    "/%252f%252fevil.com",
    "/%09/evil.com",
    "/%0d%0aSet-Cookie:x=y",
    "%2f%2fevil.com",
    "evil.com",
    "foo/bar",
    "?next=x",
    "#frag",
    ".",
    "https://bröker.example.com/",
    "/\u3002evil",
    "/" + "a" * 2048,
    "https://app.example.com/x?a=\nb",
    "https://broker.example.com/x#\t",
    "https://app.example.com/x?a=b c",
]


@pytest.mark.parametrize(("value", "expected"), GOOD)
def test_good_values(value: str, expected: str) -> None:
    assert check_return_to(value, allowed_origins=ALLOWED, public_url=PUBLIC) == expected


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_refused(value: str) -> None:
    with pytest.raises(UnsafeRedirect) as info:
        check_return_to(value, allowed_origins=ALLOWED, public_url=PUBLIC)
    assert info.value.code == "invalid_return_to"


def test_length_limit_boundary() -> None:
    value = "/" + "a" * 2047
    assert check_return_to(value, allowed_origins=[], public_url=PUBLIC).endswith("a")


def test_only_public_origin_without_allowlist() -> None:
    with pytest.raises(UnsafeRedirect):
        check_return_to("https://app.example.com/", allowed_origins=[], public_url=PUBLIC)


@pytest.mark.parametrize(
    "bad",
    ["not a url", "javascript:x", "//h", "ftp://h", "https://bad_host!/", "https://%65vil.com"],
)
def test_bad_configuration(bad: str) -> None:
    with pytest.raises(ConfigError):
        check_return_to("/", allowed_origins=[bad], public_url=PUBLIC)
    with pytest.raises(ConfigError):
        check_return_to("/", allowed_origins=[], public_url=bad)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://A.example.com:443/x", "https://a.example.com"),
        ("http://a.example.com:80", "http://a.example.com"),
        ("http://a.example.com:8080/", "http://a.example.com:8080"),
        ("https://[::1]:8443/", "https://[::1]:8443"),
        ("https://u@a.example.com/", None),
        ("mailto:x@y", None),
    ],
)
def test_origin_of(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin
