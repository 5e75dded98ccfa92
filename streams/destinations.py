"""Per-platform ingest URLs and the validation of what ends up in a relay's command line."""

import re
from typing import Any

from django.conf import settings

from rig.ssrf import url_error
from streams.models import Destination, Service

# Destination keys end up in a URL and an ffmpeg argument: no separators, spaces or controls.
DESTINATION_KEY_RE = re.compile(r"[^\s/?#\x00-\x1f\x7f]{1,256}")


def ingest_base(service: str, server_url: str = "") -> str:
    if service == Service.CUSTOM:
        return server_url.rstrip("/")
    return str(settings.RIG_SERVICE_INGEST[service]).rstrip("/")


def rtmp_url(service: str, stream_key: str, server_url: str = "") -> str:
    return f"{ingest_base(service, server_url)}/{stream_key}"


def destination_fields(destination: Destination) -> dict[str, Any]:
    """What the user's view of a destination and the agent's Stream Config item share."""
    return {
        "id": destination.pk,
        "service": destination.service,
        "streamKey": destination.stream_key,
        "rtmpUrl": rtmp_url(destination.service, destination.stream_key, destination.server_url),
        "isActive": destination.is_active,
        "isMuted": destination.is_muted,
    }


def key_error(stream_key: str) -> str | None:
    if not DESTINATION_KEY_RE.fullmatch(stream_key):  # match() and $ let a final newline in
        return "Must be 1-256 characters without whitespace, '/', '?', '#' or control characters."
    return None


def server_url_error(server_url: str) -> str | None:
    """Why a Custom server URL is refused, or None when it is acceptable (the query string would
    end up between the server and the key in the relay's URL: refused)."""
    return url_error(
        server_url, default_ports={"rtmp": 1935, "rtmps": 443}, max_length=512, allow_query=False
    )
