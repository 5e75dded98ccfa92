"""Changes to streams and destinations, and the publish lifecycle driven by nginx-rtmp's hooks.

Whenever a live stream's desired fan-out changes, the serving node is nudged after commit
(agents.tasks.node_nudge); the node's agent then reconciles from /agents/streams and
/agents/config, so a lost nudge only delays convergence until the agent's next poll.
"""

import logging
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import User
from agents.models import IngestNode
from rig.api import ApiError, ErrorCode, invalid_input, not_found
from rig.enqueue import enqueue_after_commit
from streams import destinations as urls
from streams.models import Destination, Relay, RelayState, Service, Stream
from streams.selectors import relays_wanted, stream_by_key
from webhooks.services import event_emit

logger = logging.getLogger(__name__)


def new_stream_key() -> str:
    """128 bits from the OS CSPRNG: 22 URL-safe characters."""
    return secrets.token_urlsafe(16)


def _nudge_after_commit(node_id: int | None) -> None:
    from agents.tasks import node_nudge  # tasks import services: avoid the cycle at import time

    if node_id is not None:
        enqueue_after_commit(node_nudge, node_id)


def _nudge_if_live(stream: Stream) -> None:
    if stream.is_streaming:
        _nudge_after_commit(stream.node_id)


def _stream_event(stream: Stream, event: str) -> None:
    """A webhook event about the session; never the stream key (payloads leave the platform)."""
    status = stream.provision_status or {}
    fields = ("node", "region", "reason", "startedAt", "endedAt")
    data = {"streamID": str(stream.id), **{field: status.get(field) for field in fields}}
    event_emit(user_id=stream.owner_id, event=event, data=data)


NODE_LOST = "node lost"


def _session_end(stream: Stream, *, reason: str, keep_publisher: bool = False) -> None:
    """Close the live session in the database; the node drops what no longer should run.
    ``keep_publisher`` remembers nginx's client id, so the session can be taken back."""
    was_node = stream.node_id
    status = dict(stream.provision_status or {})
    status.update(state="stopped", reason=reason, endedAt=timezone.now().isoformat())
    stream.is_streaming = False
    if not keep_publisher:
        stream.publish_client_id = ""
    stream.provision_status = status
    stream.save(update_fields=["is_streaming", "publish_client_id", "provision_status"])
    Relay.objects.filter(destination__stream=stream).update(
        state=RelayState.STOPPED, bitrate_kbps=None, fps=None
    )
    _nudge_after_commit(was_node)
    _stream_event(stream, "stream.ended")


# --- streams -------------------------------------------------------------------------------


def stream_create(*, user: User) -> Stream:
    if Stream.objects.filter(owner=user).count() >= settings.RIG_MAX_STREAMS_PER_USER:
        raise ApiError(
            ErrorCode.LIMIT_REACHED,
            "Stream limit reached",
            409,
            {"streams": [f"At most {settings.RIG_MAX_STREAMS_PER_USER} streams per user."]},
        )
    return Stream.objects.create(owner=user, stream_key=new_stream_key())


@transaction.atomic
def stream_key_rotate(*, stream: Stream) -> Stream:
    """A new key; the old one stops working at once and a publisher using it is dropped."""
    stream = Stream.objects.select_for_update().get(pk=stream.pk)
    stream.stream_key = new_stream_key()
    stream.save(update_fields=["stream_key"])
    if stream.is_streaming:
        _session_end(stream, reason="stream key changed")
    return stream


@transaction.atomic
def stream_update(*, stream: Stream, is_active: bool | None = None) -> Stream:
    stream = Stream.objects.select_for_update().get(pk=stream.pk)
    if is_active is not None and is_active != stream.is_active:
        stream.is_active = is_active
        stream.save(update_fields=["is_active"])
        if not is_active and stream.is_streaming:
            _session_end(stream, reason="stream deactivated")
    return stream


@transaction.atomic
def stream_delete(*, stream: Stream) -> None:
    stream = Stream.objects.select_for_update().get(pk=stream.pk)
    if stream.is_streaming:  # webhooks hear that the session ended, and why
        _session_end(stream, reason="stream deleted")
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
    *, stream: Stream, service: str, stream_key: str, server_url: str = ""
) -> Destination:
    # Checked before any lock: a Custom URL's check waits on DNS, and a publish on the same
    # stream (or node) must never wait on another tenant's slow resolver.
    _validate_destination(service=service, stream_key=stream_key, server_url=server_url)
    stream = Stream.objects.select_for_update().get(pk=stream.pk)
    if stream.destinations.count() >= settings.RIG_MAX_DESTINATIONS_PER_STREAM:
        raise ApiError(
            ErrorCode.LIMIT_REACHED,
            "Destination limit reached",
            409,
            {"destinations": [f"At most {settings.RIG_MAX_DESTINATIONS_PER_STREAM} per stream."]},
        )
    destination = Destination.objects.create(
        stream=stream, service=service, stream_key=stream_key, server_url=server_url
    )
    _nudge_if_live(stream)
    return destination


@transaction.atomic
def destination_update(*, destination: Destination, changes: dict[str, Any]) -> Destination:
    # Only what changes is checked, and before any lock: a URL check may wait on DNS.
    if "stream_key" in changes:
        _validate_key(changes["stream_key"])
    if "server_url" in changes:
        _validate_server_url(destination.service, changes["server_url"])
    # Lock the destination row only (a join would lock the stream too, against the lock order).
    destination = (
        Destination.objects.select_for_update(of=("self",))
        .select_related("stream")
        .get(pk=destination.pk)
    )
    for field, value in changes.items():
        setattr(destination, field, value)
    destination.save()
    _nudge_if_live(destination.stream)
    return destination


@transaction.atomic
def destination_delete(*, destination: Destination) -> None:
    _nudge_if_live(destination.stream)
    destination.delete()


# --- publish lifecycle (nginx-rtmp on_publish / on_publish_done, the agent's reports) -------


def _publisher_stale(stream: Stream, node: IngestNode) -> bool:
    """A live session its node stopped vouching for (agent reports) may be taken over: at once
    when the serving node itself said twice that nginx no longer has the publisher (nginx was
    restarted and OBS reconnects there), else after RIG_PUBLISHER_STALE_S."""
    if stream.publisher_seen_at is None:
        return True
    if stream.node_id == node.pk and stream.publisher_missed >= 2:
        return True
    limit = timedelta(seconds=settings.RIG_PUBLISHER_STALE_S)
    return timezone.now() - stream.publisher_seen_at > limit


def _relays_on_node(node: IngestNode, *, besides: Stream) -> int:
    """Relays the node runs for its live sessions (one per active destination)."""
    return relays_wanted().filter(stream__node=node).exclude(stream=besides).count()


def _check_node_admits(node: IngestNode, stream: Stream) -> None:
    """Refuse a publish the node cannot serve well, with a reason nginx logs and OBS retries."""
    if node.is_draining:
        raise ApiError(ErrorCode.IN_USE, "Node is draining: publish to another node", 503)
    if node.lost_at is not None:
        raise ApiError(ErrorCode.IN_USE, "Node is not reporting: publish to another node", 503)
    wanted = stream.destinations.filter(is_active=True).count()
    running = _relays_on_node(node, besides=stream)
    if running + wanted > node.capacity:
        raise ApiError(
            ErrorCode.LIMIT_REACHED,
            "Node is at capacity: publish to another node",
            503,
            {"capacity": [f"{running} of {node.capacity} relays in use, {wanted} more asked."]},
        )


@transaction.atomic
def publish_start(*, node: IngestNode, key: str, client_id: str) -> Stream:
    # The node's row serializes its publishes, so two at once cannot both take the last slot.
    # Lock order everywhere: node, then stream.
    node = IngestNode.objects.select_for_update().get(pk=node.pk)
    stream = stream_by_key(key=key, for_update=True)
    if stream is None:
        raise not_found("Stream")
    if not stream.is_active:
        raise ApiError(ErrorCode.INVALID_CREDENTIALS, "Stream is deactivated", 403)
    if stream.is_streaming:
        if stream.node_id == node.pk and stream.publish_client_id == client_id:
            return stream  # the same publisher asked again
        if not _publisher_stale(stream, node):
            raise ApiError(ErrorCode.IN_USE, "Stream is already live", 409)
    _check_node_admits(node, stream)
    if stream.is_streaming:  # a session nobody vouches for any more ends here
        _session_end(stream, reason="publisher replaced")
    now = timezone.now()
    stream.is_streaming = True
    stream.node = node
    stream.publish_client_id = client_id
    stream.publisher_seen_at = now
    stream.publisher_missed = 0
    stream.provision_status = {
        "state": "provisioning",
        "reason": None,
        "node": node.name,
        "region": node.region,
        "server": {"hostname": node.hostname, "lastCheck": now.isoformat()},
        "ingestUrl": node.rtmp_url,
        "startedAt": now.isoformat(),
        "endedAt": None,
    }
    stream.save()
    Relay.objects.filter(destination__stream=stream).delete()  # a new session starts clean
    _nudge_after_commit(node.pk)
    _stream_event(stream, "stream.live")
    return stream


def publishers_seen(*, node: IngestNode, keys: list[str]) -> None:
    """The node's nginx receives these keys now: vouch for their sessions, and end sessions on
    the node whose publisher is gone for longer than the grace a fresh publish needs to appear."""
    now = timezone.now()
    live = Stream.objects.filter(node=node, is_streaming=True)
    live.filter(stream_key__in=keys).update(publisher_seen_at=now, publisher_missed=0)
    live.exclude(stream_key__in=keys).update(publisher_missed=F("publisher_missed") + 1)
    cutoff = now - timedelta(seconds=settings.RIG_PUBLISHER_STALE_S)
    for stream in live.exclude(stream_key__in=keys).filter(publisher_seen_at__lt=cutoff):
        with transaction.atomic():
            locked = Stream.objects.select_for_update().get(pk=stream.pk)
            if locked.is_streaming and locked.node_id == node.pk:
                _session_end(locked, reason="publisher gone")
    # A node that was cut off long enough to be declared lost, and reports again with the same
    # publisher still connected, takes the session back: nothing reconnects. Not if the stream
    # went live elsewhere, or was deactivated or given a new key meanwhile.
    lost = Stream.objects.filter(
        node=node, is_streaming=False, is_active=True, stream_key__in=keys
    ).exclude(publish_client_id="")
    for stream in lost:
        with transaction.atomic():
            locked = Stream.objects.select_for_update().get(pk=stream.pk)
            status = locked.provision_status or {}
            if (
                not locked.is_streaming
                and locked.is_active
                and locked.node_id == node.pk
                and locked.publish_client_id
                and status.get("reason") == NODE_LOST
            ):
                _session_resume(locked)


def _session_resume(stream: Stream) -> None:
    now = timezone.now()
    status = dict(stream.provision_status or {})
    status.update(state="provisioning", reason=None, endedAt=None, resumedAt=now.isoformat())
    stream.is_streaming = True
    stream.publisher_seen_at = now
    stream.publisher_missed = 0
    stream.provision_status = status
    stream.save(
        update_fields=["is_streaming", "publisher_seen_at", "publisher_missed", "provision_status"]
    )
    logger.info("stream %s resumed on node %s after the node came back", stream.pk, stream.node_id)
    _nudge_after_commit(stream.node_id)
    _stream_event(stream, "stream.live")


@transaction.atomic
def publish_end(*, node: IngestNode, key: str, client_id: str) -> None:
    """Idempotent: only the session that ends is closed, whatever order hooks arrive in."""
    stream = stream_by_key(key=key, for_update=True)
    if (
        stream is not None
        and stream.is_streaming
        and stream.node_id == node.pk
        and stream.publish_client_id == client_id
    ):
        _session_end(stream, reason="publisher disconnected")


@transaction.atomic
def sessions_end_on_lost_node(*, node: IngestNode) -> list[Stream]:
    """The node stopped reporting: its live sessions are over. nginx's client id is kept, so a
    node that comes back with the same publisher takes the session back (publishers_seen); a
    publisher that reconnects instead starts a new session where it lands."""
    ended = []
    for stream in Stream.objects.select_for_update().filter(node=node, is_streaming=True):
        _session_end(stream, reason=NODE_LOST, keep_publisher=True)
        ended.append(stream)
    return ended


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
    _nudge_if_live(destination.stream)
    return destination


def relay_mute(*, destination: Destination, muted: bool) -> Destination:
    """Drop (or restore) the audio track to this destination only."""
    return destination_update(destination=destination, changes={"is_muted": muted})
