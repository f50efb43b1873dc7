"""Proxy path checks: traversal, authority override and splitting (SECURITY.md D4, D6)."""

from __future__ import annotations

import random
from urllib.parse import unquote

import pytest
from yarl import URL

from tokenbroker.errors import InvalidPath
from tokenbroker.gateway.paths import MAX_PATH_LENGTH, normalize_path, split_query

HOSTILE_PATHS = [
    # dot segments, raw and encoded, any case, double/triple encoding
    "/..",
    "/../etc/passwd",
    "/a/../b",
    "/a/..",
    "/./a",
    "/a/./b",
    "/a/.",
    "/%2e%2e/a",
    "/%2E%2E/a",
    "/%2e./a",
    "/.%2e/a",
    "/%2E./a",
    "/a/%2e",
    "/%252e%252e/a",
    "/%252E%252E/a",
    "/%25252e%25252e/a",
    "/..;/admin",
    "/a/..;jsessionid=1/b",
    "/.;/a",
    "/...",
    "/a/%2e%2e%3b/b",
    # encoded slash next to a dot or empty part
    "/a/..%2fb",
    "/a/%2e%2e%2fb",
    "/a/x%2F..%2Fy",
    "/a/x%252F..%252Fy",
    "/a/%2F%2Fevil.example",
    "/a/b%2F",
    # empty segments / authority override
    "//evil.example/x",
    "///x",
    "/a//b",
    "/a/b//",
    # scheme or absolute URL, userinfo
    "/http://evil",
    "/http:evil",
    "/https:%2F%2Fevil",
    "/javascript:alert(1)",
    "/@evil",
    "/user@evil/x",
    "/%40evil",
    "/http%3a%2f%2fevil",
    # backslashes
    "/\\evil",
    "/a\\..\\b",
    "/a/%5c..%5cb",
    "/a/%5C",
    "/a/%255c",
    # control characters, raw or encoded
    "/a%0d%0aHost:%20evil",
    "/a%0D%0A",
    "/a\r\nHost: evil",
    "/a%00",
    "/a\x00",
    "/a%09b",
    "/a\tb",
    "/a%7f",
    "/a%C2%85b",
    "/a%E2%80%A8b",
    "/a%250d%250a",
    # fragment, query, raw space and other characters outside pchar
    "/a#frag",
    "/a?x=1",
    "/a b",
    "/a<b>",
    '/a"b',
    "/a|b",
    "/a{b}",
    "/a^b",
    "/a`b",
    "/a[0]",
    # non-ASCII raw, invalid and overlong UTF-8, Unicode folding to dots and slashes
    "/caf\u00e9",
    "/\u2025/a",
    "/a%FF",
    "/%C0%AE%C0%AE/a",
    "/%EF%BC%8E%EF%BC%8E/a",
    "/a/x%EF%BC%8F..%EF%BC%8Fy",
    "/a/%EF%BC%BCb",
    "/%EF%BC%9Aevil",
    # malformed escapes
    "/a%zz",
    "/a%2",
    "/a%",
    "/a%g0",
    # must start with "/"
    "a/b",
    "evil.example/x",
    # too long
    "/" + "a" * MAX_PATH_LENGTH,
    # too deeply encoded
    "/a%2525252541",
    # spaces only segment, segment starting with a parameter
    "/%20/a",
    "/;x/a",
]

GOOD_PATHS = [
    "",
    "/",
    "/gmail/v1/users/me/messages",
    "/api/v4/projects/group%2Fproject/issues",
    "/api/v4/projects/group%2fsub%2Fproject/repository/files/app%2Fmodels%2Fkey.rb/raw",
    "/v1/files/My%20Report.pdf",
    "/v1/users/me:batch",
    "/v1/projects/p/secrets/s:addVersion",
    "/users/alice@example.com/events",
    "/v1/items/",
    "/a/b.c/d..e/.hidden/..x",
    "/v1/search/a+b",
    "/cars;color=red/x",
    "/v1/caf%C3%A9",
    "/v1/%F0%9F%98%80",
    "/v1/100%25",
    "/v1/%23tag",
    "/v1/%3Fq",
    "/v1/a-b_c~d!$&'()*,=",
]


@pytest.mark.parametrize("raw", HOSTILE_PATHS)
def test_hostile_path_refused(raw: str) -> None:
    with pytest.raises(InvalidPath) as info:
        normalize_path(raw)
    assert info.value.code == "invalid_path"
    assert info.value.status == 400


def test_hostile_table_is_large() -> None:
    assert len(HOSTILE_PATHS) >= 40


@pytest.mark.parametrize("raw", GOOD_PATHS)
def test_good_path_kept_byte_for_byte(raw: str) -> None:
    assert normalize_path(raw) == raw


def test_error_message_does_not_echo_the_path() -> None:
    with pytest.raises(InvalidPath) as info:
        normalize_path("/a%0d%0aSecret:%20canary-1234")
    assert "canary" not in str(info.value)


def test_longest_allowed_path_accepted() -> None:
    raw = "/" + "a" * (MAX_PATH_LENGTH - 1)
    assert normalize_path(raw) == raw


def test_colon_and_at_allowed_after_first_segment_only() -> None:
    assert normalize_path("/v1/a:b@c") == "/v1/a:b@c"
    with pytest.raises(InvalidPath):
        normalize_path("/a:b/v1")
    with pytest.raises(InvalidPath):
        normalize_path("/a@b/v1")


def test_literal_percent_double_encoded_is_kept() -> None:
    assert normalize_path("/v1/%2541") == "/v1/%2541"


def test_split_query() -> None:
    assert split_query("/a/b?x=1&y=%0d%0a") == ("/a/b", "x=1&y=%0d%0a")
    assert split_query("/a/b") == ("/a/b", "")
    assert split_query("/a?b?c=/d") == ("/a", "b?c=/d")
    assert split_query("/a?") == ("/a", "")


@pytest.mark.parametrize(
    "target",
    ["/a?x=1\r\nHost: evil", "/a?x=%zz", "/a?x=1#frag", "/a?x=caf\u00e9", "/a?x=a b", "/a?x=\x00"],
)
def test_split_query_refuses_hostile_query(target: str) -> None:
    with pytest.raises(InvalidPath):
        split_query(target)


def test_split_query_refuses_overlong_query() -> None:
    with pytest.raises(InvalidPath):
        split_query("/a?" + "x" * 10_000)


_FUZZ_TOKENS = [
    "/",
    "//",
    "a",
    "b",
    ".",
    "..",
    "%2e",
    "%2E",
    "%252e",
    "%2f",
    "%2F",
    "%252F",
    "%5c",
    "\\",
    "@",
    ":",
    ";",
    "%00",
    "%0d",
    "%0a",
    "%25",
    "%",
    "#",
    "?",
    "http:",
    "%40",
    "%3A",
    "~",
    "%20",
]


def _deep_unquote(text: str) -> str:
    for _ in range(6):
        text = unquote(text)
    return text


def test_fuzzed_accepted_paths_stay_under_the_base() -> None:
    rng = random.Random(9110)
    accepted = 0
    for _ in range(5000):
        raw = "/" + "".join(rng.choice(_FUZZ_TOKENS) for _ in range(rng.randint(1, 8)))
        try:
            out = normalize_path(raw)
        except InvalidPath:
            continue
        accepted += 1
        assert out == raw
        url = URL("https://api.example.com/base" + out, encoded=True)
        assert url.host == "api.example.com"
        assert url.raw_path.startswith("/base/")
        assert not url.raw_fragment
        assert not url.raw_query_string
        parts = _deep_unquote(out).replace("\\", "/").split("/")[1:]
        if parts and parts[-1] == "":
            parts.pop()
        for part in parts:
            assert part.split(";")[0].strip(". ") != ""
            assert not any(ord(char) < 0x20 for char in part)
        assert ":" not in _deep_unquote(out.split("/")[1])
        assert "@" not in _deep_unquote(out.split("/")[1])
    assert accepted > 100
