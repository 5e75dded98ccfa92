"""Shapes of the agent API's payloads and the hooks' form, for the OpenAPI schema."""

from rest_framework import serializers

from rig.api import ErrorCode
from streams.models import Service


class AgentDestinationPayload(serializers.Serializer):
    id = serializers.IntegerField()
    service = serializers.ChoiceField(choices=Service.choices)
    streamKey = serializers.CharField()
    rtmpUrl = serializers.CharField()
    isActive = serializers.BooleanField()
    isMuted = serializers.BooleanField()
    restartSeq = serializers.IntegerField(help_text="Changes when the user asks for a restart.")


class LiveStreamPayload(serializers.Serializer):
    streamID = serializers.UUIDField()
    streamKey = serializers.CharField()


class StatusRecordedPayload(serializers.Serializer):
    relays = serializers.IntegerField(help_text="How many relay reports were recorded.")


class HookResultPayload(serializers.Serializer):
    event = serializers.CharField()
    ms = serializers.FloatField(help_text="Time spent deciding, in milliseconds.")


class HookForm(serializers.Serializer):
    """What nginx-rtmp posts (form-encoded); it sends more fields, which are ignored."""

    app = serializers.CharField(help_text="The RTMP application: `live`.")
    name = serializers.CharField(help_text="The stream key.")
    clientid = serializers.CharField(required=False, help_text="nginx's id of the connection.")


# What the hook answers besides 200 (any non-2xx refuses the publisher).
HOOK_ERRORS = {
    401: [ErrorCode.INVALID_CREDENTIALS],
    403: [ErrorCode.INVALID_CREDENTIALS],
    409: [ErrorCode.IN_USE],
    503: [ErrorCode.IN_USE],
}
