"""Webhook endpoints users register, and the deliveries of signed events to them."""

import secrets
import uuid

from django.conf import settings
from django.db import models

from rig.crypto import EncryptedTextField

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret

# Events a user may subscribe to; `ping` is sent only by the test endpoint, to one webhook.
EVENTS = (
    "stream.live",
    "stream.ended",
    "destination.live",
    "destination.failed",
    "destination.recovered",
    "node.lost",
)
PING = "ping"


def new_secret() -> str:
    """256 bits from the OS CSPRNG. It is the HMAC key every delivery is signed with, so it
    cannot be hashed like a token: it is stored encrypted instead."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class WebhookEndpoint(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks"
    )
    url = models.CharField(max_length=2000)
    secret = EncryptedTextField(default=new_secret)  # encrypted at rest (rig.crypto)
    events = models.JSONField(default=list, blank=True)  # empty: every event
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return str(self.id)

    def wants(self, event: str) -> bool:
        return not self.events or event in self.events


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(models.Model):
    """One event for one endpoint; `payload` is the exact JSON body sent on every attempt."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_id = models.UUIDField(default=uuid.uuid4)
    event = models.CharField(max_length=32)
    payload = models.JSONField()
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # When a pending delivery may be attempted next (also the lease of an attempt in flight).
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event} #{self.pk}: {self.status}"
