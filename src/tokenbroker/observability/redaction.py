"""Masking what looks like a credential before a log line leaves the process.

Defence in depth: code should never log a secret in the first place. This catches the shapes
we know: our own tokens (``tbs.`` agent sessions, ``tba.`` agent keys, ``tbt.`` tickets),
``Bearer``/``Basic`` credentials, ``Authorization``/``Cookie`` header values and OAuth
parameters (``access_token=``, ``refresh_token=``, ``code=``, ``client_secret=``...) in query,
form, JSON or ``repr`` form.
"""

from __future__ import annotations

import logging
import re
from typing import Final

MASK: Final = "[REDACTED]"

_OUR_TOKENS = re.compile(r"(?<![A-Za-z0-9_])(tb[sat]\.)[A-Za-z0-9_.~+/=-]+")
_SCHEMES = re.compile(r"\b([Bb]earer|BEARER|Basic)(\s+)[A-Za-z0-9_.~+/=:-]+")
_HEADERS = re.compile(
    r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie)"
    r"([\"']?\s*[:=]\s*[\"']?)([^\"'\r\n]+)"
)
_PARAMS = re.compile(
    r"(?i)(?<![A-Za-z0-9_])(access_token|refresh_token|id_token|code|client_secret|"
    r"code_verifier|device_code|client_assertion|assertion|password|secret|token)"
    r"(=|[\"']\s*:\s*[\"'])([^&\s\"',;]+)"
)

# LogRecord attributes of its own; anything else on a record came from ``extra={...}``.
STANDARD_ATTRS: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def redact(text: str) -> str:
    """``text`` with every credential-shaped part replaced by ``[REDACTED]``."""
    text = _HEADERS.sub(rf"\1\2{MASK}", text)
    text = _SCHEMES.sub(rf"\1\2{MASK}", text)
    text = _PARAMS.sub(rf"\1\2{MASK}", text)
    return _OUR_TOKENS.sub(rf"\1{MASK}", text)


def redact_value(value: object) -> object:
    """Strings masked inside ``value`` (nested dicts, lists and tuples too); others as is."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


class RedactionFilter(logging.Filter):
    """Formats the message with its arguments, masks it, and drops the arguments.

    Installed on the handler (handler filters see records from every logger, logger filters
    only their own). Strings in ``extra`` fields are masked too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the template, lose the arguments
            message = f"{record.msg!s} (unformattable arguments)"
        record.msg = redact(message)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in STANDARD_ATTRS:
                setattr(record, key, redact_value(value))
        return True
