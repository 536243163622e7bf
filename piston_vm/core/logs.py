"""Log records as text lines or JSON objects, each with the request id (docs/operations.md, "Logs").

The request id travels in a context variable: the error middleware sets it for the task that
handles the request, so every record logged while handling it carries the id without each call
passing it. Records outside a request carry "-".
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: ContextVar[str] = ContextVar("piston_vm_request_id", default="-")
ACCESS_LOGGER = "piston_vm.access"
# The record attribute holding an access record's fields (web/observe.py).
ACCESS_FIELDS = "access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# The keys of every JSON record, renamed for readers that expect these names; the access log's
# own fields follow (docs/operations.md, "Logs").
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s"
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


def _iso_time(record: logging.LogRecord) -> str:
    # UTC with milliseconds and a Z: sortable, and the same in every time zone.
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RequestIdFilter(logging.Filter):
    """Gives every record a `request_id`: its own when the caller set one, else the context's."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _iso_time(record)


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record (python-json-logger); `extra=` fields become keys, and so do
    those of an access record's `access` dict (one attribute is cheaper to attach than ten, and
    the text format never reads them)."""

    def __init__(self) -> None:
        super().__init__(JSON_FIELDS, rename_fields=dict(JSON_RENAMES),
                         reserved_attrs=(*RESERVED_ATTRS, ACCESS_FIELDS))

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        fields = getattr(record, ACCESS_FIELDS, None)
        if isinstance(fields, dict):
            log_data.update(fields)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _iso_time(record)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonLineFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {log_format!r}")


def handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler in `log_format` whose records all carry a request id."""
    made = logging.StreamHandler(sys.stderr if stream is None else stream)
    made.setFormatter(formatter(log_format))
    made.addFilter(RequestIdFilter())
    return made


def configure(log_format: str, level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Route every record of the process (ours, aiohttp's, aiocouch's) through one handler."""
    # Neither format shows a record's thread, process or source line, and finding them is most
    # of what a record costs (the stack walk above all): the logging HOWTO's "Optimization".
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler(log_format, stream))
    root.setLevel(level)

