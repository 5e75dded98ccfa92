"""Shapes of the agent API's payloads and the hooks' form: documented in the OpenAPI schema, and
every answer rendered through them (rig.schema.payload)."""

from rest_framework import serializers

from rig.api import ErrorCode
from streams.models import Service
from streams.payloads import TranscodePayload


class AgentDestinationPayload(serializers.Serializer):
    id = serializers.IntegerField()
    service = serializers.ChoiceField(choices=Service.choices)
    streamKey = serializers.CharField()
    rtmpUrl = serializers.CharField()
    isActive = serializers.BooleanField()
    isMuted = serializers.BooleanField()
    transcode = TranscodePayload(allow_null=True, help_text="Null: copy the stream as sent.")
    restartSeq = serializers.IntegerField(help_text="Changes when the user asks for a restart.")


class LiveStreamPayload(serializers.Serializer):
    streamID = serializers.UUIDField()
    streamKey = serializers.CharField()
    clientId = serializers.CharField(
        help_text="nginx's client id of the admitted publisher: the session relays serve."
    )
    destinations = AgentDestinationPayload(
        many=True, help_text="The stream's Stream Config, as /agents/config/{key} answers it."
    )
    record = serializers.BooleanField(
        help_text="Record this session: the stream's `record`, within its owner's quota."
    )


class AgentPullPayload(serializers.Serializer):
    streamID = serializers.UUIDField()
    streamKey = serializers.CharField(help_text="The key to publish the pulled stream under.")
    url = serializers.CharField(help_text="The stream's pullUrl, with its credentials.")
    token = serializers.CharField(
        help_text="Added to the publish as `?pull=<token>`: the hook admits only the pull."
    )
    restartSeq = serializers.IntegerField(help_text="Changes when the user asks for a restart.")


class StatusRecordedPayload(serializers.Serializer):
    relays = serializers.IntegerField(help_text="How many relay reports were recorded.")


class HookResultPayload(serializers.Serializer):
    event = serializers.CharField()
    ms = serializers.FloatField(
        help_text="Time the view spent (token, form, decision), in milliseconds."
    )


class HookForm(serializers.Serializer):
    """What nginx-rtmp posts (form-encoded); it sends more fields, which are ignored."""

    app = serializers.CharField(help_text="The RTMP application: `live`.")
    name = serializers.CharField(help_text="The stream key.")
    clientid = serializers.CharField(required=False, help_text="nginx's id of the connection.")


# What the hook answers besides 200 (any non-2xx refuses the publisher): 503 is the node
# draining or not reporting (1009) or at capacity (1011).
HOOK_ERRORS = {
    401: [ErrorCode.INVALID_CREDENTIALS],
    403: [ErrorCode.INVALID_CREDENTIALS],
    409: [ErrorCode.IN_USE],
    503: [ErrorCode.IN_USE, ErrorCode.LIMIT_REACHED],
}


# --- operators' view of the nodes (agents.selectors.node_payload) ----------------------------

NODE_HEALTH = ["healthy", "stale", "lost", "unknown"]


class NodeLoadPayload(serializers.Serializer):
    streams = serializers.IntegerField(help_text="Live streams on the node.")
    relays = serializers.IntegerField(help_text="Relays those streams want (active destinations).")
    relaysRunning = serializers.IntegerField(help_text="Relays running, as the node last reported.")
    loadAvg1 = serializers.FloatField(
        allow_null=True, help_text="The host's 1-minute load average, as last reported."
    )
    utilization = serializers.FloatField(
        allow_null=True, help_text="relays / capacity; null when the capacity is 0."
    )


class NodePayload(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    region = serializers.CharField()
    hostname = serializers.CharField(allow_blank=True)
    rtmpUrl = serializers.CharField(help_text="The public ingest URL OBS connects to.")
    capacity = serializers.IntegerField(help_text="The most relays the node may run.")
    isDraining = serializers.BooleanField(help_text="Draining: no new publishes, live ones go on.")
    health = serializers.ChoiceField(
        choices=NODE_HEALTH,
        help_text="stale: heartbeats late, not yet lost; unknown: it never reported.",
    )
    lastSeen = serializers.DateTimeField(allow_null=True)
    heartbeatAgeS = serializers.FloatField(
        allow_null=True, help_text="Seconds since the last heartbeat."
    )
    lostAt = serializers.DateTimeField(allow_null=True)
    load = NodeLoadPayload()


class IngestPayload(serializers.Serializer):
    name = serializers.CharField(help_text="The node's name (`default`: RIG_INGEST_URL).")
    region = serializers.CharField(allow_null=True)
    rtmpUrl = serializers.CharField(help_text="OBS's Server field; the stream key goes after it.")
    recommended = serializers.BooleanField(help_text="The least loaded (in the asked region).")
