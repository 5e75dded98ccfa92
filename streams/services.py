"""Changes users make to streams, destinations and relays. Ending a live session and nudging
its node are streams.sessions' (the publish lifecycle)."""

import secrets
from typing import Any

from django.conf import settings
from django.db import transaction

from accounts.models import User
from rig.api import ApiError, ErrorCode, enforce_limit, invalid_input
from streams import destinations as urls
from streams.models import Destination, Pull, Service, Stream
from streams.pulls import pull_assign, pull_release, pull_restart, pull_set, pull_url_error
from streams.recordings import record_set
from streams.sessions import nudge_if_live, session_end


def new_stream_key() -> str:
    """128 bits from the OS CSPRNG: 22 URL-safe characters."""
    return secrets.token_urlsafe(16)


# --- streams -------------------------------------------------------------------------------


@transaction.atomic
def stream_create(*, user: User) -> Stream:
    enforce_limit(
        User.objects.filter(pk=user.pk),
        Stream.objects.filter(owner=user),
        settings.RIG_MAX_STREAMS_PER_USER,
        what="stream",
        field="streams",
        per="user",
    )
    return Stream.objects.create(owner=user, stream_key=new_stream_key())


@transaction.atomic
def stream_key_rotate(*, stream: Stream) -> Stream:
    """A new key; the old one stops working at once and a publisher using it is dropped."""
    stream = Stream.objects.select_for_update().get(pk=stream.pk)
    stream.stream_key = new_stream_key()
    stream.save(update_fields=["stream_key"])
    if stream.is_streaming:
        session_end(stream, reason="stream key changed")
    return stream


_UNCHANGED: Any = object()
TRANSCODE_FIELDS = ("height", "fps", "videoBitrateKbps", "audioBitrateKbps")


def stream_update(
    *,
    stream: Stream,
    is_active: bool | None = None,
    pull_url: str | None = _UNCHANGED,
    record: bool | None = None,
) -> Stream:
    """Activate or deactivate the stream, set its pullUrl (None: back to push mode), record its
    sessions or not."""
    if pull_url is not _UNCHANGED and pull_url is not None:
        # Checked before any lock: the check waits on DNS (see destination_add).
        error = pull_url_error(pull_url)
        if error:
            raise invalid_input("pullUrl", error)
    return _stream_update(stream=stream, is_active=is_active, pull_url=pull_url, record=record)


@transaction.atomic
def _stream_update(
    *, stream: Stream, is_active: bool | None, pull_url: str | None, record: bool | None
) -> Stream:
    stream = Stream.objects.select_for_update().get(pk=stream.pk)
    if record is not None:
        record_set(stream=stream, record=record)
    if pull_url is not _UNCHANGED:
        pull_set(stream=stream, url=pull_url)
    if is_active is not None and is_active != stream.is_active:
        stream.is_active = is_active
        stream.save(update_fields=["is_active"])
        if not is_active and stream.is_streaming:
            session_end(stream, reason="stream deactivated")
        pull = Pull.objects.filter(stream=stream).first()
        if pull is not None and is_active:
            pull_assign(pull)
        elif pull is not None:
            pull_release(pull)
    return stream


@transaction.atomic
def stream_delete(*, stream: Stream) -> None:
    stream = Stream.objects.select_for_update().get(pk=stream.pk)
    if stream.is_streaming:  # webhooks hear that the session ended, and why
        session_end(stream, reason="stream deleted")
    stream.delete()


# --- destinations --------------------------------------------------------------------------


def _validate_destination(*, service: str, stream_key: str, server_url: str) -> None:
    _validate_key(stream_key)
    _validate_server_url(service, server_url)


def _validate_key(stream_key: str) -> None:
    error = urls.key_error(stream_key)
    if error:
        raise invalid_input("streamKey", error)


def _validate_server_url(service: str, server_url: str) -> None:
    if service == Service.CUSTOM:
        if not server_url:
            raise ApiError(
                ErrorCode.MISSING_INPUT,
                "Missing required input",
                400,
                {"serverUrl": ["Required for Custom destinations."]},
            )
        error = urls.server_url_error(server_url)
        if error:
            raise invalid_input("serverUrl", error)
    elif server_url:
        raise invalid_input(
            "serverUrl", f"Only Custom destinations take a serverUrl, not {service}."
        )


@transaction.atomic
def destination_add(
    *,
    stream: Stream,
    service: str,
    stream_key: str,
    server_url: str = "",
    transcode: dict[str, int] | None = None,
) -> Destination:
    # Checked before any lock: a Custom URL's check waits on DNS, and a publish on the same
    # stream (or node) must never wait on another tenant's slow resolver.
    _validate_destination(service=service, stream_key=stream_key, server_url=server_url)
    stream = enforce_limit(
        Stream.objects.filter(pk=stream.pk),
        Destination.objects.filter(stream=stream),
        settings.RIG_MAX_DESTINATIONS_PER_STREAM,
        what="destination",
        field="destinations",
        per="stream",
    )
    destination = Destination.objects.create(
        stream=stream,
        service=service,
        stream_key=stream_key,
        server_url=server_url,
        transcode=_profile(transcode),
    )
    nudge_if_live(stream)
    return destination


@transaction.atomic
def destination_update(
    *,
    destination: Destination,
    stream_key: str | None = None,
    server_url: str | None = None,
    is_active: bool | None = None,
    is_muted: bool | None = None,
    transcode: dict[str, int] | None = _UNCHANGED,
) -> Destination:
    """Change what is given; ``transcode=None`` returns the destination to copy."""
    # Only what changes is checked, and before any lock: a URL check may wait on DNS.
    if stream_key is not None:
        _validate_key(stream_key)
    if server_url is not None:
        _validate_server_url(destination.service, server_url)
    changes = {
        field: value
        for field, value in (
            ("stream_key", stream_key),
            ("server_url", server_url),
            ("is_active", is_active),
            ("is_muted", is_muted),
        )
        if value is not None
    }
    # Lock the destination row only (a join would lock the stream too, against the lock order).
    destination = (
        Destination.objects.select_for_update(of=("self",))
        .select_related("stream")
        .get(pk=destination.pk)
    )
    for field, value in changes.items():
        setattr(destination, field, value)
    if transcode is not _UNCHANGED:
        destination.transcode = _profile(transcode)
    destination.save()
    nudge_if_live(destination.stream)
    return destination


def _profile(transcode: dict[str, int] | None) -> dict[str, int] | None:
    """A validated profile as stored: its four numbers, in one order."""
    if transcode is None:
        return None
    return {name: int(transcode[name]) for name in TRANSCODE_FIELDS}


@transaction.atomic
def destination_delete(*, destination: Destination) -> None:
    nudge_if_live(destination.stream)
    destination.delete()


# --- relay control (the user's own destinations) ---------------------------------------------


@transaction.atomic
def relay_restart(*, destination: Destination) -> Destination:
    """Ask the serving node to start this relay afresh (new connection to the platform)."""
    destination = (
        Destination.objects.select_for_update(of=("self",))
        .select_related("stream")
        .get(pk=destination.pk)
    )
    if not destination.stream.is_streaming:
        raise ApiError(ErrorCode.WRONG_STATE, "Stream is not live", 409)
    if not destination.is_active:
        raise ApiError(ErrorCode.WRONG_STATE, "Destination is not active", 409)
    destination.restart_seq += 1
    destination.save(update_fields=["restart_seq"])
    nudge_if_live(destination.stream)
    return destination


def relay_mute(*, destination: Destination, muted: bool) -> Destination:
    """Drop (or restore) the audio track to this destination only."""
    return destination_update(destination=destination, is_muted=muted)


# --- pulled source ----------------------------------------------------------------------------


@transaction.atomic
def source_restart(*, stream: Stream) -> Stream:
    """Ask the pulling node to reconnect to the stream's source."""
    stream = Stream.objects.select_for_update().get(pk=stream.pk)
    pull_restart(stream=stream)
    return stream
