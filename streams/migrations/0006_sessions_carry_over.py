# Each stream's session record (provision_status and its columns) becomes a Session row, and
# the relays' last reports become that session's relays.

from datetime import datetime

from django.db import migrations
from django.utils import timezone


def _when(value):
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def carry_over(apps, schema_editor):
    Stream = apps.get_model("streams", "Stream")
    Session = apps.get_model("streams", "Session")
    LegacyRelay = apps.get_model("streams", "LegacyRelay")
    Relay = apps.get_model("streams", "Relay")
    for stream in Stream.objects.exclude(provision_status=None).select_related("node"):
        status = stream.provision_status or {}
        node = stream.node
        started = _when(status.get("startedAt")) or stream.created_at
        ended = None if stream.is_streaming else (_when(status.get("endedAt")) or timezone.now())
        session = Session.objects.create(
            stream=stream,
            node=node,
            node_name=str(status.get("node") or (node.name if node else ""))[:64],
            region=str(status.get("region") or (node.region if node else ""))[:64],
            hostname=str((status.get("server") or {}).get("hostname") or "")[:255],
            ingest_url=str(status.get("ingestUrl") or (node.rtmp_url if node else ""))[:255],
            client_id=stream.publish_client_id,
            started_at=started,
            ended_at=ended,
            resumed_at=_when(status.get("resumedAt")),
            end_reason=str(status.get("reason") or "")[:64] if ended else "",
            publisher_seen_at=stream.publisher_seen_at,
            publisher_missed=stream.publisher_missed,
        )
        stream.session = session
        stream.save(update_fields=["session"])
        for old in LegacyRelay.objects.filter(destination__stream=stream).select_related(
            "destination"
        ):
            Relay.objects.create(
                session=session,
                destination=old.destination,
                service=old.destination.service,
                state=old.state if old.state != "pending" else "starting",
                bitrate_kbps=old.bitrate_kbps,
                fps=old.fps,
                bytes_sent=old.bytes_sent,
                restarts=old.restarts,
                since=old.since,
                last_error=old.last_error,
                log=old.log,
            )


class Migration(migrations.Migration):
    dependencies = [("streams", "0005_sessions")]

    operations = [migrations.RunPython(carry_over, migrations.RunPython.noop)]
