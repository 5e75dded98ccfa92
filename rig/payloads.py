"""Shapes of the operations endpoints' payloads (rig.monitoring): documented and rendered
through (rig.schema.payload)."""

from rest_framework import serializers


class HealthPayload(serializers.Serializer):
    status = serializers.CharField(help_text="Always `ok`.")


class ReadinessPayload(serializers.Serializer):
    """Each dependency checked, `ok`; one that fails makes the answer 503/1012 instead."""

    database = serializers.CharField(help_text="`ok`")
    broker = serializers.CharField(help_text="`ok`: the Celery broker's Redis answers PING.")
