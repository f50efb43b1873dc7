"""Template variables are checked against their pattern before substitution."""

from __future__ import annotations

import pytest

from tokenbroker.errors import ConfigError
from tokenbroker.providers.variables import (
    Variable,
    check_value,
    resolve_variables,
    substitute,
)

HOST = Variable("host", "a host", r"(?:[a-z0-9-]+\.)+[a-z]{2,}", default="example.com")


@pytest.mark.parametrize("value", ["example.com", "a.b-c.example.org"])
def test_pattern_match_accepted(value: str) -> None:
    assert check_value(HOST, value, provider="p") == value


@pytest.mark.parametrize(
    "value", ["evil.com/x", "a@b.com", "a.com:80", "a..com", "a.com?x", "a\nb.com", "é.com", "", 3]
)
def test_unsafe_or_mismatching_values_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="provider 'p': template variable 'host'"):
        check_value(HOST, value, provider="p")


def test_pattern_can_explicitly_allow_a_slash() -> None:
    path = Variable("path", "", r"[a-z]+/[a-z]+")
    assert check_value(path, "a/b", provider="p") == "a/b"
    # Group syntax such as (?: does not count as allowing ':' or '?'.
    grouped = Variable("g", "", r"(?:[a-z:]+)")
    assert check_value(grouped, "a:b", provider="p") == "a:b"
    with pytest.raises(ConfigError, match="must not contain ':'"):
        check_value(Variable("g", "", r"(?:.+)"), "a:b", provider="p")


def test_resolve_uses_defaults_and_refuses_unknown_names() -> None:
    assert resolve_variables({"host": HOST}, {}, provider="p") == {"host": "example.com"}
    assert resolve_variables({"host": HOST}, {"host": "x.org"}, provider="p") == {"host": "x.org"}
    with pytest.raises(ConfigError, match="unknown template variable 'hots'"):
        resolve_variables({"host": HOST}, {"hots": "x.org"}, provider="p")


def test_substitute_keeps_connect_vars_and_names_missing_ones() -> None:
    values = {"host": "x.org"}
    assert substitute("https://{host}/a", values, provider="p", field="f") == "https://x.org/a"
    kept = substitute(
        "{instance_url}/a", values, provider="p", field="f", keep=frozenset({"instance_url"})
    )
    assert kept == "{instance_url}/a"
    with pytest.raises(ConfigError, match="provider 'p': f needs template variable 'tenant'"):
        substitute("https://{tenant}/", values, provider="p", field="f")
