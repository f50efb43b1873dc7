"""Matching a request to a provider's declared operations.

A provider declares operations (name, method, path pattern, scopes, optional API base,
``explicit``). Path patterns use ``{name}`` for one segment and ``{name*}`` for the rest of the
path; they are matched against the normalised, still percent-encoded path, so an encoded ``/``
(``%2F``) inside a segment stays one segment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tokenbroker.providers.model import Operation

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\*?)\}")


def compile_pattern(path: str, *, capture_segments: bool = False) -> re.Pattern[str]:
    """``path`` as a regex; ``capture_segments``: each ``{name}`` segment is a group."""
    segment = "([^/]+)" if capture_segments else "[^/]+"
    out, pos = ["^"], 0
    for match in _PARAM.finditer(path):
        out.append(re.escape(path[pos : match.start()]))
        out.append(".+" if match.group(2) else segment)
        pos = match.end()
    out.append(re.escape(path[pos:]))
    out.append("/?$")
    return re.compile("".join(out))


@dataclass(frozen=True)
class _Compiled:
    operation: Operation
    pattern: re.Pattern[str]
    literal_chars: int  # more literal text = more specific


class OperationIndex:
    """Operations of one provider, grouped by (method, base) for a quick match."""

    def __init__(self, operations: Iterable[Operation]) -> None:
        self._by_key: dict[tuple[str, str | None], list[_Compiled]] = {}
        for op in operations:
            compiled = _Compiled(op, compile_pattern(op.path), len(_PARAM.sub("", op.path)))
            self._by_key.setdefault((op.method.upper(), op.base), []).append(compiled)
        for group in self._by_key.values():
            group.sort(key=lambda c: -c.literal_chars)

    def match(self, method: str, path: str, base: str | None) -> Operation | None:
        for compiled in self._by_key.get((method.upper(), base), ()):
            if compiled.pattern.match(path):
                return compiled.operation
        return None
