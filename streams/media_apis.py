"""What the stream's media offers beyond the fan-out: its current picture, its pulled source,
its recordings (rig API extensions, tenant-scoped like the rest)."""

from collections.abc import Iterator

from django.http import HttpResponse, StreamingHttpResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import request_user
from agents import services as node_services
from rig.api import ErrorCode, ok
from rig.schema import error_response, payload, plain_text
from streams import recordings, selectors, services
from streams.models import Recording
from streams.payloads import RecordingDeletedPayload, RecordingPayload, SourcePayload
from streams.pulls import source_payload


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
