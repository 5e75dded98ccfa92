"""Shapes of the streams endpoints' payloads: the OpenAPI schema documents them and `@payload`
renders every answer through them (rig.schema.payload)."""

from rest_framework import serializers

from agents.node.protocol import RELAY_STATES, REPORTED_STATES
from rig.api import StrictInput, StrictIntegerField
from streams.models import Recording, Service

PROVISION_STATES = ["provisioning", "live", "degraded", "stopped"]
PULL_STATES = ["pending", "unknown", *REPORTED_STATES]


class TranscodePayload(StrictInput):
    """A transcode profile: the destination gets H.264 at this height (width keeps the aspect),
    frame rate and bitrates, and AAC audio; the other destinations keep the stream as sent.
    The same class reads a destination's ``transcode`` input: its bounds are defined once."""

    height = StrictIntegerField(min_value=144, max_value=2160, help_text="Even, in pixels.")
    fps = StrictIntegerField(min_value=1, max_value=60)
    videoBitrateKbps = StrictIntegerField(min_value=100, max_value=20000)
    audioBitrateKbps = StrictIntegerField(min_value=32, max_value=320)

    def validate_height(self, value: int) -> int:
        if value % 2:
            raise serializers.ValidationError("Must be even (H.264 needs even sizes).")
        return value


class DestinationPayload(serializers.Serializer):
    id = serializers.IntegerField()
    service = serializers.ChoiceField(choices=Service.choices)
    streamKey = serializers.CharField()
    rtmpUrl = serializers.CharField(help_text="Where the relay pushes: server URL and key.")
    isActive = serializers.BooleanField()
    serverUrl = serializers.CharField(help_text="The service's ingest base, or the Custom URL.")
    isMuted = serializers.BooleanField()
    transcode = TranscodePayload(allow_null=True, help_text="Null: the stream is copied as sent.")


class ServicePayload(serializers.Serializer):
    name = serializers.ChoiceField(
        choices=Service.choices, help_text="The `service` value of a destination."
    )
    ingestUrl = serializers.CharField(
        allow_null=True, help_text="Where its relays push (the key is added); null for Custom."
    )
    scheme = serializers.CharField(allow_null=True, help_text="The ingest URL's scheme.")
    schemes = serializers.ListField(
        child=serializers.CharField(),
        help_text="The schemes its URL may use (Custom: those a serverUrl may use; srt:// "
        "takes the key as its streamid).",
    )
    needsServerUrl = serializers.BooleanField(help_text="Whether a destination gives serverUrl.")
    keyFormat = serializers.CharField(help_text="What a streamKey for it may contain.")


class RelayStatusPayload(serializers.Serializer):
    id = serializers.IntegerField(help_text="The destination's id.")
    service = serializers.ChoiceField(choices=Service.choices)
    state = serializers.ChoiceField(choices=RELAY_STATES)
    bitrateKbps = serializers.FloatField(allow_null=True)
    fps = serializers.FloatField(allow_null=True)
    bytesSent = serializers.IntegerField()
    restarts = serializers.IntegerField()
    since = serializers.DateTimeField(allow_null=True)
    lastError = serializers.CharField(allow_null=True)


class RelayPayload(RelayStatusPayload):
    """One relay as the relay API shows it: its status plus the destination's controls."""

    isActive = serializers.BooleanField()
    isMuted = serializers.BooleanField()


class RelayDetailPayload(RelayPayload):
    log = serializers.ListField(
        child=serializers.CharField(),
        help_text="The relay's last log lines (at most 100), stream keys masked as `***`.",
    )


class IngestServerPayload(serializers.Serializer):
    hostname = serializers.CharField(allow_blank=True)
    lastCheck = serializers.DateTimeField(
        allow_null=True,
        help_text="The serving node's last heartbeat while live (null: it never reported).",
    )


class ProvisionStatusPayload(serializers.Serializer):
    state = serializers.ChoiceField(choices=PROVISION_STATES)
    reason = serializers.CharField(
        allow_null=True,
        help_text="Why the session ended (`publisher disconnected`, `publisher gone`, "
        "`stream key changed`, `stream deactivated`, `node lost`); null while it lasts.",
    )
    node = serializers.CharField()
    region = serializers.CharField()
    server = IngestServerPayload()
    ingestUrl = serializers.CharField()
    startedAt = serializers.DateTimeField()
    endedAt = serializers.DateTimeField(allow_null=True)
    resumedAt = serializers.DateTimeField(
        allow_null=True, help_text="When its node came back after being lost (null: it did not)."
    )
    destinations = RelayStatusPayload(many=True)


class StreamPayload(serializers.Serializer):
    id = serializers.UUIDField()
    streamKey = serializers.CharField()
    destinations = DestinationPayload(
        many=True, allow_null=True, help_text="Null in lists and when there are none."
    )
    provisionStatus = ProvisionStatusPayload(
        allow_null=True, help_text="Null in lists and until the stream first goes live."
    )
    isStreaming = serializers.BooleanField()
    isActive = serializers.BooleanField()
    ingestServer = serializers.CharField(help_text="OBS's Server field.")
    ingestUrl = serializers.CharField(help_text="Server and stream key joined.")
    pullUrl = serializers.CharField(
        allow_null=True,
        help_text="Where the stream's video is pulled from (password and query values shown as "
        "`***`); null: it takes a push (OBS).",
    )
    record = serializers.BooleanField(help_text="Whether live sessions are recorded.")


class RecordingPayload(serializers.Serializer):
    id = serializers.UUIDField()
    streamID = serializers.UUIDField()
    startedAt = serializers.DateTimeField()
    endedAt = serializers.DateTimeField(allow_null=True, help_text="Null while it records.")
    durationS = serializers.FloatField()
    bytes = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Recording.State.choices)
    reason = serializers.CharField(
        allow_null=True,
        help_text="Why it stopped, when not because the session ended: ffmpeg's error (a full "
        "disk, say), `storage quota reached`, `node lost`.",
    )
    node = serializers.CharField(help_text="The node that holds the file.")


class RecordingDeletedPayload(serializers.Serializer):
    id = serializers.UUIDField()


class SourcePayload(serializers.Serializer):
    pullUrl = serializers.CharField(help_text="Password and query values shown as `***`.")
    node = serializers.CharField(allow_null=True, help_text="The node pulling it.")
    state = serializers.ChoiceField(
        choices=[*PULL_STATES],
        help_text="`pending`: waiting for a node; `unknown`: its node has gone quiet; "
        "`stopped`: the stream is deactivated; else the pull's own state, as a relay's.",
    )
    bitrateKbps = serializers.FloatField(allow_null=True)
    fps = serializers.FloatField(allow_null=True)
    restarts = serializers.IntegerField()
    since = serializers.DateTimeField(allow_null=True)
    lastError = serializers.CharField(allow_null=True)
    log = serializers.ListField(
        child=serializers.CharField(),
        help_text="The pull's last log lines (at most 100), secrets masked as `***`.",
    )


class StreamKeyPayload(serializers.Serializer):
    key = serializers.CharField()
    streamID = serializers.UUIDField()


class StreamDeletedPayload(serializers.Serializer):
    id = serializers.UUIDField()


class DestinationDeletedPayload(serializers.Serializer):
    id = serializers.IntegerField()


class SessionRelayPayload(serializers.Serializer):
    id = serializers.IntegerField(
        allow_null=True, help_text="The destination's id (null: deleted)."
    )
    service = serializers.ChoiceField(choices=Service.choices)
    state = serializers.ChoiceField(
        choices=REPORTED_STATES,
        help_text="The last state its node reported (stopped once the session ended).",
    )
    bytesSent = serializers.IntegerField()
    restarts = serializers.IntegerField()
    lastError = serializers.CharField(allow_null=True)


class SessionPayload(serializers.Serializer):
    id = serializers.UUIDField()
    startedAt = serializers.DateTimeField()
    endedAt = serializers.DateTimeField(allow_null=True, help_text="Null while it is live.")
    resumedAt = serializers.DateTimeField(
        allow_null=True, help_text="When its node came back after being lost, if it did."
    )
    durationS = serializers.FloatField(help_text="Seconds from start to end (or to now).")
    reason = serializers.CharField(
        allow_null=True, help_text="Why it ended (see provisionStatus.reason); null while live."
    )
    node = serializers.CharField()
    region = serializers.CharField()
    destinations = SessionRelayPayload(
        many=True, help_text="Each relay the session ran, with its bytes and restarts."
    )
