"""Reads of streams. Tenant scoping lives here: a user's object is looked up with its owner."""

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db.models import Exists, F, Func, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.utils import timezone

from accounts.models import User
from agents.models import IngestNode
from agents.node.protocol import LOG_LINES_KEPT, DisplayState, RelayState
from agents.node.relay import redact
from rig.api import int_id, invalid_input, not_found
from rig.queries import CompiledQuery, columns, instance
from streams.models import Destination, Pull, Relay, Session, Stream
from webhooks.models import WebhookEndpoint


def uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def stream_list(*, user: User) -> QuerySet[Stream]:
    return Stream.objects.filter(owner=user).select_related("session")


def stream_get(*, user: User, stream_id: str, for_update: bool = False) -> Stream:
    """The user's stream; another tenant's id is exactly as unknown as a missing one."""
    pk = uuid_or_none(stream_id)
    # Locked alone (a join would lock the session's node too, against the lock order).
    queryset = (
        Stream.objects.select_for_update()
        if for_update
        else Stream.objects.select_related("session__node")
    )
    stream = queryset.filter(owner=user, pk=pk).first() if pk else None
    if stream is None:
        raise not_found("Stream")
    return stream


def stream_get_detailed(*, user: User, stream_id: str) -> Stream:
    pk = uuid_or_none(stream_id)
    stream = (
        Stream.objects.filter(owner=user, pk=pk)
        .select_related("session__node", "pull__node")
        .prefetch_related(Prefetch("destinations", Destination.objects.order_by("id")))
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
    pk, destination_pk = uuid_or_none(stream_id), int_id(destination_id)
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


def live_streams() -> QuerySet[Stream]:
    """Streams whose latest session has not ended."""
    return Stream.objects.filter(session__started_at__isnull=False, session__ended_at__isnull=True)


def relays_wanted() -> QuerySet[Destination]:
    """The relays live sessions want: one per active destination of a streaming stream."""
    return Destination.objects.filter(
        stream__session__started_at__isnull=False,
        stream__session__ended_at__isnull=True,
        is_active=True,
    )


STREAM_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what new_stream_key() makes


# --- the publish hooks' reads, compiled once (rig.queries): they run under the locks every
# publish on the node waits for. The placeholders are values no real row or key has.

_STREAM, _SESSION, _PULL = (columns(m) for m in (Stream, Session, Pull))


def _count(queryset: QuerySet) -> Subquery:
    """``SELECT COUNT(*)`` of the queryset, as a column of another query."""
    return Subquery(queryset.order_by().annotate(n=Func(F("pk"), function="COUNT")).values("n"))


def _stream_for_update(*, publish: bool) -> CompiledQuery:
    """The stream by key, its row locked, with its latest session, its pull, and whether its
    owner has an active webhook endpoint; for a publish also the relays the node runs for its
    other live sessions and the relays the stream would add (one per active destination). The
    publish's statement runs once the node's row is locked, so every other publish on the node
    it counts has committed (a destination added while the stream's row was awaited counts from
    the next publish, as one added to a live stream does)."""

    def build(key: str, node_id: int) -> QuerySet:
        counts = (
            {
                "running": _count(
                    relays_wanted()
                    .filter(stream__session__node_id=node_id)
                    .exclude(stream_id=OuterRef("pk"))
                ),
                "wanted": _count(Destination.objects.filter(stream=OuterRef("pk"), is_active=True)),
            }
            if publish
            else {}
        )
        listens = WebhookEndpoint.objects.filter(owner_id=OuterRef("owner_id"), is_active=True)
        return (
            Stream.objects.select_for_update(of=("self",))
            .filter(stream_key=key)
            .annotate(listens=Exists(listens), **counts)
            .values_list(
                *_STREAM,
                *(f"session__{name}" for name in _SESSION),
                *(f"pull__{name}" for name in _PULL),
                "listens",
                *counts,
            )
        )

    if publish:
        return CompiledQuery(build, key="\x1fplaceholder-stream-key", node_id=-(2**62) + 13)
    return CompiledQuery(lambda key: build(key, 0), key="\x1fplaceholder-stream-key")


_stream_to_publish = _stream_for_update(publish=True)
_stream_to_end = _stream_for_update(publish=False)


def stream_by_key_for_update(*, key: str, node: IngestNode | None = None) -> Stream | None:
    """The stream with this key, its row locked, with its latest session and its pull (if it
    has one) read in the same query: the publish hooks' first read after the node's. With the
    ``node`` a publish came to (its row locked), the stream also carries ``relays_asked``."""
    if not STREAM_KEY.fullmatch(key):  # NUL and the like never reach the database
        return None
    if node is None:
        rows = _stream_to_end.rows(key=key)
    else:
        rows = _stream_to_publish.rows(key=key, node_id=node.pk)
    if not rows:
        return None
    row, session_at, pull_at = rows[0], len(_STREAM), len(_STREAM) + len(_SESSION)
    extra_at = pull_at + len(_PULL)
    stream = instance(Stream, _STREAM, row[:session_at])
    if row[session_at] is not None:
        stream.session = instance(Session, _SESSION, row[session_at:pull_at])
    pull = instance(Pull, _PULL, row[pull_at:extra_at]) if row[pull_at] is not None else None
    Stream.pull.related.set_cached_value(stream, pull)
    stream.owner_listens = row[extra_at]
    if node is not None:
        stream.relays_asked = (row[extra_at + 1] or 0, row[extra_at + 2] or 0)
    return stream


def owner_listens(stream: Stream) -> bool:
    """Whether a webhook event about the stream may have an endpoint to go to: False only when
    the hooks' read of the stream found its owner without an active one (one query fewer per
    publish); otherwise the event's own query decides."""
    return bool(getattr(stream, "owner_listens", True))


def node_reporting(stream: Stream) -> bool:
    """Whether the node serving the live stream reported recently enough for its relay states
    to be believed: a dead or cut-off agent's last word is not the truth for long."""
    session = stream.live_session
    node = session.node if session is not None else None
    if node is None or node.last_seen_at is None:
        return False
    return (timezone.now() - node.last_seen_at).total_seconds() <= settings.RIG_RELAY_REPORT_FRESH_S


def session_relays(stream: Stream) -> dict[int | None, Relay]:
    """The relays of the stream's latest session, by destination."""
    if stream.session_id is None:
        return {}
    return {r.destination_id: r for r in Relay.objects.filter(session_id=stream.session_id)}


def _relay_status(
    destination: Destination, relay: Relay | None, *, streaming: bool, reporting: bool
) -> dict[str, Any]:
    if not destination.is_active:
        state: str = DisplayState.DISABLED
    elif relay is None:
        state = DisplayState.PENDING  # nothing reported yet in this session
    elif streaming and not reporting:
        state = DisplayState.UNKNOWN  # the node went quiet: what it last said may not hold
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


def iso_or_none(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def from_epoch(seconds: float | None) -> datetime | None:
    """A time a node reports (epoch seconds; None or 0: not known)."""
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds else None


def provision_status(stream: Stream, destinations: list[Destination]) -> dict[str, Any] | None:
    """The live picture of a stream's fan-out: its latest session plus each relay's report."""
    session = stream.session
    if session is None:
        return None
    streaming = session.ended_at is None
    # While live, the serving node's last heartbeat; after, the time the session started.
    last_check = session.node.last_seen_at if streaming and session.node else session.started_at
    reporting = node_reporting(stream)
    relays = session_relays(stream)
    statuses = [
        _relay_status(d, relays.get(d.pk), streaming=streaming, reporting=reporting)
        for d in destinations
    ]
    if not streaming:
        state = "stopped"
    else:
        active = [r["state"] for r in statuses if r["state"] != DisplayState.DISABLED]
        if active and all(state == DisplayState.PENDING for state in active):
            state = "provisioning"
        elif all(state == RelayState.LIVE for state in active):
            state = "live"
        else:
            state = "degraded"
    status: dict[str, Any] = {
        "state": state,
        "reason": session.end_reason or None,
        "node": session.node_name,
        "region": session.region,
        "server": {"hostname": session.hostname, "lastCheck": iso_or_none(last_check)},
        "ingestUrl": session.ingest_url,
        "startedAt": iso_or_none(session.started_at),
        "endedAt": iso_or_none(session.ended_at),
        "resumedAt": iso_or_none(session.resumed_at),
        "destinations": statuses,
    }
    return status


def relay_item(destination: Destination, relay: Relay | None, *, reporting: bool) -> dict[str, Any]:
    """One relay as the relay API shows it: the provisionStatus item plus the controls.
    ``relay``: its report in the stream's latest session (session_relays), if any."""
    streaming = destination.stream.is_streaming
    return {
        **_relay_status(destination, relay, streaming=streaming, reporting=reporting),
        "isActive": destination.is_active,
        "isMuted": destination.is_muted,
    }


def _session_relay(destination: Destination) -> Relay | None:
    session_id = destination.stream.session_id
    if session_id is None:
        return None
    return Relay.objects.filter(session_id=session_id, destination=destination).first()


def relay_payload(destination: Destination) -> dict[str, Any]:
    return relay_item(
        destination,
        _session_relay(destination),
        reporting=node_reporting(destination.stream),
    )


def relay_list(*, stream: Stream) -> list[dict[str, Any]]:
    destinations = stream.destinations.order_by("id")
    reporting = node_reporting(stream)
    relays = session_relays(stream)
    return [relay_item(d, relays.get(d.pk), reporting=reporting) for d in destinations]


def relay_detail(*, destination: Destination) -> dict[str, Any]:
    """With the relay's last log lines. The node redacts keys; this redacts again, so a line
    the node missed (say, an error echoing an old key) still never shows the current one."""
    relay = _session_relay(destination)
    secrets = (destination.stream_key, destination.stream.stream_key)
    lines = [redact(line, secrets) for line in list(relay.log)[-LOG_LINES_KEPT:]] if relay else []
    reporting = node_reporting(destination.stream)
    return {**relay_item(destination, relay, reporting=reporting), "log": lines}


def session_list(
    *, stream: Stream, before: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The stream's sessions, newest first, ``limit`` (RIG_SESSIONS_PAGE) at a time; ``before``
    (a session id of this stream) pages back from it."""
    sessions = stream.sessions.order_by("-started_at", "-id")
    if before is not None:
        pk = uuid_or_none(before)
        anchor = stream.sessions.filter(pk=pk).first() if pk else None
        if anchor is None:
            raise invalid_input("before", "Not a session of this stream.")
        sessions = sessions.filter(
            Q(started_at__lt=anchor.started_at) | Q(started_at=anchor.started_at, id__lt=anchor.pk)
        )
    page = list(
        sessions.prefetch_related(Prefetch("relays", Relay.objects.order_by("destination_id")))[
            : limit or settings.RIG_SESSIONS_PAGE
        ]
    )
    return [_session_payload(session) for session in page]


def _session_payload(session: Session) -> dict[str, Any]:
    ended = session.ended_at
    duration = ((ended or timezone.now()) - session.started_at).total_seconds()
    return {
        "id": str(session.pk),
        "startedAt": iso_or_none(session.started_at),
        "endedAt": iso_or_none(ended),
        "resumedAt": iso_or_none(session.resumed_at),
        "durationS": round(duration, 1),
        "reason": session.end_reason or None,
        "node": session.node_name,
        "region": session.region,
        "destinations": [
            {
                "id": relay.destination_id,
                "service": relay.service,
                "state": relay.state,
                "bytesSent": relay.bytes_sent,
                "restarts": relay.restarts,
                "lastError": relay.last_error or None,
            }
            for relay in session.relays.all()
        ],
    }
