"""Streams, their destinations and their live status."""

import time
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any, cast

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from agents import selectors as nodes
from agents import services as node_services
from agents.node.protocol import DisplayState, RelayState
from dashboard.views.base import attempt, done, field_errors, form_values, page, user_of
from rig.api import ApiError, invalid_input, validate
from streams import recordings, selectors, services
from streams.apis import DestinationAddApi, StreamDetailApi
from streams.destinations import ingest_base
from streams.media_apis import picture_response, recording_response
from streams.models import Service, Stream
from streams.pulls import source_payload, stream_pull

# What a person sees of a relay: "pending" is a relay about to start; a finished one is offline.
SHOWN_STATE: dict[str, str] = {
    DisplayState.PENDING: "starting",
    RelayState.STARTING: "starting",
    RelayState.LIVE: "live",
    RelayState.RECONNECTING: "reconnecting",
    RelayState.FAILED: "failed",
    RelayState.STOPPED: "offline",
    # The node went quiet: its agent (and with it every relay) most likely died.
    DisplayState.UNKNOWN: "offline",
}

RECENT_SESSIONS = 10  # on the stream page; the API pages through all of them

# The dashboard's transcode choices (the API takes any profile within its limits): the usual
# platform ladders. Destinations with the same choice share one encoder on the node.
QUALITIES: dict[str, dict[str, int]] = {
    f"{height}p{fps}": {
        "height": height, "fps": fps, "videoBitrateKbps": video, "audioBitrateKbps": audio,
    }
    for height, fps, video, audio in (
        (1080, 60, 6000, 160), (1080, 30, 4500, 160), (720, 60, 4500, 128),
        (720, 30, 3000, 128), (480, 30, 1500, 128), (360, 30, 800, 96),
    )
}  # fmt: skip

# --- streams -------------------------------------------------------------------------------


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard:streams")


@require_http_methods(["GET", "POST"])
@page
def streams(request: HttpRequest) -> HttpResponse:
    user = user_of(request)
    if request.method == "POST":
        created: list[Stream] = []
        error = attempt(lambda: created.append(services.stream_create(user=user)))
        if error is None:
            messages.success(request, "Stream created. Point OBS at the settings below.")
            return redirect("dashboard:stream", stream_id=created[0].id)
        return done(request, error, "", "/app/")
    rows = selectors.stream_list(user=user).prefetch_related("destinations")
    return render(request, "dashboard/streams.html", {"streams": rows})


def _obs_server(stream: Stream) -> str:
    """Where OBS should connect: the serving node while live, else the recommended ingest."""
    session = stream.live_session
    if session is not None and session.node is not None:
        return session.node.rtmp_url
    return next(s["rtmpUrl"] for s in nodes.ingest_servers() if s["recommended"])


def _since(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _relays(stream: Stream) -> list[dict[str, Any]]:
    """Each destination as its card shows it: the relay API's item, its display state and the
    server it goes to (never its key)."""
    rows = []
    reporting = selectors.node_reporting(stream)
    relays = selectors.session_relays(stream)
    for destination in stream.destinations.all():
        relay = selectors.relay_item(destination, relays.get(destination.pk), reporting=reporting)
        live = stream.is_streaming and relay["isActive"]
        if not live:  # figures of a relay that is not running are history, not news
            relay.update(bitrateKbps=None, fps=None, since=None, lastError=None)
        rows.append(
            {
                **relay,
                "shown": SHOWN_STATE[relay["state"]] if live else "offline",
                "since": _since(relay["since"]),
                "server": ingest_base(destination.service, destination.server_url),
                "transcode": destination.transcode,
            }
        )
    return rows


def _source(stream: Stream) -> dict[str, Any] | None:
    """A pull-mode stream's source as its card shows it (None: the stream takes a push)."""
    if stream_pull(stream) is None:
        return None
    source = source_payload(stream)
    return {
        **source,
        "shown": SHOWN_STATE.get(source["state"], "offline"),
        "since": _since(source["since"]),
    }


def _live_context(stream: Stream) -> dict[str, Any]:
    session = stream.session
    return {
        "stream": stream,
        "source": _source(stream),
        "stream_state": "live" if stream.is_streaming else "offline",
        "reason": session.end_reason or None if session else None,
        "relays": _relays(stream),
        # A new address each refresh: the browser asks for the current picture again.
        "picture_at": int(time.time()) if stream.is_streaming else None,
        "sessions": [
            {**past, "started": _since(past["startedAt"])}
            for past in selectors.session_list(stream=stream, limit=RECENT_SESSIONS)
        ],
    }


@require_GET
@page
def stream(request: HttpRequest, stream_id: str) -> HttpResponse:
    return _stream_page(request, stream_id)


def _stream_page(
    request: HttpRequest,
    stream_id: str,
    *,
    form: dict[str, str] | None = None,
    error: ApiError | None = None,
) -> HttpResponse:
    detail = selectors.stream_get_detailed(user=user_of(request), stream_id=stream_id)
    context = {
        **_live_context(detail),
        "recordings": [
            {**row, "started": _since(row["startedAt"])}
            for row in recordings.recording_list(stream=detail)
        ],
        "server": _obs_server(detail),
        "services": Service.values,
        "qualities": list(QUALITIES),
        "form": form or {"service": Service.CUSTOM},
        "errors": field_errors(error),
    }
    return render(request, "dashboard/stream.html", context, status=error.status if error else 200)


@require_GET
@page
def stream_live(request: HttpRequest, stream_id: str) -> HttpResponse:
    """What the stream page polls every 2 s: its live parts, each swapped in by id."""
    detail = selectors.stream_get_detailed(user=user_of(request), stream_id=stream_id)
    return render(request, "dashboard/_live.html", {**_live_context(detail), "oob": True})


@require_GET
@page
def stream_picture(request: HttpRequest, stream_id: str) -> HttpResponse:
    """The live stream's current picture (the API's snapshot), for the page's preview."""
    stream = selectors.stream_get(user=user_of(request), stream_id=stream_id)
    try:
        jpeg = node_services.stream_snapshot(stream=stream)
    except ApiError:  # not live (yet), or no picture this time: the next refresh asks again
        return HttpResponse(status=204)
    return picture_response(jpeg)


def _stream_action(view: Callable[[HttpRequest, Stream], HttpResponse]) -> Callable[..., Any]:
    """A button on the stream page, on the user's own stream. Opening its address (a reload
    after a form error, a bookmark) leads back to the stream page."""

    @require_http_methods(["GET", "POST"])
    @page
    @wraps(view)
    def wrapped(request: HttpRequest, stream_id: str) -> HttpResponse:
        stream = selectors.stream_get(user=user_of(request), stream_id=stream_id)
        if request.method == "GET":
            return redirect(_back(stream))
        return view(request, stream)

    return wrapped


def _back(stream: Stream) -> str:
    return f"/app/streams/{stream.id}"


@_stream_action
def stream_rotate_key(request: HttpRequest, stream: Stream) -> HttpResponse:
    error = attempt(lambda: services.stream_key_rotate(stream=stream))
    return done(request, error, "New stream key: update it in OBS.", _back(stream))


@_stream_action
def stream_active(request: HttpRequest, stream: Stream) -> HttpResponse:
    active = request.POST.get("isActive") == "true"
    error = attempt(lambda: services.stream_update(stream=stream, is_active=active))
    return done(
        request, error, "Stream activated." if active else "Stream deactivated.", _back(stream)
    )


@_stream_action
def stream_source(request: HttpRequest, stream: Stream) -> HttpResponse:
    """Pull the stream from a URL (the API's validation and errors, next to the field)."""
    form = form_values(request, "pullUrl")

    def pull() -> None:
        data = validate(StreamDetailApi.UpdateSerializer, {"pullUrl": form.get("pullUrl", "")})
        services.stream_update(stream=stream, pull_url=data["pull_url"])

    error = attempt(pull)
    if error is not None:
        # The URL may hold a camera's password: it is never sent back into a page.
        return _stream_page(request, str(stream.id), error=error)
    messages.success(request, "Pulling the stream from its source: OBS is not needed.")
    return redirect(_back(stream))


@_stream_action
def stream_push(request: HttpRequest, stream: Stream) -> HttpResponse:
    error = attempt(lambda: services.stream_update(stream=stream, pull_url=None))
    return done(request, error, "Back to push: point OBS at the settings above.", _back(stream))


@_stream_action
def source_restart(request: HttpRequest, stream: Stream) -> HttpResponse:
    error = attempt(lambda: services.source_restart(stream=stream))
    return done(request, error, "Reconnecting to the source.", _back(stream))


@_stream_action
def stream_record(request: HttpRequest, stream: Stream) -> HttpResponse:
    record = request.POST.get("record") == "true"
    error = attempt(lambda: services.stream_update(stream=stream, record=record))
    message = "Recording every live session." if record else "Recording stopped."
    return done(request, error, message, _back(stream))


@require_GET
@page
def recording_download(request: HttpRequest, recording_id: str) -> HttpResponse:
    row = recordings.recording_get(user=user_of(request), recording_id=recording_id)
    # Streamed, not an HttpResponse; the page decorator only adds headers to it.
    return cast(HttpResponse, recording_response(row, request.headers.get("Range")))


@require_http_methods(["GET", "POST"])
@page
def recording_delete(request: HttpRequest, recording_id: str) -> HttpResponse:
    row = recordings.recording_get(user=user_of(request), recording_id=recording_id)
    back = f"/app/streams/{row.stream_id}"
    if request.method == "GET":
        return redirect(back)
    error = attempt(lambda: node_services.recording_delete(recording=row))
    return done(request, error, "Recording deleted.", back)


@_stream_action
def stream_delete(request: HttpRequest, stream: Stream) -> HttpResponse:
    error = attempt(lambda: services.stream_delete(stream=stream))
    return done(request, error, "Stream deleted.", "/app/")


@_stream_action
def destination_add(request: HttpRequest, stream: Stream) -> HttpResponse:
    form = form_values(request, "service", "streamKey", "serverUrl", "quality")

    def add() -> None:
        fields: dict[str, Any] = dict(form)
        quality = fields.pop("quality", None)
        if quality is not None and quality not in QUALITIES:
            raise invalid_input("quality", "Choose one of the listed qualities.")
        fields["transcode"] = QUALITIES.get(quality or "")
        data = validate(DestinationAddApi.InputSerializer, fields)
        services.destination_add(
            stream=stream,
            service=data["service"],
            stream_key=data["streamKey"],
            server_url=data.get("serverUrl", ""),
            transcode=data.get("transcode"),
        )

    error = attempt(add)
    if error is not None:
        form.pop("streamKey", None)  # a key is never sent back into a page
        return _stream_page(request, str(stream.id), form=form, error=error)
    messages.success(request, "Destination added.")
    return redirect(_back(stream))


def _destination_action(view: Callable[..., HttpResponse]) -> Callable[..., Any]:
    """A button on one destination's card, on the user's own destination (GET: its page)."""

    @require_http_methods(["GET", "POST"])
    @page
    @wraps(view)
    def wrapped(request: HttpRequest, stream_id: str, destination_id: str) -> HttpResponse:
        destination = selectors.destination_get(
            user=user_of(request), stream_id=stream_id, destination_id=destination_id
        )
        if request.method == "GET":
            return redirect(_back(destination.stream))
        return view(request, destination)

    return wrapped


@_destination_action
def destination_active(request: HttpRequest, destination: Any) -> HttpResponse:
    active = request.POST.get("isActive") == "true"
    error = attempt(lambda: services.destination_update(destination=destination, is_active=active))
    message = "Destination enabled." if active else "Destination disabled."
    return done(request, error, message, _back(destination.stream))


@_destination_action
def destination_mute(request: HttpRequest, destination: Any) -> HttpResponse:
    muted = request.POST.get("isMuted") == "true"
    error = attempt(lambda: services.relay_mute(destination=destination, muted=muted))
    message = "Audio muted for this destination." if muted else "Audio restored."
    return done(request, error, message, _back(destination.stream))


@_destination_action
def destination_restart(request: HttpRequest, destination: Any) -> HttpResponse:
    error = attempt(lambda: services.relay_restart(destination=destination))
    return done(request, error, "Restart requested.", _back(destination.stream))


@_destination_action
def destination_delete(request: HttpRequest, destination: Any) -> HttpResponse:
    error = attempt(lambda: services.destination_delete(destination=destination))
    return done(request, error, "Destination deleted.", _back(destination.stream))


@require_GET
@page
def relay_log(request: HttpRequest, stream_id: str, destination_id: str) -> HttpResponse:
    destination = selectors.destination_get(
        user=user_of(request), stream_id=stream_id, destination_id=destination_id
    )
    lines = selectors.relay_detail(destination=destination)["log"]
    return render(request, "dashboard/_log.html", {"lines": lines})
