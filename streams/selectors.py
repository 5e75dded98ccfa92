"""Reads of streams. Tenant scoping lives here: a user's object is looked up with its owner."""

import re
import uuid
from typing import Any

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from accounts.models import User
from agents.node.relay import redact
from rig.api import int_id, not_found
from streams.models import Destination, Relay, RelayState, Stream


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def stream_list(*, user: User) -> QuerySet[Stream]:
    return Stream.objects.filter(owner=user)


def stream_get(*, user: User, stream_id: str, for_update: bool = False) -> Stream:
    """The user's stream; another tenant's id is exactly as unknown as a missing one."""
    pk = _uuid(stream_id)
    queryset = Stream.objects.select_for_update() if for_update else Stream.objects.all()
    stream = queryset.filter(owner=user, pk=pk).first() if pk else None
    if stream is None:
        raise not_found("Stream")
    return stream


def stream_get_detailed(*, user: User, stream_id: str) -> Stream:
    pk = _uuid(stream_id)
    stream = (
        Stream.objects.filter(owner=user, pk=pk)
        .select_related("node")
        .prefetch_related(
            Prefetch("destinations", Destination.objects.select_related("relay").order_by("id"))
        )
        .first()
        if pk
        else None
    )
    if stream is None:
        raise not_found("Stream")
    return stream


def destination_get(
    *, user: User, stream_id: str, destination_id: str, for_update: bool = False
) -> Destination:
    pk, destination_pk = _uuid(stream_id), int_id(destination_id)
    if pk is None or destination_pk is None:
        raise not_found("Destination")
    queryset = Destination.objects.select_for_update() if for_update else Destination.objects
    destination = (
        queryset.select_related("stream")
        .filter(stream__owner=user, stream_id=pk, pk=destination_pk)
        .first()
    )
    if destination is None:
        raise not_found("Destination")
    return destination


def relays_wanted() -> QuerySet[Destination]:
    """The relays live sessions want: one per active destination of a streaming stream."""
    return Destination.objects.filter(stream__is_streaming=True, is_active=True)


_STREAM_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what new_stream_key() makes


def stream_by_key(*, key: str, for_update: bool = False) -> Stream | None:
    if not _STREAM_KEY.fullmatch(key):  # NUL and the like never reach the database
        return None
    queryset = Stream.objects.select_for_update() if for_update else Stream.objects
    return queryset.filter(stream_key=key).first()


def node_reporting(stream: Stream) -> bool:
    """Whether the node serving the live stream reported recently enough for its relay states
    to be believed: a dead or cut-off agent's last word is not the truth for long."""
    node = stream.node if stream.is_streaming and stream.node_id else None
    if node is None or node.last_seen_at is None:
        return False
    return (timezone.now() - node.last_seen_at).total_seconds() <= settings.RIG_RELAY_REPORT_FRESH_S


def _relay_status(destination: Destination, *, reporting: bool) -> dict[str, Any]:
    relay: Relay | None = getattr(destination, "relay", None)
    if not destination.is_active:
        state = "disabled"
    elif relay is None:
        state = RelayState.PENDING  # nothing reported yet in this session
    elif destination.stream.is_streaming and not reporting:
        state = "unknown"  # the node has gone quiet: what it last said may no longer hold
    else:
        state = relay.state
    return {
        "id": destination.pk,
        "service": destination.service,
        "state": state,
        "bitrateKbps": relay.bitrate_kbps if relay else None,
        "fps": relay.fps if relay else None,
        "bytesSent": relay.bytes_sent if relay else 0,
        "restarts": relay.restarts if relay else 0,
        "since": relay.since.isoformat() if relay and relay.since else None,
        "lastError": (relay.last_error or None) if relay else None,
    }


def provision_status(stream: Stream, destinations: list[Destination]) -> dict[str, Any] | None:
    """The live picture of a stream's fan-out: the session record plus each relay's report."""
    if stream.provision_status is None:
        return None
    status = dict(stream.provision_status)
    node = stream.node if stream.is_streaming else None
    if node is not None:  # the serving node's last heartbeat, not the one at publish time
        last = node.last_seen_at
        status["server"] = {**status.get("server", {}), "lastCheck": last and last.isoformat()}
    reporting = node_reporting(stream)
    relays = [_relay_status(d, reporting=reporting) for d in destinations]
    if stream.is_streaming:
        active = [r["state"] for r in relays if r["state"] != "disabled"]
        if active and all(state == RelayState.PENDING for state in active):
            status["state"] = "provisioning"
        elif all(state == RelayState.LIVE for state in active):
            status["state"] = "live"
        else:
            status["state"] = "degraded"
    status["destinations"] = relays
    return status


def relay_payload(destination: Destination, *, reporting: bool | None = None) -> dict[str, Any]:
    """One relay as the relay API shows it: the provisionStatus item plus the controls."""
    if reporting is None:
        reporting = node_reporting(destination.stream)
    return {
        **_relay_status(destination, reporting=reporting),
        "isActive": destination.is_active,
        "isMuted": destination.is_muted,
    }


def relay_list(*, stream: Stream) -> list[dict[str, Any]]:
    destinations = stream.destinations.select_related("relay").order_by("id")
    reporting = node_reporting(stream)
    return [relay_payload(d, reporting=reporting) for d in destinations]


def relay_detail(*, destination: Destination) -> dict[str, Any]:
    """With the relay's last log lines. The node redacts keys; this redacts again, so a line
    the node missed (say, an error echoing an old key) still never shows the current one."""
    relay: Relay | None = getattr(destination, "relay", None)
    secrets = (destination.stream_key, destination.stream.stream_key)
    lines = [redact(line, secrets) for line in list(relay.log)[-100:]] if relay else []
    return {**relay_payload(destination), "log": lines}
