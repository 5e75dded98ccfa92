"""Pulled sources: a stream may take its video from a URL (an RTSP camera, an RTMP or SRT
server, an HLS playlist) instead of waiting for OBS. One node pulls it, with a supervised ffmpeg
like a relay's, and publishes it into its own ingest under the stream's key with a token only
the pull knows; from nginx-rtmp's on_publish on it is a publish like any other (session, relays,
status, webhooks, capacity). A pushed publisher on a pull-mode key is refused (1009).

Which node pulls is decided here: the least loaded node that takes publishes, when the URL is
set or the stream activated, and again by the node watch when that node is lost.
"""

import hashlib
import hmac
import urllib.parse
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from agents.models import IngestNode
from agents.node.ingest import pull_publish_url
from agents.node.protocol import LOG_LINES_KEPT
from agents.node.relay import RelaySpec, redact, relay_secrets
from rig.api import ApiError, ErrorCode
from rig.ssrf import url_error
from streams.models import Pull, Stream
from streams.selectors import from_epoch
from streams.sessions import nudge_after_commit, session_end

# The schemes a pullUrl may use, with their default ports (SRT has none: give one).
PULL_SCHEMES: dict[str, int | None] = {
    "rtsp": 554,
    "rtsps": 322,
    "rtmp": 1935,
    "rtmps": 443,
    "srt": None,
    "http": 80,
    "https": 443,
}
PULL_URL_MAX = 1024


def pull_url_error(url: str) -> str | None:
    """Why a pullUrl is refused, or None. A camera's login may be in it; the host must be
    public, like a Custom destination's (the node checks again when it connects)."""
    return url_error(
        url,
        default_ports=PULL_SCHEMES,
        max_length=PULL_URL_MAX,
        allow_query=True,
        allow_credentials=True,
    )


def shown_url(url: str) -> str:
    """The pullUrl as it may be shown: its password and query values masked."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username}:***@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}=***" for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def pull_token(stream_key: str) -> str:
    """What the stream's pull adds to its publish so the hook knows it from a pushed publisher;
    derived from the key, so a new key makes a new token."""
    mac = hmac.new(settings.SECRET_KEY.encode(), b"rig pull:" + stream_key.encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def _spec(pull: Pull, stream_key: str) -> RelaySpec:
    """The pull's URLs as its node runs them, for their secrets (the port is not one)."""
    target = pull_publish_url(1935, stream_key, pull_token(stream_key))
    return RelaySpec(relay_id="", source_url=pull.url, target_url=target, pull=True)


def pull_admits(*, stream: Stream, node: IngestNode, token: str) -> None:
    """On publish: a pull-mode stream takes only its own pull, on the node that pulls it (the
    stream comes with its pull, if it has one: streams.selectors.stream_by_key_for_update)."""
    pull: Pull | None = getattr(stream, "pull", None)
    if pull is None:
        return
    if pull.node_id != node.pk or not hmac.compare_digest(
        token.encode(), pull_token(stream.stream_key).encode()
    ):
        raise ApiError(
            ErrorCode.IN_USE, "Stream takes its video from its pullUrl: pushing is refused", 409
        )


def pull_set(*, stream: Stream, url: str | None) -> None:
    """Set (or with None, remove) the stream's pullUrl; the stream row is locked and the URL
    checked. A live session from another source ends: the pull (or OBS) takes over."""
    pull = Pull.objects.filter(stream=stream).first()
    if url is None:
        if pull is not None:
            nudge_after_commit(pull.node_id)
            pull.delete()
            if stream.is_streaming:
                session_end(stream, reason="source changed")
        return
    if pull is not None and pull.url == url:
        return
    if stream.is_streaming:
        session_end(stream, reason="source changed")
    if pull is None:
        pull = Pull(stream=stream)
    else:
        nudge_after_commit(pull.node_id)
    pull.url = url
    if stream.is_active:
        pull_assign(pull)
    else:
        pull.node = None
        _pull_reset(pull)
        pull.save()


def _pull_reset(pull: Pull) -> None:
    pull.state, pull.bitrate_kbps, pull.fps, pull.since = "pending", None, None, None
    pull.restarts, pull.last_error, pull.log, pull.reported_at = 0, "", [], None


def pull_assign(pull: Pull) -> None:
    """Give the pull to the least loaded node that takes publishes (none: it waits, and the
    node watch tries again), and wake that node."""
    from agents.selectors import node_to_pull  # agents.selectors reads streams: no cycle

    node = node_to_pull()
    pull.node = node
    _pull_reset(pull)
    pull.save()
    nudge_after_commit(node.pk if node else None)


def pull_release(pull: Pull) -> None:
    """The stream was deactivated: its node stops pulling."""
    if pull.node_id is not None:
        nudge_after_commit(pull.node_id)
        pull.node = None
        _pull_reset(pull)
        pull.state = "stopped"
        pull.save()


def pulls_unassign(*, node: IngestNode) -> None:
    """The node is lost: its pulls wait for another node (pulls_assign, right after)."""
    Pull.objects.filter(node=node).update(node=None, state="pending", bitrate_kbps=None, fps=None)


def pulls_waiting() -> QuerySet[Pull]:
    """Pulls of active streams that no node (or a lost one) has."""
    return Pull.objects.filter(
        Q(node__isnull=True) | Q(node__lost_at__isnull=False), stream__is_active=True
    )


@transaction.atomic
def pulls_assign() -> int:
    """The node watch, and any node's heartbeat while pulls wait: pulls of active streams with
    no node, or on a lost node, go to another node (a draining node keeps its live pulls, as
    it keeps its live publishers). How many found a node."""
    moved = 0
    for pull in pulls_waiting().select_for_update(skip_locked=True, of=("self",)):
        pull_assign(pull)
        moved += pull.node_id is not None
    return moved


def pull_restart(*, stream: Stream) -> Pull:
    """Ask the pulling node to start the pull afresh (a new connection to the source)."""
    pull = Pull.objects.select_for_update().filter(stream=stream).first()
    if pull is None:
        raise ApiError(ErrorCode.WRONG_STATE, "Stream has no pullUrl", 409)
    if not stream.is_active:
        raise ApiError(ErrorCode.WRONG_STATE, "Stream is not active", 409)
    pull.restart_seq += 1
    pull.save(update_fields=["restart_seq"])
    nudge_after_commit(pull.node_id)
    return pull


def node_pulls(*, node: IngestNode) -> list[dict[str, Any]]:
    """The agent's desired pulls: what to pull, under which key and token."""
    pulls = Pull.objects.filter(node=node, stream__is_active=True).select_related("stream")
    return [
        {
            "streamID": str(pull.stream_id),
            "streamKey": pull.stream.stream_key,
            "url": pull.url,
            "token": pull_token(pull.stream.stream_key),
            "restartSeq": pull.restart_seq,
        }
        for pull in pulls.order_by("stream_id")
    ]


def pulls_report(*, node: IngestNode, reports: list[dict[str, Any]]) -> None:
    """Store what the node says about its pulls; reports for pulls it no longer has are
    ignored. The node redacts; this again, so text it missed never stores a secret."""
    by_key = {report["streamKey"]: report for report in reports}
    pulls = Pull.objects.filter(node=node, stream__stream_key__in=list(by_key)).select_related(
        "stream"
    )
    for pull in pulls:
        report = by_key[pull.stream.stream_key]
        secrets = (*relay_secrets(_spec(pull, pull.stream.stream_key)), pull.stream.stream_key)
        new = [redact(line, secrets) for line in report.get("newLog", [])]
        Pull.objects.filter(pk=pull.pk, node=node).update(
            state=report["state"],
            bitrate_kbps=report.get("bitrateKbps"),
            fps=report.get("fps"),
            restarts=report.get("restarts", 0),
            since=from_epoch(report.get("since")),
            last_error=redact(report.get("lastError") or "", secrets),
            log=[*pull.log, *new][-LOG_LINES_KEPT:],
            reported_at=timezone.now(),
        )


def stream_pull(stream: Stream) -> Pull | None:
    """The stream's pull, if it has one (loaded with the stream by stream_get_detailed)."""
    pull: Pull | None = getattr(stream, "pull", None)
    return pull


def source_payload(stream: Stream) -> dict[str, Any]:
    """GET /streams/{id}/source: the pull's URL (masked), node, state and figures, last error
    and last log lines. 409 (1013) for a push-mode stream."""
    pull = stream_pull(stream)
    if pull is None:
        raise ApiError(ErrorCode.WRONG_STATE, "Stream has no pullUrl: it takes a push", 409)
    state = pull.state
    fresh = timedelta(seconds=settings.RIG_RELAY_REPORT_FRESH_S)
    if not stream.is_active:
        state = "stopped"
    elif pull.node is None:
        state = "pending"  # waiting for a node that takes publishes
    elif pull.reported_at is not None and timezone.now() - pull.reported_at > fresh:
        state = "unknown"  # its node has gone quiet: its last word is not the truth
    running = state not in ("stopped", "pending", "unknown")
    return {
        "pullUrl": shown_url(pull.url),
        "node": pull.node.name if pull.node else None,
        "state": state,
        "bitrateKbps": pull.bitrate_kbps if running else None,
        "fps": pull.fps if running else None,
        "restarts": pull.restarts,
        "since": pull.since.isoformat() if pull.since and running else None,
        "lastError": pull.last_error or None,
        "log": pull.log[-LOG_LINES_KEPT:],
    }
