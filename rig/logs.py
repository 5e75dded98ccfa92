"""Structured logs: a request id on every record, one access line per request, JSON on demand.

The request id comes from a sane `X-Request-ID` header or is made here, lives in a contextvar
for the request (or the Celery task, whose id it is), and goes back in the response header.
Secrets never reach a log line: the access line has no query string or body, and node tokens
and stream keys in paths are masked (also in any other record, as a second line of defence).
"""

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

request_id_var: ContextVar[str] = ContextVar("rig_request_id", default="-")

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Node tokens ride in hook paths (nginx cannot send headers); stream keys in the config path.
_SECRET_PATHS = (
    (re.compile(r"/agents/hooks/[^/\s]+/"), "/agents/hooks/***/"),
    (re.compile(r"/agents/config/[^/\s?]+"), "/agents/config/***"),
    (re.compile(r"rign_[A-Za-z0-9_-]+"), "rign_***"),
)
# Attributes every LogRecord has; anything else was passed with `extra=` and goes into JSON.
_RECORD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}

_PLAIN = (str, int, float, bool, type(None))

access_logger = logging.getLogger("rig.access")


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATHS:
        text = pattern.sub(replacement, text)
    return text


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record and masks secrets in its message (use on handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id_var.get()),
        }
        for key, value in vars(record).items():
            # plain extras only: django.request attaches the request, whose repr has the query
            if key not in _RECORD_ATTRS and isinstance(value, _PLAIN):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _client_id(request: HttpRequest) -> str | None:
    """Who made the request, if DRF authenticated someone: `user:<id>` or `node:<id>`."""
    user = vars(request).get("user")
    # Django's own lazy session user is never evaluated here: that could cost a query.
    if user is None or isinstance(user, SimpleLazyObject) or not user.is_authenticated:
        return None
    kind = "node" if user.__class__.__name__ == "IngestNode" else "user"
    return f"{kind}:{user.pk}"


class RequestLogMiddleware:
    """Request id in, request id out, and one access line per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _SANE_REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        try:
            response = self.get_response(request)
            status = response.status_code
            response["X-Request-ID"] = request_id
            return response
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            client = _client_id(request)
            # Never the query string or the body; control characters escaped, so a path with
            # %0a cannot forge a second line in a plain-text log.
            path = redact(request.path).encode("unicode_escape").decode("ascii")
            access_logger.info(
                "%s %s %s %.2fms%s",
                request.method,
                path,
                status,
                duration_ms,
                f" {client}" if client else "",
                extra={
                    "method": request.method,
                    "path": path,
                    "status": status,
                    "duration_ms": duration_ms,
                    "client": client,
                },
            )
            request_id_var.reset(token)


def logging_config(*, level: str, fmt: str) -> dict[str, Any]:
    """Django's LOGGING: one console handler, plain text (dev) or JSON lines (RIG_LOG_FORMAT)."""
    if fmt not in {"plain", "json"}:
        raise ValueError(f"RIG_LOG_FORMAT must be plain or json, got {fmt!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "rig.logs.RequestIdFilter"}},
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
            "json": {"()": "rig.logs.JsonFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": fmt,
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.request": {"level": "ERROR"}},
    }
