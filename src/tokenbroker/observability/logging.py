"""Log lines for machines: one JSON object a line on stdout, every line redacted.

Fields: ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``message``,
``request_id`` (when :data:`request_id_var` is set in the current context), any fields given
with ``extra={...}``, and ``error`` (``type``, ``message``, ``stack``) for exceptions. The
:class:`~tokenbroker.observability.redaction.RedactionFilter` runs on the handler, before
formatting, so no formatter ever sees an unmasked message.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO

from tokenbroker.observability.redaction import (
    STANDARD_ATTRS,
    RedactionFilter,
    redact,
    redact_value,
)

LogFormat = Literal["json", "text"]
FORMATS: Final = ("json", "text")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"

request_id_var: ContextVar[str | None] = ContextVar("tokenbroker_request_id", default=None)
"""The request being served; set it once per request (each aiohttp request is its own task)."""

_HANDLER_MARK: Final = "_tokenbroker_handler"
_QUIET: Final = ("aiohttp.access",)  # request lines carry query strings (OAuth codes): off


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (masked again here: safe without the filter)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            doc["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in STANDARD_ATTRS and key not in doc:
                doc[key] = redact_value(value)
        if record.exc_info and record.exc_info[1] is not None:
            doc["error"] = _error(record.exc_info[1])
        elif record.stack_info:
            doc["stack"] = redact(record.stack_info)
        return json.dumps(doc, default=_fallback, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """The classic one-line text format, with the request id and a redacted traceback."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = request_id_var.get()
        if request_id is not None:
            line = f"{line} [request_id={request_id}]"
        return redact(line)


class _StdHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stdout`` (or ``sys.stderr``) is when the record comes."""

    def __init__(self, name: Literal["stdout", "stderr"]) -> None:
        super().__init__(getattr(sys, name))
        self._name = name

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = getattr(sys, self._name)  # under the handler's lock (Handler.handle)
        super().emit(record)


def configure_logging(
    level: str = "INFO",
    fmt: LogFormat = "json",
    *,
    to: Literal["stdout", "stderr"] | TextIO = "stdout",
    force: bool = True,
) -> logging.Handler | None:
    """Send every log record to ``to`` (stdout) through redaction and the chosen format.

    A handler installed by an earlier call is replaced, others are left alone. With
    ``force=False``, like :func:`logging.basicConfig`, nothing changes when the root logger
    already has handlers of someone else (an embedding application, a test runner).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]
    if not force and len(ours) < len(root.handlers):
        return None
    handler = _StdHandler(to) if isinstance(to, str) else logging.StreamHandler(to)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactionFilter())
    setattr(handler, _HANDLER_MARK, True)
    for old in ours:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def _rfc3339(created: float) -> str:
    at = datetime.fromtimestamp(created, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _error(exc: BaseException) -> dict[str, str]:
    """Type, message and the plain traceback (file, line, code: never local variables)."""
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "type": type(exc).__qualname__,
        "message": redact(str(exc)),
        "stack": redact(stack),
    }


def _fallback(value: object) -> str:
    return redact(str(value))
