"""Logging: text or one-JSON-object-per-line output, with request/cycle context (search_id, cycle_id).

Context travels in a ContextVar, so every log line written while a search is served or a cycle runs carries
its id without passing it around: `with log_context(cycle_id=...)` in the cycle's thread, or
`log.info("...", extra={"search_id": ...})` for a single line.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_context: ContextVar[dict[str, Any] | None] = ContextVar("flywheel_log_context", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is worth printing.
# (uvicorn's `color_message` is the same message with terminal colours: noise in a log file.)
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}
_STANDARD.add("color_message")


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields (e.g. cycle_id) to every log record written inside the block, in this thread/task."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    """The fields `log_context` set for the running thread/task."""
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Copy the context fields onto each record (explicit `extra=` values win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The non-standard attributes of a record: context and `extra=` fields."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, context fields, and exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, with context fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = extra_fields(record)
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        return head + " " + " ".join(f"{k}={v}" for k, v in fields.items()) + sep + tail


def setup_logging(level: str = "info", fmt: str = "text") -> logging.Handler:
    """Send every logger (flywheel's and uvicorn's) to stderr in the chosen format.

    Args:
        level: "debug", "info", "warning" or "error".
        fmt: "text" or "json".

    Returns:
        The installed root handler.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    return handler


def uvicorn_log_config() -> dict[str, Any]:
    """A uvicorn log_config that leaves formatting to the root handler (so access logs are JSON too)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.access")},
    }


__all__ = ["JsonFormatter", "TextFormatter", "current_context", "log_context", "setup_logging", "uvicorn_log_config"]
