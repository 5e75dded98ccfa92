"""Request guards that must run before any view or parser."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

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
