"""Streams endpoints of the rig v1 API, plus stream/destination management extensions."""

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import request_user
from agents import services as node_services
from rig.api import (
    ApiError,
    ErrorCode,
    StrictBooleanField,
    StrictCharField,
    StrictInput,
    StrictIntegerField,
    ok,
    parse,
)
from rig.schema import error_response, payload, plain_text
from streams import recordings, selectors, services
from streams.destinations import destination_fields, ingest_base, service_list
from streams.models import Destination, Recording, Service, Stream
from streams.payloads import (
    DestinationDeletedPayload,
    DestinationPayload,
    RecordingDeletedPayload,
    RecordingPayload,
    RelayDetailPayload,
    RelayPayload,
    ServicePayload,
    SessionPayload,
    SourcePayload,
    StreamDeletedPayload,
    StreamKeyPayload,
    StreamPayload,
)
from streams.pulls import PULL_URL_MAX, shown_url, source_payload, stream_pull


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


class StreamSnapshotApi(APIView):
    """The current picture of the live stream, as JPEG (at most 2 s old)."""

    @plain_text(
        "image/jpeg",
        "The stream's current picture: decoded from its latest keyframe on the node that "
        "ingests it, at most 2 s old, at most 1280 px wide.",
        errors={
            409: error_response(ErrorCode.WRONG_STATE, note="here: the stream is not live"),
            503: error_response(ErrorCode.UNAVAILABLE, note="here: its node gave no picture"),
        },
    )
    def get(self, request: Request, stream_id: str) -> HttpResponse:
        stream = selectors.stream_get(user=request_user(request), stream_id=stream_id)
        return picture_response(node_services.stream_snapshot(stream=stream))


class StreamSourceApi(APIView):
    """How the pull of a pull-mode stream is doing (409/1013 for a push-mode stream)."""

    @payload(SourcePayload, errors={409: [ErrorCode.WRONG_STATE]})
    def get(self, request: Request, stream_id: str) -> Response:
        stream = selectors.stream_get(user=request_user(request), stream_id=stream_id)
        return ok("Stream source", source_payload(stream))


class StreamSourceRestartApi(APIView):
    """Ask the pulling node to reconnect to the source."""

    @payload(SourcePayload, errors={409: [ErrorCode.WRONG_STATE]})
    def post(self, request: Request, stream_id: str) -> Response:
        stream = selectors.stream_get(user=request_user(request), stream_id=stream_id)
        stream = services.source_restart(stream=stream)
        return ok("Source restart requested", source_payload(stream))


class StreamRecordingListApi(APIView):
    """The stream's recordings, newest first: one per recorded session and node (more if its
    recorder had to start again)."""

    @payload(RecordingPayload, many=True)
    def get(self, request: Request, stream_id: str) -> Response:
        stream = selectors.stream_get(user=request_user(request), stream_id=stream_id)
        return ok("Stream recordings", recordings.recording_list(stream=stream))


class RecordingDetailApi(APIView):
    @payload(RecordingPayload)
    def get(self, request: Request, recording_id: str) -> Response:
        row = recordings.recording_get(user=request_user(request), recording_id=recording_id)
        return ok("Recording", recordings.recording_payload(row))

    @payload(
        RecordingDeletedPayload,
        errors={409: [ErrorCode.WRONG_STATE], 503: [ErrorCode.UNAVAILABLE]},
    )
    def delete(self, request: Request, recording_id: str) -> Response:
        row = recordings.recording_get(user=request_user(request), recording_id=recording_id)
        deleted_id = str(row.pk)
        node_services.recording_delete(recording=row)
        return ok("Recording deleted", {"id": deleted_id})


class RecordingDownloadApi(APIView):
    """The recording's MP4 from whichever node holds it, streamed through; `Range: bytes=…`
    gets 206 with that part (a player seeks, a download resumes)."""

    @plain_text(
        "video/mp4",
        "The recording as fragmented MP4 (playable while it grows); 206 with Content-Range "
        "for a Range request.",
        errors={
            416: error_response(ErrorCode.INVALID_INPUT, note="here: a range outside the file"),
            503: error_response(ErrorCode.UNAVAILABLE, note="here: its node cannot serve it"),
        },
    )
    def get(self, request: Request, recording_id: str) -> StreamingHttpResponse:
        row = recordings.recording_get(user=request_user(request), recording_id=recording_id)
        return recording_response(row, request.headers.get("Range"))


def recording_response(row: Recording, byte_range: str | None) -> StreamingHttpResponse:
    """A recording as it is served (the API and the dashboard): streamed through from its
    node in chunks, whole or the asked range."""
    answer = node_services.recording_download(recording=row, byte_range=byte_range)

    def chunks() -> Iterator[bytes]:
        with answer:
            while chunk := answer.read(256 * 1024):
                yield chunk

    response = StreamingHttpResponse(chunks(), status=answer.status, content_type="video/mp4")
    for header in ("Content-Length", "Content-Range", "Accept-Ranges"):
        if answer.headers.get(header):
            response[header] = answer.headers[header]
    response["Content-Disposition"] = f'attachment; filename="rig-{row.pk}.mp4"'
    response["Cache-Control"] = "private, no-store"
    return response


def picture_response(jpeg: bytes) -> HttpResponse:
    """A snapshot as it is served: JPEG, cacheable by its viewer alone for the 2 s it holds."""
    response = HttpResponse(jpeg, content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=2"
    return response


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


class TranscodeInput(StrictInput):
    height = StrictIntegerField(min_value=144, max_value=2160)
    fps = StrictIntegerField(min_value=1, max_value=60)
    videoBitrateKbps = StrictIntegerField(min_value=100, max_value=20000)
    audioBitrateKbps = StrictIntegerField(min_value=32, max_value=320)

    def validate_height(self, value: int) -> int:
        if value % 2:
            raise serializers.ValidationError("Must be even (H.264 needs even sizes).")
        return value


def _transcode(**kwargs: Any) -> TranscodeInput:
    return TranscodeInput(
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
