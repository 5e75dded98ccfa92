"""Per-platform ingest URLs and the validation of what ends up in a relay's command line."""

import re
import urllib.parse
from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from rig.ssrf import url_error
from streams.models import Destination, Service

# Destination keys end up in a URL and an ffmpeg argument: no separators, spaces or controls.
DESTINATION_KEY_RE = re.compile(r"[^\s/?#\x00-\x1f\x7f]{1,256}")
KEY_FORMAT = "1-256 characters without whitespace, '/', '?', '#' or control characters."
# Schemes a Custom server URL may use, with their default ports (SRT has none: give one).
CUSTOM_SCHEMES: dict[str, int | None] = {"rtmp": 1935, "rtmps": 443, "srt": None}


@cache
def _service_bases() -> dict[str, str]:
    """RIG_SERVICE_INGEST as ingest_base gives it, read once: the agents' poll asks for every
    destination's (a read of Django's lazy settings costs more than the rest of the URL)."""
    return {name: str(base).rstrip("/") for name, base in settings.RIG_SERVICE_INGEST.items()}


@receiver(setting_changed)
def _service_ingest_changed(*, setting: str, **_: Any) -> None:
    if setting == "RIG_SERVICE_INGEST":
        _service_bases.cache_clear()


def ingest_base(service: str, server_url: str = "") -> str:
    if service == Service.CUSTOM:
        return server_url.rstrip("/")
    return _service_bases()[service]


def rtmp_url(service: str, stream_key: str, server_url: str = "") -> str:
    """Where the relay pushes: the key is the last path segment of an RTMP URL, and an SRT
    server's ``streamid``."""
    base = ingest_base(service, server_url)
    if base.startswith("srt://"):
        return f"{base}?streamid={urllib.parse.quote(stream_key, safe='')}"
    return f"{base}/{stream_key}"


def service_list() -> list[dict[str, Any]]:
    """The supported services as clients need them: where each one's ingest is, and what key it
    takes (Custom: the user's server URL, in one of CUSTOM_SCHEMES)."""
    services = []
    for service in Service.values:
        base = None if service == Service.CUSTOM else ingest_base(service)
        schemes = list(CUSTOM_SCHEMES) if base is None else [urllib.parse.urlsplit(base).scheme]
        services.append(
            {
                "name": service,
                "ingestUrl": base,
                "scheme": schemes[0] if base else None,
                "schemes": schemes,
                "needsServerUrl": base is None,
                "keyFormat": KEY_FORMAT,
            }
        )
    return services


def destination_fields(destination: Destination) -> dict[str, Any]:
    """What the user's view of a destination and the agent's Stream Config item share."""
    return fields_of_columns(
        id=destination.pk,
        service=destination.service,
        stream_key=destination.stream_key,
        server_url=destination.server_url,
        is_active=destination.is_active,
        is_muted=destination.is_muted,
        transcode=destination.transcode,
    )


def fields_of_columns(
    id: int,
    service: str,
    stream_key: str,
    server_url: str,
    is_active: bool,
    is_muted: bool,
    transcode: Any,
) -> dict[str, Any]:
    """``destination_fields`` from a destination's column values, in this order (the agent API
    reads rows, not model instances: building thirty of those was a third of /agents/streams)."""
    return {
        "id": id,
        "service": service,
        "streamKey": stream_key,
        "rtmpUrl": rtmp_url(service, stream_key, server_url),
        "isActive": is_active,
        "isMuted": is_muted,
        "transcode": transcode,
    }


def key_error(stream_key: str) -> str | None:
    if not DESTINATION_KEY_RE.fullmatch(stream_key):  # match() and $ let a final newline in
        return f"Must be {KEY_FORMAT}"
    return None


def server_url_error(server_url: str) -> str | None:
    """Why a Custom server URL is refused, or None when it is acceptable (the query string would
    end up between the server and the key in the relay's URL: refused; an SRT server takes the
    key as its streamid, so it has no path)."""
    if server_url.startswith("srt://") and urllib.parse.urlsplit(server_url).path.strip("/"):
        return "An srt:// server URL has no path: give the host and port (the key is the streamid)."
    return url_error(server_url, default_ports=CUSTOM_SCHEMES, max_length=512, allow_query=False)
