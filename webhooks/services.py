"""Webhook endpoints, event emission and the state machine of a delivery.

Emission is part of the caller's transaction: delivery rows are written with the change that
caused them, and the delivery task is enqueued only after commit. If the broker is down the
rows stay pending and ``delivery_sweep`` (run it periodically, e.g. from celery beat) sends them.
"""

import json
import logging
import random
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from agents.node.protocol import RelayState
from rig.api import enforce_limit, invalid_input
from rig.enqueue import enqueue_after_commit
from webhooks import sender
from webhooks.models import (
    EVENTS,
    PING,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    new_secret,
)

logger = logging.getLogger(__name__)


def _validated_url(url: str) -> str:
    error = sender.url_error(url)
    if error:
        raise invalid_input("url", error)
    return url


def _validated_events(events: Iterable[str]) -> list[str]:
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise invalid_input("events", f"Unknown events: {', '.join(unknown)}.")
    return [event for event in EVENTS if event in set(events)]  # a set, in a stable order


# --- endpoints -----------------------------------------------------------------------------


@transaction.atomic
def webhook_create(
    *, user: User, url: str, events: list[str] | None = None, is_active: bool = True
) -> WebhookEndpoint:
    enforce_limit(
        User.objects.filter(pk=user.pk),
        WebhookEndpoint.objects.filter(owner=user),
        settings.RIG_MAX_WEBHOOKS_PER_USER,
        what="webhook",
        field="webhooks",
        per="user",
    )
    return WebhookEndpoint.objects.create(
        owner=user,
        url=_validated_url(url),
        events=_validated_events(events or []),
        is_active=is_active,
    )


def webhook_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    events: list[str] | None = None,
    is_active: bool | None = None,
) -> WebhookEndpoint:
    changed = []
    if url is not None:
        endpoint.url = _validated_url(url)
        changed.append("url")
    if events is not None:
        endpoint.events = _validated_events(events)
        changed.append("events")
    if is_active is not None:
        endpoint.is_active = is_active
        changed.append("is_active")
    if changed:
        endpoint.save(update_fields=changed)
    return endpoint


def webhook_delete(*, endpoint: WebhookEndpoint) -> None:
    endpoint.delete()


def webhook_secret_rotate(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """A new secret at once: retries of earlier events are signed with it too."""
    endpoint.secret = new_secret()
    endpoint.save(update_fields=["secret"])
    return endpoint


@transaction.atomic
def webhook_test(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A `ping` to this endpoint only, active or not, whatever it subscribes to."""
    body = _body(PING, {"webhookId": str(endpoint.id)})
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, event_id=body["id"], event=PING, payload=body
    )
    _enqueue_after_commit([delivery.pk])
    return delivery


# --- events --------------------------------------------------------------------------------


def _body(event: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "event": event,
        "createdAt": timezone.now().isoformat(),
        "data": data,
    }


def _enqueue_after_commit(delivery_ids: list[int]) -> None:
    """Each delivery's send after commit; with the broker down its row stays pending for
    ``delivery_sweep``."""
    from webhooks.tasks import delivery_send  # tasks import services

    for delivery_id in delivery_ids:
        enqueue_after_commit(delivery_send, delivery_id)


def destination_event(previous: str, state: str) -> str | None:
    """The event a relay's state change is, if any: the first time live, live again after
    trouble, or newly failed."""
    if state == RelayState.LIVE and previous in {RelayState.RECONNECTING, RelayState.FAILED}:
        return "destination.recovered"
    if state == RelayState.LIVE and previous != RelayState.LIVE:
        return "destination.live"
    if state == RelayState.FAILED and previous != RelayState.FAILED:
        return "destination.failed"
    return None


def events_emit(*, events: list[tuple[uuid.UUID, str, dict[str, Any]]]) -> int:
    """Emit several (user_id, event, data) at once: one query for the endpoints of all users,
    one insert for the deliveries. Returns how many deliveries were created."""
    if not events:
        return 0
    endpoints = list(
        WebhookEndpoint.objects.filter(
            owner_id__in={user_id for user_id, _, _ in events}, is_active=True
        )
    )
    rows = []
    for user_id, event, data in events:
        if event not in EVENTS:
            raise ValueError(f"unknown webhook event {event!r}")
        body = _body(event, data)
        for endpoint in endpoints:
            if endpoint.owner_id == user_id and endpoint.wants(event):
                rows.append(
                    WebhookDelivery(
                        endpoint=endpoint, event_id=body["id"], event=event, payload=body
                    )
                )
    created = WebhookDelivery.objects.bulk_create(rows)
    _enqueue_after_commit([delivery.pk for delivery in created])
    return len(created)


def event_emit(*, user_id: uuid.UUID, event: str, data: dict[str, Any]) -> int:
    """Emit one event to the user's matching active endpoints, within the caller's transaction
    (call it where the change happens; nothing is sent if that transaction rolls back)."""
    return events_emit(events=[(user_id, event, data)])


# --- delivery ------------------------------------------------------------------------------


def backoff_seconds(attempt: int) -> float:
    """Wait before the attempt after `attempt`: base * 2^(attempt-1), capped, plus up to 25%."""
    base = settings.RIG_WEBHOOK_BACKOFF_MS / 1000
    delay = min(base * 2 ** (attempt - 1), settings.RIG_WEBHOOK_BACKOFF_MAX_S)
    return delay * (1 + random.random() / 4)  # noqa: S311 - jitter, not a secret


def _claim(delivery_id: int) -> WebhookDelivery | None:
    """Take the next attempt of a pending delivery that is due, or None (done, not due, or taken
    by another worker). The claim is a compare-and-set on `attempts`, and its lease (moving
    next_attempt_at past the request timeout) keeps the sweep away while the request runs."""
    now = timezone.now()
    delivery = (
        WebhookDelivery.objects.select_related("endpoint")
        .filter(pk=delivery_id, status=DeliveryStatus.PENDING)
        .first()
    )
    early = now + timedelta(seconds=1)  # a retry task may run a hair before its row says
    if delivery is None or (delivery.next_attempt_at and delivery.next_attempt_at > early):
        return None
    if delivery.attempts >= settings.RIG_WEBHOOK_MAX_ATTEMPTS:  # its last attempt was lost
        WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.FAILED, next_attempt_at=None
        )
        return None
    lease = now + timedelta(seconds=settings.RIG_WEBHOOK_TIMEOUT_MS / 1000 + 30)
    claimed = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=DeliveryStatus.PENDING, attempts=delivery.attempts
    ).update(attempts=delivery.attempts + 1, next_attempt_at=lease)
    if not claimed:
        return None
    delivery.attempts += 1
    return delivery


def _prune(endpoint_id: uuid.UUID) -> None:
    """Keep the newest RIG_WEBHOOK_DELIVERIES_KEPT deliveries of an endpoint."""
    keep = settings.RIG_WEBHOOK_DELIVERIES_KEPT
    oldest_kept = (
        WebhookDelivery.objects.filter(endpoint_id=endpoint_id)
        .order_by("-id")
        .values_list("id", flat=True)[keep - 1 : keep]
        .first()
    )
    if oldest_kept is not None:  # pending ones stay: they are still to be sent
        WebhookDelivery.objects.filter(endpoint_id=endpoint_id, id__lt=oldest_kept).exclude(
            status=DeliveryStatus.PENDING
        ).delete()


def _post(delivery: WebhookDelivery) -> tuple[int | None, str]:
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    return sender.post(
        url=delivery.endpoint.url,
        secret=delivery.endpoint.secret,
        webhook_id=str(delivery.event_id),
        timestamp=int(timezone.now().timestamp()),
        body=body,
        timeout=settings.RIG_WEBHOOK_TIMEOUT_MS / 1000,
    )


def delivery_attempt(*, delivery_id: int) -> float | None:
    """Make one attempt at a delivery. Returns the seconds until the next attempt when it should
    be retried, else None (delivered, failed for good, or nothing to do)."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return None
    endpoint = delivery.endpoint
    # Disabled since the event was queued: drop it (a ping is sent to disabled webhooks too).
    dropped = not endpoint.is_active and delivery.event != PING
    code, error = (None, "Webhook disabled: not sent.") if dropped else _post(delivery)
    now = timezone.now()
    retry_in: float | None = None
    fields: dict[str, Any] = {"response_code": code, "last_error": error[:200]}
    if code is not None and 200 <= code < 300:
        fields.update(status=DeliveryStatus.DELIVERED, delivered_at=now, next_attempt_at=None)
    elif dropped or delivery.attempts >= settings.RIG_WEBHOOK_MAX_ATTEMPTS:
        fields.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    else:
        retry_in = backoff_seconds(delivery.attempts)
        fields.update(next_attempt_at=now + timedelta(seconds=retry_in))
    WebhookDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(**fields)
    if retry_in is None:
        _prune(delivery.endpoint_id)
    return retry_in


def deliveries_due(*, limit: int = 500) -> list[int]:
    """Pending deliveries whose next attempt is due: never enqueued (broker down), or whose
    retry or in-flight attempt was lost with a worker."""
    now = timezone.now()
    stale = now - timedelta(seconds=60)  # leave fresh rows to the task enqueued on commit
    pending = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING)
    due = pending.filter(next_attempt_at__lte=now) | pending.filter(
        next_attempt_at__isnull=True, created_at__lte=stale
    )
    return list(due.order_by("id").values_list("id", flat=True)[:limit])
