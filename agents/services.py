"""Changes made by nodes (relay status reports, heartbeats, publisher liveness) and by
operators and the node watch (drain, lost nodes)."""

import logging
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.models import IngestNode, NodeWatch
from agents.node.protocol import LOG_LINES_KEPT, DisplayState, RelayState
from agents.node.relay import redact
from rig.api import ApiError, ErrorCode
from streams import pulls as stream_pulls
from streams import recordings as stream_recordings
from streams import sessions as stream_sessions
from streams.models import Destination, Pull, Recording, Relay, Session, Stream
from streams.selectors import from_epoch, live_streams
from webhooks.services import destination_event, events_emit

logger = logging.getLogger(__name__)

_RELAY_FIELDS = ["state", "bitrate_kbps", "fps", "bytes_sent", "restarts", "since", "last_error"]


def _relay_events(rows: list[Relay], *, previous: dict[int, str], owner: dict[int, Any]) -> None:
    """Webhook events for relays whose reported state changes what was stored (no row yet in
    this session: pending)."""
    events = []
    for row in rows:
        assert row.destination_id is not None
        event = destination_event(previous.get(row.destination_id, DisplayState.PENDING), row.state)
        if event:
            stream_id, owner_id = owner[row.destination_id]
            data = {
                "streamID": str(stream_id),
                "destinationId": row.destination_id,
                "service": row.service,
                "state": row.state,
                "lastError": row.last_error or None,  # redacted by the agent
            }
            events.append((owner_id, event, data))
    events_emit(events=events)


def _lock_streams(node: IngestNode, *, named: set[str], pulled: list[str]) -> None:
    """Lock order (streams.sessions): the node (the report's heartbeat), then every stream the
    report may write for, before any of their sessions, relays, pulls or recordings is written:
    those live here, those whose session was here and the report names (resumed, recorded),
    those pulled here. A user's change to one of them (the stream locked, then its pull, then
    its session ended) waits for the report, or the report for it; never each for the other.
    Each part of the union is found by an index (a plain OR of the three would scan)."""
    touched = (
        Session.objects.filter(node=node, ended_at__isnull=True).values("stream_id").order_by()
    ).union(
        Stream.objects.filter(session__node=node, stream_key__in={*named, *pulled})
        .values("pk")
        .order_by(),
        Pull.objects.filter(node=node, stream__stream_key__in=pulled)
        .values("stream_id")
        .order_by(),
    )
    locking = Stream.objects.select_for_update(of=("self",)).filter(pk__in=touched)
    list(locking.order_by("pk").values_list("pk", flat=True))


@transaction.atomic
def node_report(
    *,
    node: IngestNode,
    streams: list[dict[str, Any]],
    publishers: list[str] | None = None,
    load: dict[str, Any] | None = None,
    pulls: list[dict[str, Any]] | None = None,
    recordings: list[dict[str, Any]] | None = None,
) -> int:
    """Store what a node says about its relays; reports for streams it doesn't serve are ignored.

    Every report is the node's heartbeat. ``publishers`` (what nginx-rtmp receives right now)
    keeps live sessions vouched for, and ends those whose publisher vanished without
    on_publish_done (nginx restarted, crashed). Each relay's ``newLog`` lines are appended
    to its log, which keeps the last LOG_LINES_KEPT."""
    heartbeat: dict[str, Any] = {"last_seen_at": timezone.now(), "lost_at": None}
    if load is not None:
        heartbeat.update(relays_running=load.get("relays", 0), load_avg=load.get("loadAvg1"))
    IngestNode.objects.filter(pk=node.pk).update(**heartbeat)
    if node.lost_at is not None:
        logger.info("node %s reports again after being lost", node.name)
    _lock_streams(
        node,
        named={*(publishers or []), *(r["streamKey"] for r in recordings or [])},
        pulled=[r["streamKey"] for r in pulls or []],
    )
    if publishers is not None:
        stream_sessions.publishers_seen(node=node, keys=publishers)
        # The node runs no relay for a live session whose publisher it no longer lists (missed
        # where nginx should list it, publishers_seen) and whose stream it does not report (it
        # stopped them): they are stopped, not what they last said, until the session ends
        # (the publisher gone for RIG_PUBLISHER_STALE_S). Never a session just admitted, whose
        # publisher nginx may not list yet.
        reported = [report["streamKey"] for report in streams]
        Relay.objects.filter(
            session__node=node, session__ended_at__isnull=True, session__publisher_missed__gt=0
        ).exclude(state__in=(RelayState.STOPPED, RelayState.FAILED)).exclude(
            session__stream__stream_key__in=[*reported, *publishers]
        ).update(state=RelayState.STOPPED, bitrate_kbps=None, fps=None, updated_at=timezone.now())
    if pulls:
        stream_pulls.pulls_report(node=node, reports=pulls)
    if recordings is not None:
        stream_recordings.recordings_report(node=node, reports=recordings)
    if node.last_seen_at is None or node.lost_at is not None:
        # A node is up (first heartbeat, or back): pulls that found no node may go now, without
        # waiting for the node watch.
        stream_pulls.pulls_assign()
    keys = [report["streamKey"] for report in streams]
    served = {
        key: (stream_id, session_id, owner_id)
        for key, stream_id, session_id, owner_id in live_streams()
        .filter(session__node=node, stream_key__in=keys)
        .values_list("stream_key", "id", "session_id", "owner_id")
    }
    sessions = [session_id for _, session_id, _ in served.values()]
    destinations = {
        (pk, stream_id): (key, service)
        for pk, stream_id, key, service in Destination.objects.filter(
            stream_id__in=[stream_id for stream_id, _, _ in served.values()]
        ).values_list("id", "stream_id", "stream_key", "service")
    }
    stored = {
        (session_id, destination_id): state
        for session_id, destination_id, state in Relay.objects.filter(
            session_id__in=sessions
        ).values_list("session_id", "destination_id", "state")
    }
    # The stored logs only of the relays with new lines: the others' logs stay as they are,
    # neither read nor written back on every heartbeat.
    with_lines = {
        r["destinationId"] for report in streams for r in report["relays"] if r.get("newLog")
    }
    logs = (
        {
            (session_id, destination_id): log
            for session_id, destination_id, log in Relay.objects.filter(
                session_id__in=sessions, destination_id__in=with_lines
            ).values_list("session_id", "destination_id", "log")
        }
        if with_lines
        else {}
    )
    rows: dict[int, Relay] = {}  # by destination: a repeated entry counts once, the last
    previous: dict[int, str] = {}
    owner: dict[int, Any] = {}
    for report in streams:
        if report["streamKey"] not in served:
            continue
        stream_id, session_id, owner_id = served[report["streamKey"]]
        for relay in report["relays"]:
            destination = destinations.get((relay["destinationId"], stream_id))
            if destination is None:  # not this stream's destination (any more)
                continue
            destination_key, service = destination
            # The node redacts; this again, so text it missed never stores a key that would
            # then reach the relay API, the dashboard or a webhook.
            secrets = (report["streamKey"], destination_key)
            before = stored.get((session_id, relay["destinationId"]))
            # Stored lines were redacted when they came in: only the new ones need it.
            new = [redact(line, secrets) for line in relay.get("newLog", [])]
            log = [*logs.get((session_id, relay["destinationId"]), []), *new]
            rows[relay["destinationId"]] = Relay(
                session_id=session_id,
                destination_id=relay["destinationId"],
                service=service,
                state=relay["state"],
                bitrate_kbps=relay.get("bitrateKbps"),
                fps=relay.get("fps"),
                bytes_sent=relay.get("bytesSent", 0),
                restarts=relay.get("restarts", 0),
                since=from_epoch(relay.get("since")),
                last_error=redact(relay.get("lastError") or "", secrets),
                log=log[-LOG_LINES_KEPT:],
            )
            if before is not None:
                previous[relay["destinationId"]] = before
            owner[relay["destinationId"]] = (stream_id, owner_id)
    _relay_events(list(rows.values()), previous=previous, owner=owner)
    for fields, batch in (
        ([*_RELAY_FIELDS, "log", "updated_at"], [r for d, r in rows.items() if d in with_lines]),
        ([*_RELAY_FIELDS, "updated_at"], [r for d, r in rows.items() if d not in with_lines]),
    ):
        if batch:
            Relay.objects.bulk_create(
                batch,
                update_conflicts=True,
                unique_fields=["session", "destination"],
                update_fields=fields,
            )
    return len(rows)


def _node_lost_events(node: IngestNode, ended: list[Stream]) -> None:
    """node.lost to each owner whose live sessions were on the node, naming those streams."""
    by_owner: dict[Any, list[str]] = {}
    for stream in ended:
        by_owner.setdefault(stream.owner_id, []).append(str(stream.id))
    lost_at = node.lost_at.isoformat() if node.lost_at else None
    events_emit(
        events=[
            (
                owner,
                "node.lost",
                {"node": node.name, "region": node.region, "lostAt": lost_at, "streamIDs": ids},
            )
            for owner, ids in by_owner.items()
        ]
    )


def _api_answers() -> bool:
    """Whether the API answers /healthz at RIG_API_URL (where the nodes reach it); True when
    no URL is configured (then only the watch's own gaps count as outages)."""
    if not settings.RIG_API_URL:
        return True
    url = settings.RIG_API_URL.rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - operator's URL
            return bool(response.status == 200)
    except OSError:
        return False


def control_plane_up_since(now: datetime) -> datetime | None:
    """Since when the control plane has been able to receive heartbeats, as the node watch saw
    it: reset when the API stops answering, and when the watch itself did not run for three
    periods (the workers, or the whole control plane, were down). None: down now."""
    answers = _api_answers()
    period = timedelta(seconds=3 * settings.RIG_NODE_CHECK_S)
    with transaction.atomic():
        watch, _ = NodeWatch.objects.select_for_update().get_or_create(pk=1)
        if not answers:
            watch.up_since = None
        elif watch.up_since is None or watch.checked_at is None or now - watch.checked_at > period:
            watch.up_since = now
        watch.checked_at = now
        watch.save()
    return watch.up_since


def nodes_mark_lost() -> list[str]:
    """Nodes whose heartbeats stopped for RIG_NODE_STALE_S are lost: their sessions end and their
    publishers may reconnect elsewhere. When the node reports again it takes back the sessions
    nothing replaced, and stops the rest (streams.sessions.publishers_seen, /agents/streams).
    Silence is counted only over time the control plane was up to hear the node: after an
    outage every node gets the full RIG_NODE_STALE_S to report again.
    Safe to run twice or in two workers at once."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.RIG_NODE_STALE_S)
    up_since = control_plane_up_since(now)
    if up_since is None or up_since > cutoff:
        return []
    stale = IngestNode.objects.filter(lost_at__isnull=True, last_seen_at__lt=cutoff)
    lost = []
    for pk in stale.values_list("pk", flat=True):
        with transaction.atomic():
            # NO KEY: see agents.selectors._node_by_token_hash.
            node = stale.select_for_update(skip_locked=True, no_key=True).filter(pk=pk).first()
            if node is None:  # reported meanwhile, or another worker has it
                continue
            node.lost_at = now
            node.save(update_fields=["lost_at"])
            ended = stream_sessions.sessions_end_on_lost_node(node=node)
            stream_pulls.pulls_unassign(node=node)
            Recording.objects.filter(node=node, state=Recording.State.RECORDING).update(
                state=Recording.State.FAILED, ended_at=now, reason="node lost"
            )
            _node_lost_events(node, ended)
            silent = (now - node.last_seen_at).total_seconds() if node.last_seen_at else None
            logger.warning(
                "node %s lost: no heartbeat for %.1f s; %d live sessions ended",
                node.name,
                silent or 0.0,
                len(ended),
            )
            lost.append(node.name)
    return lost


def agent_request(node: IngestNode, path: str, body: bytes | None = None) -> urllib.request.Request:
    """A call to the node's agent at its ``agent_url`` (nudges, snapshots), with the secret
    the agent checks (agents.node.protocol.agent_secret). OSError when the node has none yet
    (a token from before it: `node_create` sets it again); the agent's poll is the backstop."""
    if not node.agent_secret:
        raise OSError(f"node {node.name} has no agent secret: give it its token again")
    headers = {"Authorization": f"Bearer {node.agent_secret}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return urllib.request.Request(  # noqa: S310 - operator-configured http(s) URL
        node.agent_url.rstrip("/") + path,
        data=body,
        method="POST" if body is not None else "GET",
        headers=headers,
    )


def stream_snapshot(*, stream: Stream) -> bytes:
    """The current picture of a live stream (JPEG, at most 2 s old), from the node that
    ingests it (agents.node.snapshots). 409 (1013) when the stream is not live, 503 (1012)
    when its node gives none."""
    session = stream.live_session
    if session is None:
        raise ApiError(ErrorCode.WRONG_STATE, "Stream is not live", 409)
    node = session.node
    if node is None or not node.agent_url:
        raise _no_picture()
    request = agent_request(node, f"/snapshot/{stream.stream_key}")
    try:
        with urllib.request.urlopen(request, timeout=settings.RIG_SNAPSHOT_TIMEOUT_S) as answer:  # noqa: S310
            jpeg: bytes = answer.read(8 * 1024 * 1024)
    except OSError as error:
        logger.info("no snapshot from node %s: %s", node.name, error)
        raise _no_picture() from None
    if not jpeg.startswith(b"\xff\xd8"):
        raise _no_picture()
    return jpeg


def recording_download(*, recording: Recording, byte_range: str | None) -> Any:
    """The recording's file from the node that holds it, as the agent answers (200, or 206 for
    a Range): a response to read in chunks. 503 (1012) when that node cannot serve it."""
    node = recording.node
    if node is None or not node.agent_url:
        raise _no_file()
    request = agent_request(node, f"/recordings/{recording.pk}")
    if byte_range:
        request.add_header("Range", byte_range)
    try:
        return urllib.request.urlopen(request, timeout=settings.RIG_SNAPSHOT_TIMEOUT_S)  # noqa: S310
    except urllib.error.HTTPError as error:
        if error.code == 416:
            raise ApiError(
                ErrorCode.INVALID_INPUT,
                "Invalid input",
                416,
                {"range": ["Not a range of this recording: bytes=first-last within its size."]},
            ) from None
        logger.info("no recording from node %s: HTTP %s", node.name, error.code)
        raise _no_file() from None
    except OSError as error:
        logger.info("no recording from node %s: %s", node.name, error)
        raise _no_file() from None


def recording_delete(*, recording: Recording) -> None:
    """Delete the file on its node, then the row. 409 (1013) while it records; 503 (1012) when
    the node cannot be reached (nothing changes: try again). A node that no longer exists
    holds nothing to delete."""
    if recording.state == Recording.State.RECORDING:
        raise ApiError(ErrorCode.WRONG_STATE, "Recording is still being written", 409)
    node = recording.node
    if node is not None and node.agent_url:
        request = agent_request(node, f"/recordings/{recording.pk}")
        request.method = "DELETE"
        try:
            with urllib.request.urlopen(request, timeout=settings.RIG_NUDGE_TIMEOUT_S):  # noqa: S310
                pass
        except OSError as error:
            logger.info("could not delete a recording on node %s: %s", node.name, error)
            raise ApiError(
                ErrorCode.UNAVAILABLE, "The recording's node cannot be reached: try again", 503
            ) from None
    recording.delete()


def recordings_expire() -> int:
    """Beat task: recordings older than RIG_RECORDING_RETENTION_DAYS are deleted (those whose
    node does not answer are tried again next time). How many went."""
    cutoff = timezone.now() - timedelta(days=settings.RIG_RECORDING_RETENTION_DAYS)
    expired = Recording.objects.filter(started_at__lt=cutoff).exclude(
        state=Recording.State.RECORDING
    )
    deleted = 0
    for recording in expired.select_related("node"):
        try:
            recording_delete(recording=recording)
        except ApiError:
            continue
        deleted += 1
    return deleted


def _no_file() -> ApiError:
    return ApiError(ErrorCode.UNAVAILABLE, "The recording's node cannot serve it now", 503)


def _no_picture() -> ApiError:
    return ApiError(ErrorCode.UNAVAILABLE, "No picture: the stream's node gave none", 503)


def node_update(
    *, node: IngestNode, is_draining: bool | None = None, capacity: int | None = None
) -> IngestNode:
    """An operator's change: drain (no new publishes, live ones go on) or capacity."""
    changed = []
    if is_draining is not None:
        node.is_draining = is_draining
        changed.append("is_draining")
    if capacity is not None:
        node.capacity = capacity
        changed.append("capacity")
    node.save(update_fields=changed)
    return node
