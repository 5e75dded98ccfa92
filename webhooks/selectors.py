"""Reads of webhooks, scoped to their owner: another tenant's id is as unknown as a missing one."""

import uuid

from django.conf import settings
from django.db.models import QuerySet

from accounts.models import User
from rig.api import not_found
from webhooks.models import WebhookDelivery, WebhookEndpoint


def webhook_list(*, user: User) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(owner=user)


def webhook_get(*, user: User, webhook_id: str) -> WebhookEndpoint:
    try:
        pk = uuid.UUID(str(webhook_id))
    except ValueError:
        raise not_found("Webhook") from None
    endpoint = WebhookEndpoint.objects.filter(owner=user, pk=pk).first()
    if endpoint is None:
        raise not_found("Webhook")
    return endpoint


def delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    """The endpoint's most recent deliveries, newest first."""
    return endpoint.deliveries.order_by("-id")[: settings.RIG_WEBHOOK_DELIVERIES_KEPT]
