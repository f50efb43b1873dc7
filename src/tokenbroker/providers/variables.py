"""Template variables: ``{tenant}``, ``{domain}``... in template strings, set by the operator.

A value is checked against the variable's pattern (``re.fullmatch``) *before* it is substituted,
so it can never change the shape of the URL it lands in. As a second line of defence, characters
that move a URL's authority or path (``/``, ``@``, ``:``, ``..``, ``?``, ``#``, ``%``,
whitespace) are refused unless the pattern itself spells them out as literals; control and
non-ASCII characters, backslashes and braces are always refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tokenbroker.errors import ConfigError
from tokenbroker.providers.reader import Reader, check_keys

PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_VALUE_LENGTH: Final = 253
_UNSAFE_TOKENS: Final = ("..", "/", "@", ":", "?", "#", "%")
_GROUP_SYNTAX: Final = re.compile(r"\(\?(?:[:=!]|<[=!]|P<)")
_VARIABLE_KEYS: Final = ("description", "pattern", "default")


@dataclass(frozen=True)
class Variable:
    """An operator-set template variable; ``pattern`` must match the whole value."""

    name: str
    description: str
    pattern: str
    default: str | None = None


def _allowed_by_pattern(token: str, pattern: str) -> bool:
    """True if ``pattern`` spells ``token`` out as a literal (regex group syntax ignored)."""
    if token == "?":
        return "\\?" in pattern
    return token in _GROUP_SYNTAX.sub("(", pattern).replace("\\", "")


def check_value(var: Variable, value: object, *, provider: str) -> str:
    """Return ``value`` if it is a safe, pattern-matching value for ``var``."""
    what = f"provider {provider!r}: template variable {var.name!r}"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty string")
    if len(value) > MAX_VALUE_LENGTH:
        raise ConfigError(f"{what} is longer than {MAX_VALUE_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) >= 0x7F for c in value):
        raise ConfigError(f"{what} contains a control or non-ASCII character")
    if any(c.isspace() for c in value) and not ("\\s" in var.pattern or " " in var.pattern):
        raise ConfigError(f"{what} must not contain whitespace")
    if any(c in value for c in "\\{}"):
        raise ConfigError(f"{what} must not contain a backslash or a brace")
    for token in _UNSAFE_TOKENS:
        if token in value and not _allowed_by_pattern(token, var.pattern):
            raise ConfigError(f"{what} must not contain {token!r}")
    if re.fullmatch(var.pattern, value) is None:
        raise ConfigError(f"{what} does not match the pattern {var.pattern!r}")
    return value


def parse_variables(reader: Reader | None) -> dict[str, Variable]:
    """The ``[variables.NAME]`` tables of a template; a default must match its own pattern."""
    if reader is None:
        return {}
    out: dict[str, Variable] = {}
    for name in reader.table:
        if not isinstance(name, str) or PLACEHOLDER.fullmatch("{" + name + "}") is None:
            raise ConfigError(f"{reader.where}: invalid variable name {str(name)[:40]!r}")
        table = reader.table_(name)
        assert table is not None
        check_keys(table.table, _VARIABLE_KEYS, table.where)
        pattern = table.required_str("pattern")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{table.where}: pattern does not compile: {exc}") from None
        var = Variable(
            name=name,
            description=table.str_("description") or "",
            pattern=pattern,
            default=table.str_("default"),
        )
        if var.default is not None:
            check_value(var, var.default, provider=reader.where)
        out[name] = var
    return out


def resolve_variables(
    variables: Mapping[str, Variable], given: Mapping[str, object], *, provider: str
) -> dict[str, str]:
    """Values for every variable that has one (given or default), each checked."""
    for key in given:
        if key not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise ConfigError(
                f"provider {provider!r}: unknown template variable {str(key)[:40]!r} in vars;"
                f" this template has: {known}"
            )
    out: dict[str, str] = {}
    for name, var in variables.items():
        if name in given:
            out[name] = check_value(var, given[name], provider=provider)
        elif var.default is not None:
            out[name] = var.default
    return out


def substitute(
    text: str,
    values: Mapping[str, str],
    *,
    provider: str,
    field: str,
    keep: frozenset[str] = frozenset(),
) -> str:
    """Replace each ``{name}`` in ``text``; names in ``keep`` (connect-time vars) stay as is."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in keep:
            return match.group(0)
        if name not in values:
            raise ConfigError(
                f"provider {provider!r}: {field} needs template variable {name!r};"
                f" set it under [providers.{provider}.vars]"
            )
        return values[name]

    return PLACEHOLDER.sub(replace, text)
