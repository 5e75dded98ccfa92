"""The publish lifecycle: each publish is a Session row (streams.models). nginx-rtmp's
on_publish opens it (publish_start), on_publish_done ends it (publish_end); so do a key change,
deactivation or deletion (streams.services), a publisher its node no longer lists, and a lost
node (publishers_seen, sessions_end_on_lost_node); a lost node that comes back with the same
publisher resumes it. Lock order everywhere: node, then stream (whose row guards its pull,
sessions, relays and recordings); the node's status report locks every stream it writes for
first (agents.services._lock_streams). A node's row is locked FOR NO KEY UPDATE: the check a
foreign key to the node makes at commit (a pull given to it) does not wait on a publish there.

When a live stream's desired fan-out changes, its node is nudged after commit
(agents.tasks.node_nudge); the agent then reconciles from /agents/streams, so a lost nudge only
delays convergence until the agent's next poll.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from agents.models import IngestNode
from agents.node.protocol import RelayState
from rig.api import ApiError, ErrorCode, invalid_credentials, not_found
from rig.enqueue import enqueue_after_commit
from rig.queries import insert_pointed_to
from streams.models import Session, Stream
from streams.selectors import iso_or_none, owner_listens, stream_by_key_for_update
from webhooks.services import event_emit

logger = logging.getLogger(__name__)


def nudge_after_commit(node_id: int | None) -> None:
    from agents.tasks import node_nudge  # tasks import services: avoid the cycle at import time

    if node_id is not None:
        enqueue_after_commit(node_nudge, node_id)


def nudge_if_live(stream: Stream) -> None:
    session = stream.live_session
    if session is not None:
        nudge_after_commit(session.node_id)


def stream_event(stream: Stream, session: Session, event: str) -> None:
    """A webhook event about the session; never the stream key (payloads leave the platform)."""
    data = {
        "streamID": str(stream.id),
        "node": session.node_name,
        "region": session.region,
        "reason": session.end_reason or None,
        "startedAt": iso_or_none(session.started_at),
        "endedAt": iso_or_none(session.ended_at),
    }
    if owner_listens(stream):
        event_emit(user_id=stream.owner_id, event=event, data=data)


NODE_LOST = "node lost"


def session_end(stream: Stream, *, reason: str) -> None:
    """Close the stream's live session (the stream row is locked); the node drops what no longer
    should run. A session ended as NODE_LOST can be taken back (publishers_seen)."""
    session = stream.live_session
    if session is None:
        return
    session.ended_at = timezone.now()
    session.end_reason = reason
    session.save(update_fields=["ended_at", "end_reason"])
    session.relays.update(state=RelayState.STOPPED, bitrate_kbps=None, fps=None)
    nudge_after_commit(session.node_id)
    stream_event(stream, session, "stream.ended")
    _sessions_prune(stream)


# --- publish lifecycle (nginx-rtmp on_publish / on_publish_done, the agent's reports) -------


# How long nginx may take to list a publisher the control plane admitted (its hook's timeout).
PUBLISH_APPEARS_S = 5


def _publisher_stale(session: Session, node: IngestNode) -> bool:
    """A live session its node stopped vouching for (agent reports) may be taken over: at once
    when the serving node itself said twice that nginx no longer has the publisher (nginx was
    restarted and OBS reconnects there), else after RIG_PUBLISHER_STALE_S."""
    if session.publisher_seen_at is None:
        return True
    if session.node_id == node.pk and session.publisher_missed >= 2:
        return True
    limit = timedelta(seconds=settings.RIG_PUBLISHER_STALE_S)
    return timezone.now() - session.publisher_seen_at > limit


def _check_node_admits(node: IngestNode, stream: Stream) -> None:
    """Refuse a publish the node cannot serve well, with a reason nginx logs and OBS retries."""
    if node.is_draining:
        raise ApiError(ErrorCode.IN_USE, "Node is draining: publish to another node", 503)
    if node.lost_at is not None:
        raise ApiError(ErrorCode.IN_USE, "Node is not reporting: publish to another node", 503)
    running, wanted = stream.relays_asked
    if running + wanted > node.capacity:
        raise ApiError(
            ErrorCode.LIMIT_REACHED,
            "Node is at capacity: publish to another node",
            503,
            {"capacity": [f"{running} of {node.capacity} relays in use, {wanted} more asked."]},
        )


def _hook_node(token: str, *, publish: bool = False) -> IngestNode:
    """The node a publish hook came from, by the token in its URL (401 for any other)."""
    from agents.selectors import node_by_token  # agents read streams: avoid the import cycle

    node = node_by_token(token=token, publish=publish)
    if node is None:
        raise invalid_credentials()
    return node


@transaction.atomic
def publish_start(*, token: str, key: str, client_id: str, pull_token: str = "") -> Stream:
    """A publisher at the node with this token: its new session, or a refusal (ApiError)."""
    # The node's row serializes its publishes, so two at once cannot both take the last slot.
    # Lock order everywhere: node, then stream (whose row guards its sessions).
    node = _hook_node(token, publish=True)
    stream = stream_by_key_for_update(key=key, node=node)
    if stream is None:
        raise not_found("Stream")
    if not stream.is_active:
        raise ApiError(ErrorCode.INVALID_CREDENTIALS, "Stream is deactivated", 403)
    from streams.pulls import pull_admits  # pulls end sessions: avoid the cycle at import time

    pull_admits(stream=stream, node=node, token=pull_token)
    live = stream.live_session
    if live is not None:
        if live.node_id == node.pk and live.client_id == client_id:
            return stream  # the same publisher asked again
        if not _publisher_stale(live, node):
            raise ApiError(ErrorCode.IN_USE, "Stream is already live", 409)
    _check_node_admits(node, stream)
    if live is not None:  # a session nobody vouches for any more ends here
        session_end(stream, reason="publisher replaced")
    session = session_open(stream=stream, node=node, client_id=client_id)
    nudge_after_commit(node.pk)
    stream_event(stream, session, "stream.live")
    return stream


def session_open(*, stream: Stream, node: IngestNode, client_id: str) -> Session:
    """The stream's new live session on ``node``, as its latest (the stream row is locked)."""
    now = timezone.now()
    session = Session(
        stream=stream,
        node=node,
        node_name=node.name,
        region=node.region,
        hostname=node.hostname,
        ingest_url=node.rtmp_url,
        client_id=client_id,
        started_at=now,
        publisher_seen_at=now,
    )
    insert_pointed_to(session, by=stream, field="session")  # one statement: the hook's path
    return session


def _sessions_prune(stream: Stream) -> None:
    """A stream keeps its last RIG_SESSIONS_KEPT sessions as history (and the live one): pruned
    when a session ends, off the publish hook's path."""
    old = stream.sessions.order_by("-started_at", "-id")[settings.RIG_SESSIONS_KEPT :]
    Session.objects.filter(pk__in=list(old.values_list("pk", flat=True))).delete()


def publishers_seen(*, node: IngestNode, keys: list[str]) -> None:
    """The node's nginx receives these keys now: vouch for their sessions, and end sessions on
    the node whose publisher is gone for longer than the grace a fresh publish needs to appear."""
    now = timezone.now()
    live = Session.objects.filter(node=node, ended_at__isnull=True)
    live.filter(stream__stream_key__in=keys).update(publisher_seen_at=now, publisher_missed=0)
    # A miss counts once nginx should list the publisher: it has listed it since the session
    # opened, or the session is older than nginx's publish hook may take (the agent holds the
    # hook while the relays start, and reports meanwhile: those reports cannot list it yet).
    settled = now - timedelta(seconds=PUBLISH_APPEARS_S)
    listed = Q(publisher_seen_at__gt=F("started_at")) | Q(started_at__lt=settled)
    live.exclude(stream__stream_key__in=keys).filter(listed).update(
        publisher_missed=F("publisher_missed") + 1
    )
    cutoff = now - timedelta(seconds=settings.RIG_PUBLISHER_STALE_S)
    gone = live.exclude(stream__stream_key__in=keys).filter(publisher_seen_at__lt=cutoff)
    for session_id, stream_id in gone.values_list("pk", "stream_id"):
        with transaction.atomic():
            stream = Stream.objects.select_for_update().get(pk=stream_id)
            if stream.session_id == session_id and stream.is_streaming:
                session_end(stream, reason="publisher gone")
    # A node that was cut off long enough to be declared lost, and reports again with the same
    # publisher still connected, takes the session back: nothing reconnects. Not if the stream
    # went live elsewhere, or was deactivated or given a new key meanwhile.
    lost = Stream.objects.filter(
        session__node=node,
        session__end_reason=NODE_LOST,
        is_active=True,
        stream_key__in=keys,
    ).exclude(session__client_id="")
    for stream_id in lost.values_list("pk", flat=True):
        with transaction.atomic():
            stream = Stream.objects.select_for_update().get(pk=stream_id)
            session = stream.session
            if (
                session is not None
                and session.ended_at is not None
                and session.end_reason == NODE_LOST
                and session.node_id == node.pk
                and session.client_id
                and stream.is_active
                and stream.stream_key in keys
            ):
                _session_resume(stream, session)


def _session_resume(stream: Stream, session: Session) -> None:
    now = timezone.now()
    session.ended_at = None
    session.end_reason = ""
    session.resumed_at = now
    session.publisher_seen_at = now
    session.publisher_missed = 0
    session.save()
    logger.info("stream %s resumed on node %s after the node came back", stream.pk, session.node_id)
    nudge_after_commit(session.node_id)
    stream_event(stream, session, "stream.live")


@transaction.atomic
def publish_end(*, token: str, key: str, client_id: str) -> None:
    """Idempotent: only the session that ends is closed, whatever order hooks arrive in."""
    node = _hook_node(token)
    stream = stream_by_key_for_update(key=key)
    if stream is None:
        return
    session = stream.live_session
    if session is not None and session.node_id == node.pk and session.client_id == client_id:
        session_end(stream, reason="publisher disconnected")


@transaction.atomic
def sessions_end_on_lost_node(*, node: IngestNode) -> list[Stream]:
    """The node stopped reporting: its live sessions are over. nginx's client id is kept, so a
    node that comes back with the same publisher takes the session back (publishers_seen); a
    publisher that reconnects instead starts a new session where it lands."""
    ended = []
    live = Stream.objects.filter(session__node=node, session__ended_at__isnull=True)
    for stream in Stream.objects.select_for_update().filter(
        pk__in=list(live.values_list("pk", flat=True))
    ):
        if stream.live_session is not None and stream.live_session.node_id == node.pk:
            session_end(stream, reason=NODE_LOST)
            ended.append(stream)
    return ended
