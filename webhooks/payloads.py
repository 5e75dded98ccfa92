"""Shapes of the webhooks endpoints' payloads: the OpenAPI schema documents them and `@payload`
renders every answer through them (rig.schema.payload)."""

from rest_framework import serializers

from webhooks.models import EVENTS, PING, DeliveryStatus


class WebhookPayload(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.CharField()
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENTS),
        help_text="The events it subscribes to; empty: every event.",
    )
    isActive = serializers.BooleanField()
    createdAt = serializers.DateTimeField()


class WebhookWithSecretPayload(WebhookPayload):
    """A webhook with its signing secret: shown when created and when the secret is rotated."""

    secret = serializers.CharField(help_text="The HMAC key every delivery is signed with.")


class WebhookDeletedPayload(serializers.Serializer):
    id = serializers.UUIDField()


class WebhookDeliveryPayload(serializers.Serializer):
    id = serializers.IntegerField()
    eventId = serializers.UUIDField(help_text="The event's id, the same on every attempt.")
    event = serializers.ChoiceField(choices=[*EVENTS, PING])
    status = serializers.ChoiceField(choices=DeliveryStatus.choices)
    responseCode = serializers.IntegerField(
        allow_null=True, help_text="The HTTP status of the last attempt, if it got an answer."
    )
    attempts = serializers.IntegerField()
    lastError = serializers.CharField(allow_null=True)
    createdAt = serializers.DateTimeField()
    deliveredAt = serializers.DateTimeField(allow_null=True)
    nextAttemptAt = serializers.DateTimeField(
        allow_null=True, help_text="When a pending delivery is tried next; null otherwise."
    )
