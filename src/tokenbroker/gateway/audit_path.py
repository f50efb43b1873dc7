"""The path a proxied request is recorded with.

Query values are always recorded as ``…`` (names kept). A provider can also name path
segments that identify a person (``audit_redact_paths``, in its template or configuration):
patterns in the operations' syntax whose ``{name}`` segments are recorded as ``…``, e.g.
``/gmail/v1/users/{user}/{rest*}`` records ``/gmail/v1/users/alice@example.com/messages/1``
as ``/gmail/v1/users/…/messages/1``. The first pattern that matches applies.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenbroker.gateway.target import redacted_query
from tokenbroker.policy.operations import compile_pattern

REDACTED = "…"


class AuditPaths:
    """One provider's redaction patterns."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._patterns = tuple(compile_pattern(p, capture_segments=True) for p in patterns)

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
