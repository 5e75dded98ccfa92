"""Changes made by nodes: relay status reports and publisher liveness."""

from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents.models import IngestNode
from streams import services as stream_services
from streams.models import Destination, Relay, RelayState, Stream
from webhooks.services import destination_event, events_emit

_RELAY_FIELDS = ["state", "bitrate_kbps", "fps", "bytes_sent", "restarts", "since", "last_error"]


def _since(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, tz=UTC) if epoch else None


def _relay_events(rows: list[Relay], *, stream_of: dict[int, Any]) -> None:
    """Webhook events for relays whose reported state changes what was stored: one query reads
    the previous states (no row yet: pending) with each destination's service and owner."""
    if not rows:
        return
    before = {
        pk: (state or RelayState.PENDING, service, owner_id)
        for pk, state, service, owner_id in Destination.objects.filter(
            pk__in=[row.destination_id for row in rows]
        ).values_list("pk", "relay__state", "service", "stream__owner_id")
    }
    events = []
    for row in rows:
        if row.destination_id not in before:
            continue  # deleted since this report was checked
        previous, service, owner_id = before[row.destination_id]
        event = destination_event(previous, row.state)
        if event:
            data = {
                "streamID": str(stream_of[row.destination_id]),
                "destinationId": row.destination_id,
                "service": service,
                "state": row.state,
                "lastError": row.last_error or None,  # redacted by the agent
            }
            events.append((owner_id, event, data))
    events_emit(events=events)


@transaction.atomic
def node_report(
    *, node: IngestNode, streams: list[dict[str, Any]], publishers: list[str] | None = None
) -> int:
    """Store what a node says about its relays; reports for streams it doesn't serve are ignored.

    ``publishers`` (what nginx-rtmp receives right now) keeps live sessions vouched for, and
    ends those whose publisher vanished without on_publish_done (nginx restarted, crashed)."""
    IngestNode.objects.filter(pk=node.pk).update(last_seen_at=timezone.now())
    if publishers is not None:
        stream_services.publishers_seen(node=node, keys=publishers)
    keys = [report["streamKey"] for report in streams]
    served = dict(
        Stream.objects.filter(node=node, is_streaming=True, stream_key__in=keys).values_list(
            "stream_key", "id"
        )
    )
    owned = set(
        Destination.objects.filter(stream_id__in=served.values()).values_list("id", "stream_id")
    )
    rows = []
    for report in streams:
        stream_id = served.get(report["streamKey"])
        for relay in report["relays"]:
            if (relay["destinationId"], stream_id) not in owned:
                continue
            rows.append(
                Relay(
                    destination_id=relay["destinationId"],
                    state=relay["state"],
                    bitrate_kbps=relay.get("bitrateKbps"),
                    fps=relay.get("fps"),
                    bytes_sent=relay.get("bytesSent", 0),
                    restarts=relay.get("restarts", 0),
                    since=_since(relay.get("since")),
                    last_error=relay.get("lastError") or "",
                    log=relay.get("log", []),
                )
            )
    _relay_events(rows, stream_of=dict(owned))
    Relay.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["destination"],
        update_fields=[*_RELAY_FIELDS, "log", "updated_at"],
    )
    return len(rows)
