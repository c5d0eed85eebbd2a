"""Process logging for the long-running commands: readable text, or one JSON object per line.

JSON lines are what log shippers (journald, Loki, CloudWatch) parse without rules. Structured fields go
in ``extra={"data": {...}}`` and become top-level keys.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from crossdock.redact import NO_SECRETS, RedactingLogFilter

LogFormat = Literal["text", "json"]
_RESERVED = {"at", "level", "logger", "message"}


class JsonFormatter(logging.Formatter):
    """``{"at": ISO-8601 UTC, "level", "logger", "message", ...data}``, plus ``error`` with a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            line.update({k: v for k, v in data.items() if k not in _RESERVED})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


#: masks secrets in every line the process logs: URL passwords and credentials always, the project's secrets
#: once :func:`redact_logs_with` hands over its redactor (a driver may quote a connection string in a warning)
_REDACTION = RedactingLogFilter(NO_SECRETS)


def redact_logs_with(redact: Callable[[str], str]) -> None:
    """From now on, log lines also lose this redactor's secrets (the project's, with the ``--db`` password)."""
    _REDACTION.redact = redact


def configure_logging(fmt: LogFormat = "text", level: int = logging.INFO) -> None:
    """Send crossdock's logs to stderr in ``fmt``; replaces handlers set up before (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_REDACTION)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("crossdock").setLevel(level)
    # the pool warns once per failed connection attempt; during an outage crossdock.store says it once instead
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
