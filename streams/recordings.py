"""Recordings (WCS's recorder): with ``record`` on, the node that serves a live session records
it as fragmented MP4 (agents.node.recorder) and reports each file; rows here mirror those
reports. Each user's recordings count against RIG_RECORDING_QUOTA_MB: at the quota a new
``record`` is refused and running recorders are stopped. Downloads and deletions go to the node
that holds the file (agents.services)."""

from typing import Any

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from agents.models import IngestNode
from agents.node.relay import redact
from rig.api import ApiError, ErrorCode, not_found
from streams.models import Recording, Stream
from streams.selectors import from_epoch, iso_or_none, uuid_or_none
from streams.sessions import nudge_if_live

QUOTA_REACHED = "storage quota reached"


def quota_bytes() -> int:
    return int(settings.RIG_RECORDING_QUOTA_MB) * 1024 * 1024


def owners_over_quota(owner_ids: set[Any]) -> set[Any]:
    """Which of these users' recordings use their whole quota (one grouped query)."""
    if not owner_ids:
        return set()
    used = (
        Recording.objects.filter(owner_id__in=owner_ids)
        .values("owner_id")
        .annotate(total=Sum("bytes"))
        .filter(total__gte=quota_bytes())
    )
    return {row["owner_id"] for row in used}


def _quota_error(owner_id: Any) -> ApiError:
    used = Recording.objects.filter(owner_id=owner_id).aggregate(total=Sum("bytes"))["total"] or 0
    mb = settings.RIG_RECORDING_QUOTA_MB
    return ApiError(
        ErrorCode.LIMIT_REACHED,
        "Recording storage quota reached",
        409,
        {"record": [f"{used / 1048576:.0f} of {mb} MB used: delete recordings to record again."]},
    )


def record_set(*, stream: Stream, record: bool) -> None:
    """Turn recording on or off (the stream row is locked); a live session starts or stops
    being recorded at once."""
    if record and owners_over_quota({stream.owner_id}):
        raise _quota_error(stream.owner_id)
    if record != stream.record:
        stream.record = record
        stream.save(update_fields=["record"])
        nudge_if_live(stream)


def recordings_report(*, node: IngestNode, reports: list[dict[str, Any]]) -> None:
    """Store what the node says about its recordings. A new one is taken only for a stream whose
    latest session is on that node; one the node stopped listing while it was still recording
    ended with the node's agent."""
    keys = {report["streamKey"] for report in reports}
    streams = {
        stream.stream_key: stream
        for stream in Stream.objects.filter(stream_key__in=keys, session__node=node)
    }
    ids = [str(report["id"]) for report in reports]
    known = {str(row.pk): row for row in Recording.objects.filter(pk__in=ids)}
    over = owners_over_quota({stream.owner_id for stream in streams.values()})
    for report in reports:
        row = known.get(str(report["id"]))
        stream = streams.get(report["streamKey"])
        if row is None and stream is None:
            continue  # not a stream this node serves
        if row is not None and row.node_id != node.pk:
            continue  # another node's recording: not this one's to say
        if row is None:
            assert stream is not None
            row = Recording(id=report["id"], stream=stream, owner_id=stream.owner_id, node=node)
            row.node_name = node.name
        secrets = (report["streamKey"],)
        row.started_at = from_epoch(report["startedAt"]) or timezone.now()
        row.ended_at = from_epoch(report.get("endedAt"))
        row.duration_s = report.get("durationS") or 0.0
        row.bytes = report.get("bytes") or 0
        row.state = report["state"]
        reason = redact(report.get("error") or "", secrets)
        if row.state == Recording.State.DONE and row.owner_id in over and not reason:
            reason = QUOTA_REACHED  # the control plane stopped it
        row.reason = reason
        row.save()
    Recording.objects.filter(node=node, state=Recording.State.RECORDING).exclude(pk__in=ids).update(
        state=Recording.State.FAILED,
        ended_at=timezone.now(),
        reason="its node's agent stopped while recording",
    )


def recording_payload(row: Recording) -> dict[str, Any]:
    return {
        "id": str(row.pk),
        "streamID": str(row.stream_id),
        "startedAt": iso_or_none(row.started_at),
        "endedAt": iso_or_none(row.ended_at),
        "durationS": round(row.duration_s, 2),
        "bytes": row.bytes,
        "state": row.state,
        "reason": row.reason or None,
        "node": row.node_name,
    }


def recording_list(*, stream: Stream) -> list[dict[str, Any]]:
    return [recording_payload(row) for row in stream.recordings.all()]


def recording_get(*, user: Any, recording_id: str) -> Recording:
    """The user's own recording; anyone else's is the same 404 as a missing one."""
    pk = uuid_or_none(recording_id)
    row = Recording.objects.filter(pk=pk, owner=user).select_related("node").first() if pk else None
    if row is None:
        raise not_found("Recording")
    return row
