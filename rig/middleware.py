"""Request guards that must run before any view or parser."""

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from agents.node.protocol import REPORT_MAX_BYTES
from rig.api import ApiError, ErrorCode
from rig.errors import json_error


class BodySizeLimitMiddleware:
    """Refuse oversized bodies up front: DRF's parsers read the stream without Django's cap.
    A node's status report (node token) may be larger: the node protocol's REPORT_MAX_BYTES."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            length = -1
        limit = (
            REPORT_MAX_BYTES if request.path == "/agents/status" else settings.RIG_MAX_BODY_BYTES
        )
        if length < 0 or length > limit:
            return json_error(
                ApiError(
                    ErrorCode.INVALID_INPUT,
                    "Request body too large",
                    413,
                    {"body": [f"At most {limit} bytes."]},
                )
            )
        return self.get_response(request)


# Routes only machines call: ingest nodes and their nginx-rtmp hooks, probes, Prometheus.
MACHINE_PATHS = ("/agents/", "/healthz", "/readyz", "/metrics")


class _BrowserOnly(MiddlewareMixin):
    """A browser's middleware (session, signed-in user, messages), passed by on the machine
    routes, which authenticate with a token and never carry a browser's cookies. (CSRF's stays
    on everywhere: Django's deploy check looks for it by name, and DRF's views are exempt.)"""

    def __call__(self, request: HttpRequest) -> Any:
        if request.path_info.startswith(MACHINE_PATHS):
            return self.get_response(request)
        return super().__call__(request)


class BrowserSessionMiddleware(_BrowserOnly, SessionMiddleware):
    pass


class BrowserAuthenticationMiddleware(_BrowserOnly, AuthenticationMiddleware):
    pass


class BrowserMessageMiddleware(_BrowserOnly, MessageMiddleware):
    pass
