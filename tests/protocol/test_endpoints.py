"""Endpoint URL checks (RFC 8414 §2, SECURITY.md A6)."""

from __future__ import annotations

import pytest

from tokenbroker.errors import ConfigError
from tokenbroker.protocol.endpoints import check_endpoint_url, is_loopback_host

GOOD = [
    "https://as.example.com/token",
    "https://as.example.com:8443/oauth2/v1/token?api-version=2&x=(1)",
    "https://login.microsoftonline.com/common/oauth2/v2.0/token",
    "https://[2001:db8::1]/token",
    "https://192.0.2.10/token",
]

BAD = [
    ("http://as.example.com/token", "https"),
    ("javascript:alert(1)", "https"),
    ("file:///etc/passwd", "https"),
    ("ftp://as.example.com/token", "https"),
    ("https://as.example.com/token#frag", "fragment"),
    ("https://as.example.com/#", "fragment"),
    ("https://user:pw@as.example.com/token", "user information"),
    ("https://as.example.com@evil.com/token", "user information"),
    ("https://as.example.com/`id`", "forbidden character"),
    ("https://as.example.com/$(id)", "forbidden character"),
    ("https://as.example.com/a;rm -rf", "forbidden character"),
    ("https://as.example.com/a|sh", "forbidden character"),
    ("https://as.example.com/a\\b", "forbidden character"),
    ("https://as.example.com/a b", "forbidden character"),
    ("https://as.example.com/a\tb", "forbidden character"),
    ("https://as.example.com/a\nb", "forbidden character"),
    ("https://as.example.com/\x00", "forbidden character"),
    ("https://as.example.com/'x'", "forbidden character"),
    ("https://as.example.com/<script>", "forbidden character"),
    ("https://exämple.com/token", "forbidden character"),
    ("https:as.example.com/token", "absolute"),
    ("https:///token", "absolute"),
    ("//as.example.com/token", "https"),
    ("/token", "https"),
    ("https://as.example.com:99999/token", "not a valid URL"),
    ("https://as_example!.com/token", "invalid host"),
    ("https://" + "a" * 2050 + ".com/", "longer"),
    ("", "non-empty"),
]


@pytest.mark.parametrize("url", GOOD)
def test_good_urls(url: str) -> None:
    assert check_endpoint_url(url, allow_insecure_loopback=False, what="x") == url


@pytest.mark.parametrize(("url", "reason"), BAD)
def test_bad_urls(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        check_endpoint_url(url, allow_insecure_loopback=True, what="provider 'acme' token_endpoint")
    assert "provider 'acme' token_endpoint" in info.value.message


def test_message_does_not_echo_url() -> None:
    with pytest.raises(ConfigError) as info:
        check_endpoint_url("https://h/`touch pwned`", allow_insecure_loopback=False, what="w")
    assert "touch pwned" not in info.value.message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/token", "http://localhost/token", "http://[::1]:9000/t"]
)
def test_http_loopback_only_when_allowed(url: str) -> None:
    assert check_endpoint_url(url, allow_insecure_loopback=True, what="x") == url
    with pytest.raises(ConfigError, match="https"):
        check_endpoint_url(url, allow_insecure_loopback=False, what="x")


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/token", "http://localhost.evil.com/t", "http://example.com/t"]
)
def test_http_non_loopback_refused_even_in_dev(url: str) -> None:
    with pytest.raises(ConfigError, match="https"):
        check_endpoint_url(url, allow_insecure_loopback=True, what="x")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("128.0.0.1", False),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("localhost.evil.com", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, expected: bool) -> None:
    assert is_loopback_host(host) is expected
