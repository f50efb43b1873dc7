"""Scopes, operations, statuses and times in plain words for the pages."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from tokenbroker.providers.model import ProviderSpec

_SCOPES = {
    "openid": "Confirm who you are",
    "email": "See your email address",
    "profile": "See your name and profile",
    "offline_access": "Keep access while you are away",
    "files:read": "Read your files",
    "files:write": "Create and change your files",
    "https://www.googleapis.com/auth/gmail.readonly": "Read your Gmail messages",
    "https://www.googleapis.com/auth/gmail.send": "Send email as you",
    "https://www.googleapis.com/auth/calendar": "See and change your calendars",
    "https://www.googleapis.com/auth/calendar.readonly": "See your calendars",
    "https://www.googleapis.com/auth/drive.readonly": "See your Google Drive files",
    "Mail.Read": "Read your mail",
    "Mail.Send": "Send mail as you",
    "Calendars.Read": "Read your calendars",
    "User.Read": "Read your profile",
    "repo": "Read and write your repositories",
    "read:user": "Read your profile",
    "user:email": "See your email addresses",
    "channels:read": "See your channels",
    "chat:write": "Send messages as you",
    "api": "Use the API as you",
    "refresh_token": "Keep access while you are away",
}

_STATUS = {
    "active": "Active",
    "degraded": "Active (the provider had trouble recently)",
    "needs_reauth": "Needs reconnect",
    "revoking": "Disconnecting",
}


def scope(value: str) -> str:
    """A known scope in words; an unknown one as it is (the provider's own name)."""
    return _SCOPES.get(value, value)


def scopes(values: Iterable[str]) -> list[tuple[str, str]]:
    return [(scope(v), v) for v in values]


def status(value: str) -> str:
    return _STATUS.get(value, value)


def needs_reconnect(value: str) -> bool:
    return value == "needs_reauth"


def operations(spec: ProviderSpec | None, names: Iterable[str] | None) -> list[tuple[str, str]]:
    """(name, what it does) of each operation; None means every operation the scopes allow."""
    if names is None:
        return [("any", "Any operation the scopes allow")]
    known = {op.name: op for op in spec.operations} if spec else {}
    out = []
    for name in names:
        op = known.get(name)
        if name == "raw":
            out.append((name, "Any request, even undeclared ones"))
        elif op is not None:
            out.append((name, f"{op.method} {op.path}"))
        else:
            out.append((name, name))
    return out


def when(value: datetime | None, never: str = "never") -> str:
    if value is None:
        return never
    return value.strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: int | None) -> str:
    if seconds is None:
        return "until you revoke it"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"for {count} {unit}{'' if count == 1 else 's'}"
    return f"for {seconds} seconds"
