"""The path a proxied request is recorded with.

Query values are always recorded as ``…`` (names kept). A provider can also name path
segments that identify a person (``audit_redact_paths``, in its template or configuration):
patterns in the operations' syntax whose ``{name}`` segments are recorded as ``…``, e.g.
``/gmail/v1/users/{user}/{rest*}`` records ``/gmail/v1/users/alice@example.com/messages/1``
as ``/gmail/v1/users/…/messages/1``. The first pattern that matches applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tokenbroker.gateway.target import redacted_query

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\*?)\}")
REDACTED = "…"


def redaction_pattern(path: str) -> re.Pattern[str]:
    """``path`` (operation syntax) as a regex whose groups are the segments to redact."""
    out, pos = ["^"], 0
    for match in _PARAM.finditer(path):
        out.append(re.escape(path[pos : match.start()]))
        out.append("(?:.+)" if match.group(2) else "([^/]+)")
        pos = match.end()
    out.append(re.escape(path[pos:]))
    out.append("/?$")
    return re.compile("".join(out))


class AuditPaths:
    """One provider's redaction patterns."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._patterns = tuple(redaction_pattern(p) for p in patterns)

    def recorded(self, path: str, query: str) -> str:
        for pattern in self._patterns:
            match = pattern.match(path)
            if match is None:
                continue
            parts, pos = [], 0
            for group in range(1, (pattern.groups or 0) + 1):
                start, end = match.span(group)
                parts.append(path[pos:start])
                parts.append(REDACTED)
                pos = end
            parts.append(path[pos:])
            path = "".join(parts)
            break
        return path + redacted_query(query)
