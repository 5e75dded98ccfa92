"""Streams endpoints of the rig v1 API, plus stream/destination management extensions."""

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import request_user
from rig.api import (
    ApiError,
    ErrorCode,
    StrictBooleanField,
    StrictCharField,
    StrictInput,
    ok,
    parse,
)
from rig.schema import payload
from streams import selectors, services
from streams.destinations import destination_fields, ingest_base, service_list
from streams.models import Destination, Service, Stream
from streams.payloads import (
    DestinationDeletedPayload,
    DestinationPayload,
    RelayDetailPayload,
    RelayPayload,
    ServicePayload,
    SessionPayload,
    StreamDeletedPayload,
    StreamKeyPayload,
    StreamPayload,
    TranscodePayload,
)
from streams.pulls import PULL_URL_MAX, shown_url, stream_pull


def destination_payload(destination: Destination) -> dict[str, Any]:
    return {
        **destination_fields(destination),
        "serverUrl": ingest_base(destination.service, destination.server_url),
    }


def stream_payload(stream: Stream, destinations: list[Destination] | None) -> dict[str, Any]:
    """The seed's stream shape; destinations/provisionStatus only where the seed shows them."""
    node = stream.session.node if stream.session else None
    server = node.rtmp_url if node else settings.RIG_INGEST_URL
    return {
        "id": str(stream.id),
        "streamKey": stream.stream_key,
        "destinations": [destination_payload(d) for d in destinations] if destinations else None,
        "provisionStatus": (
            selectors.provision_status(stream, destinations) if destinations is not None else None
        ),
        "isStreaming": stream.is_streaming,
        "isActive": stream.is_active,
        "ingestServer": server,
        "ingestUrl": f"{server.rstrip('/')}/{stream.stream_key}",
        "pullUrl": shown_url(pull.url) if (pull := stream_pull(stream)) else None,
        "record": stream.record,
    }


class StreamListCreateApi(APIView):
    @payload(StreamPayload, many=True)
    def get(self, request: Request) -> Response:
        streams = selectors.stream_list(user=request_user(request)).select_related(
            "session__node", "pull"
        )
        return ok("Stream list for user", [stream_payload(s, None) for s in streams])

    @payload(StreamPayload, errors={409: [ErrorCode.LIMIT_REACHED]})
    def post(self, request: Request) -> Response:
        stream = services.stream_create(user=request_user(request))
        return ok("New stream created", stream_payload(stream, None))


class StreamDetailApi(APIView):
    class UpdateSerializer(StrictInput):
        isActive = StrictBooleanField(required=False, source="is_active")
        pullUrl = StrictCharField(
            required=False,
            allow_null=True,
            max_length=PULL_URL_MAX,
            trim_whitespace=False,
            source="pull_url",
            help_text="Pull the stream's video from this URL (rtsp, rtsps, rtmp, rtmps, srt, "
            "http(s) for HLS) instead of taking a push; null: back to push mode.",
        )
        record = StrictBooleanField(
            required=False, help_text="Record every live session (fragmented MP4) on its node."
        )

    def _detail(self, request: Request, stream_id: str) -> dict[str, Any]:
        stream = selectors.stream_get_detailed(user=request_user(request), stream_id=stream_id)
        return stream_payload(stream, list(stream.destinations.all()))

    @payload(StreamPayload)
    def get(self, request: Request, stream_id: str) -> Response:
        return ok("Stream detail", self._detail(request, stream_id))

    @payload(StreamPayload, errors={409: [ErrorCode.LIMIT_REACHED]})
    def patch(self, request: Request, stream_id: str) -> Response:
        stream = selectors.stream_get(user=request_user(request), stream_id=stream_id)
        data = parse(self.UpdateSerializer, request)
        if not data:
            raise ApiError(
                ErrorCode.MISSING_INPUT,
                "Missing required input",
                400,
                {"isActive": ["Give isActive, pullUrl, record, or several of them."]},
            )
        services.stream_update(stream=stream, **data)
        return ok("Stream updated", self._detail(request, stream_id))

    @payload(StreamDeletedPayload)
    def delete(self, request: Request, stream_id: str) -> Response:
        stream = selectors.stream_get(user=request_user(request), stream_id=stream_id)
        deleted_id = str(stream.id)  # the canonical spelling, whatever the path said
        services.stream_delete(stream=stream)
        return ok("Stream deleted", {"id": deleted_id})


class StreamChangeKeyApi(APIView):
    @payload(StreamKeyPayload)
    def post(self, request: Request, stream_id: str) -> Response:
        stream = selectors.stream_get(user=request_user(request), stream_id=stream_id)
        stream = services.stream_key_rotate(stream=stream)
        return ok("New stream key", {"key": stream.stream_key, "streamID": str(stream.id)})


class ServiceListApi(APIView):
    """The services a destination may use, where each one's ingest is and what key it takes:
    public, so clients need not hard-code them."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @payload(ServicePayload, many=True)
    def get(self, request: Request) -> Response:
        return ok("Supported services", service_list())


class _DestinationKey(StrictCharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=256, trim_whitespace=False, **kwargs)


class _ServerUrl(StrictCharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=512, trim_whitespace=False, **kwargs)


def _transcode(**kwargs: Any) -> TranscodePayload:
    return TranscodePayload(
        required=False,
        allow_null=True,
        help_text="Transcode for this destination only (H.264 + AAC); null: copy as sent.",
        **kwargs,
    )


class DestinationAddApi(APIView):
    class InputSerializer(StrictInput):
        service = serializers.ChoiceField(choices=Service.choices)
        streamKey = _DestinationKey()
        serverUrl = _ServerUrl(required=False)
        transcode = _transcode()

    @payload(DestinationPayload, errors={409: [ErrorCode.LIMIT_REACHED]})
    def post(self, request: Request, stream_id: str) -> Response:
        stream = selectors.stream_get(user=request_user(request), stream_id=stream_id)
        data = parse(self.InputSerializer, request)
        destination = services.destination_add(
            stream=stream,
            service=data["service"],
            stream_key=data["streamKey"],
            server_url=data.get("serverUrl", ""),
            transcode=data.get("transcode"),
        )
        return ok("Stream destination added", destination_payload(destination))


class DestinationListApi(APIView):
    @payload(DestinationPayload, many=True)
    def get(self, request: Request, stream_id: str) -> Response:
        stream = selectors.stream_get(user=request_user(request), stream_id=stream_id)
        destinations = stream.destinations.order_by("id")
        return ok("Stream destinations", [destination_payload(d) for d in destinations])


class DestinationDetailApi(APIView):
    class UpdateSerializer(StrictInput):
        streamKey = _DestinationKey(required=False, source="stream_key")
        serverUrl = _ServerUrl(required=False, source="server_url")
        isActive = StrictBooleanField(required=False, source="is_active")
        transcode = _transcode()

    def _get(self, request: Request, stream_id: str, destination_id: str) -> Destination:
        return selectors.destination_get(
            user=request_user(request), stream_id=stream_id, destination_id=destination_id
        )

    @payload(DestinationPayload)
    def get(self, request: Request, stream_id: str, destination_id: str) -> Response:
        destination = self._get(request, stream_id, destination_id)
        return ok("Stream destination", destination_payload(destination))

    @payload(DestinationPayload)
    def patch(self, request: Request, stream_id: str, destination_id: str) -> Response:
        destination = self._get(request, stream_id, destination_id)
        data = parse(self.UpdateSerializer, request)
        destination = services.destination_update(destination=destination, **data)
        return ok("Stream destination updated", destination_payload(destination))

    @payload(DestinationDeletedPayload)
    def delete(self, request: Request, stream_id: str, destination_id: str) -> Response:
        destination = self._get(request, stream_id, destination_id)
        deleted_id = destination.pk
        services.destination_delete(destination=destination)
        return ok("Stream destination deleted", {"id": deleted_id})


# --- relay control: one relay per destination, on the node serving the stream ----------------


class SessionListApi(APIView):
    """The stream's publish sessions, newest first: where and how long each ran, why it
    ended, and what each relay sent."""

    @payload(
        SessionPayload,
        many=True,
        errors={400: [ErrorCode.INVALID_INPUT]},
        parameters=[
            OpenApiParameter(
                "before",
                str,
                description=f"A session's id: the {settings.RIG_SESSIONS_PAGE} sessions "
                "that started before it (the next page).",
            )
        ],
    )
    def get(self, request: Request, stream_id: str) -> Response:
        stream = selectors.stream_get(user=request_user(request), stream_id=stream_id)
        before = request.query_params.get("before")
        return ok("Stream sessions", selectors.session_list(stream=stream, before=before))


class RelayListApi(APIView):
    @payload(RelayPayload, many=True)
    def get(self, request: Request, stream_id: str) -> Response:
        stream = selectors.stream_get(user=request_user(request), stream_id=stream_id)
        return ok("Stream relays", selectors.relay_list(stream=stream))


class _RelayApi(APIView):
    def _get(self, request: Request, stream_id: str, destination_id: str) -> Destination:
        return selectors.destination_get(
            user=request_user(request), stream_id=stream_id, destination_id=destination_id
        )


class RelayDetailApi(_RelayApi):
    @payload(RelayDetailPayload)
    def get(self, request: Request, stream_id: str, destination_id: str) -> Response:
        destination = self._get(request, stream_id, destination_id)
        return ok("Stream relay", selectors.relay_detail(destination=destination))


class RelayRestartApi(_RelayApi):
    """Ask the serving node to restart this relay (a new connection to the platform)."""

    @payload(RelayPayload, errors={409: [ErrorCode.WRONG_STATE]})
    def post(self, request: Request, stream_id: str, destination_id: str) -> Response:
        destination = self._get(request, stream_id, destination_id)
        destination = services.relay_restart(destination=destination)
        return ok("Relay restart requested", selectors.relay_payload(destination))


class RelayMuteApi(_RelayApi):
    """Drop the audio track to this destination only."""

    muted = True

    @payload(RelayPayload)
    def post(self, request: Request, stream_id: str, destination_id: str) -> Response:
        destination = self._get(request, stream_id, destination_id)
        destination = services.relay_mute(destination=destination, muted=self.muted)
        message = "Relay muted" if self.muted else "Relay unmuted"
        return ok(message, selectors.relay_payload(destination))


class RelayUnmuteApi(RelayMuteApi):
    """Restore the audio track to this destination (a view of its own: one operation id per
    route in the schema)."""

    muted = False
