"""The agent API (node-token authenticated) and the nginx-rtmp hook endpoints."""

import re
import time
from typing import Any

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.parsers import FormParser
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import selectors, services
from agents.authentication import NodeTokenAuthentication
from agents.models import IngestNode
from agents.node import ingest
from agents.node.protocol import LOG_LINES_KEPT, REPORTED_STATES
from agents.payloads import (
    HOOK_ERRORS,
    AgentDestinationPayload,
    AgentPullPayload,
    HookForm,
    HookResultPayload,
    IngestPayload,
    LiveStreamPayload,
    NodePayload,
    StatusRecordedPayload,
)
from rig.api import (
    SafeJSONParser,
    StrictBooleanField,
    StrictCharField,
    StrictInput,
    StrictIntegerField,
    invalid_input,
    not_found,
    ok,
    parse,
)
from rig.metrics import observe_hook
from rig.schema import payload
from streams import pulls, sessions
from streams.models import Recording


def _node(request: Request) -> IngestNode:
    assert isinstance(request.user, IngestNode)
    return request.user


class _NodeEndpoint(APIView):
    authentication_classes = [NodeTokenAuthentication]


class AgentConfigApi(_NodeEndpoint):
    @payload(AgentDestinationPayload, many=True)
    def get(self, request: Request, stream_key: str) -> Response:
        return ok("Stream Config", selectors.agent_config_for_key(key=stream_key))


class AgentStreamsApi(_NodeEndpoint):
    find_node = staticmethod(selectors.node_with_live_streams)  # one query: node and answer

    @payload(LiveStreamPayload, many=True)
    def get(self, request: Request) -> Response:
        return ok("Live streams for node", selectors.node_live_streams(node=_node(request)))


class AgentPullsApi(_NodeEndpoint):
    @payload(AgentPullPayload, many=True)
    def get(self, request: Request) -> Response:
        return ok("Pulls for node", pulls.node_pulls(node=_node(request)))


class _ProcessReport(serializers.Serializer):
    """What a node says about one of its ffmpeg processes: a relay, or a pull."""

    state = serializers.ChoiceField(choices=REPORTED_STATES)
    bitrateKbps = serializers.FloatField(required=False, allow_null=True, min_value=0)
    fps = serializers.FloatField(required=False, allow_null=True, min_value=0)
    bytesSent = serializers.IntegerField(required=False, min_value=0, max_value=2**62)
    restarts = serializers.IntegerField(required=False, min_value=0, max_value=2**31)
    since = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2**35)
    lastError = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=2000
    )
    # Log lines since the previous report the control plane took (the agent keeps a cursor).
    newLog = serializers.ListField(
        child=serializers.CharField(max_length=2000, allow_blank=True, trim_whitespace=False),
        required=False,
        max_length=LOG_LINES_KEPT,
    )


class _RelayReport(_ProcessReport):
    destinationId = serializers.IntegerField(min_value=1, max_value=2**62)


class _PullReport(_ProcessReport):
    streamKey = StrictCharField(max_length=64)


class _RecordingReport(serializers.Serializer):
    id = serializers.UUIDField(format="hex_verbose")
    streamKey = StrictCharField(max_length=64)
    startedAt = serializers.FloatField(min_value=0, max_value=2**35)
    endedAt = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2**35)
    durationS = serializers.FloatField(required=False, min_value=0, max_value=1e9)
    bytes = serializers.IntegerField(required=False, min_value=0, max_value=2**62)
    state = serializers.ChoiceField(choices=Recording.State.choices)
    error = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=2000
    )


class _StreamReport(serializers.Serializer):
    streamKey = StrictCharField(max_length=64)
    relays = serializers.ListField(child=_RelayReport(), max_length=200)


class _LoadReport(StrictInput):
    relays = StrictIntegerField(min_value=0, max_value=100_000)
    loadAvg1 = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1e6)


class AgentStatusApi(_NodeEndpoint):
    class InputSerializer(StrictInput):
        streams = serializers.ListField(child=_StreamReport(), max_length=2000)
        # Stream keys nginx-rtmp on the node is receiving right now; absent when unknown.
        publishers = serializers.ListField(
            child=StrictCharField(max_length=64), max_length=2000, required=False
        )
        load = _LoadReport(required=False)
        # The streams this node pulls into its ingest (pulled sources).
        pulls = serializers.ListField(child=_PullReport(), max_length=2000, required=False)
        # The recordings the node writes, and those it finished since its last report taken.
        recordings = serializers.ListField(
            child=_RecordingReport(), max_length=2000, required=False
        )

    @payload(StatusRecordedPayload)
    def post(self, request: Request) -> Response:
        data = parse(self.InputSerializer, request)
        accepted = services.node_report(
            node=_node(request),
            streams=data["streams"],
            publishers=data.get("publishers"),
            load=data.get("load"),
            pulls=data.get("pulls"),
            recordings=data.get("recordings"),
        )
        return ok("Status recorded", {"relays": accepted})


_CLIENT_ID = re.compile(r"[0-9]{1,20}")


def _first(request: Request, field: str) -> str:
    """nginx-rtmp's own value of a form field. The publisher's RTMP args are appended to the
    form unescaped after nginx's fields, so `KEY?name=OTHER` adds a second, forged `name`."""
    data: Any = request.data
    if hasattr(data, "getlist"):
        values = data.getlist(field)
    elif isinstance(data, dict):
        values = [data.get(field, "")]
    else:  # a JSON array or scalar: not nginx's form
        values = []
    return str(values[0]) if values else ""


class PublishHookApi(APIView):
    """nginx-rtmp's on_publish / on_publish_done. nginx cannot send headers, so the node's token
    is in the path; a 2xx answer lets the publisher in, anything else refuses it (never 3xx:
    nginx-rtmp would take a redirect as a rename)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [FormParser, SafeJSONParser]

    @payload(HookResultPayload, request=HookForm, errors=HOOK_ERRORS)
    @observe_hook
    def post(self, request: Request, token: str, event: str) -> Response:
        started = time.perf_counter()
        key, client_id, app = (_first(request, field) for field in ("name", "clientid", "app"))
        if event not in ("publish", "publish_done"):
            raise not_found("Hook")
        if app != ingest.APP and event == "publish":  # done: whatever it was, its session ends
            raise not_found("Application")
        if not _CLIENT_ID.fullmatch(client_id):  # nginx's ids are small integers
            raise invalid_input("clientid", "Must be nginx's numeric client id.")
        # The node is read by its token in the hook's own transaction (and locked for a publish).
        if event == "publish":
            pull_token = _first(request, "pull")  # a pulled source's publish carries it
            sessions.publish_start(token=token, key=key, client_id=client_id, pull_token=pull_token)
        else:
            sessions.publish_end(token=token, key=key, client_id=client_id)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        return ok("OK", {"event": event, "ms": elapsed_ms})


class IngestListApi(APIView):
    """Users: the ingest servers to point OBS at, least loaded first in the asked region."""

    @payload(
        IngestPayload,
        many=True,
        parameters=[OpenApiParameter("region", str, description="Prefer a node in this region.")],
    )
    def get(self, request: Request) -> Response:
        region = request.query_params.get("region") or None
        return ok("Ingest servers", selectors.ingest_servers(region=region))


# --- operators (staff users): nodes, their load and health, drain ----------------------------


class NodeListApi(APIView):
    """Staff users only: every ingest node with its health and load."""

    permission_classes = [IsAdminUser]

    @payload(NodePayload, many=True)
    def get(self, request: Request) -> Response:
        return ok("Ingest nodes", selectors.node_list())


class NodeDetailApi(APIView):
    """Staff users only: one ingest node; drain it or change its capacity."""

    permission_classes = [IsAdminUser]

    class UpdateSerializer(StrictInput):
        isDraining = StrictBooleanField(required=False, source="is_draining")
        capacity = StrictIntegerField(min_value=0, max_value=100_000, required=False)

    @payload(NodePayload)
    def get(self, request: Request, node_id: str) -> Response:
        node = selectors.node_get(node_id=node_id)
        return ok("Ingest node", selectors.node_detail(node=node))

    @payload(NodePayload)
    def patch(self, request: Request, node_id: str) -> Response:
        node = selectors.node_get(node_id=node_id)
        data = parse(self.UpdateSerializer, request)
        node = services.node_update(node=node, **data)
        return ok("Ingest node updated", selectors.node_detail(node=node))
