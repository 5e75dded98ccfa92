"""The OpenAPI schema (/schema) and Swagger UI (/docs): valid, complete, and true to the API."""

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jsonschema
import pytest
import yaml
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.drainage import GENERATOR_STATS, reset_generator_stats
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient
from rest_framework.views import APIView

from accounts.models import User
from agents.models import IngestNode
from rig.api import ErrorCode, route
from tests.conftest import assert_error, assert_ok, client_for
from tests.factories import PASSWORD, UserFactory, node_create
from webhooks.models import DeliveryStatus, WebhookDelivery

# Routes that are not part of the API they describe, or not the API at all.
NOT_API = {"schema", "docs", "unknown-route"}
HTTP_METHODS = ["get", "post", "put", "patch", "delete"]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def test_schema_validates_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    document = yaml.safe_load(out.read_text())
    assert document["openapi"].startswith("3.")
    assert document["info"]["version"] == "1"
    assert "{message, payload}" in document["info"]["description"]


def _routes(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace == "dashboard":  # pages, not API operations
                continue
            yield from _routes(entry.url_patterns, prefix + str(entry.pattern))
        else:
            yield prefix + str(entry.pattern), entry


def _openapi_path(pattern: str) -> str:
    """``^streams/(?P<stream_id>[^/]+)/?$`` -> ``/streams/{stream_id}``; also ``<int:pk>``."""
    path = pattern.replace("^", "").replace("$", "")
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", path)
    path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)
    path = path.removesuffix("/?").rstrip("/")
    return "/" + path


def _api_routes() -> list[tuple[str, type[APIView]]]:
    routes = []
    for pattern, entry in _routes(get_resolver().url_patterns):
        if pattern.startswith("admin/") or entry.name in NOT_API:
            continue
        view = getattr(entry.callback, "cls", None)
        assert view is not None and issubclass(view, APIView), f"{pattern}: not a DRF view"
        routes.append((_openapi_path(pattern), view))
    return routes


def test_every_route_and_method_is_in_the_schema(schema: dict[str, Any]) -> None:
    routes = _api_routes()
    assert len(routes) >= 15
    for path, view in routes:
        assert path in schema["paths"], f"{path} ({view.__name__}) is missing from the schema"
        implemented = {m for m in HTTP_METHODS if hasattr(view, m)}
        assert implemented, view
        assert set(schema["paths"][path]) == implemented, path


def test_paths_are_clean_and_admin_and_catch_all_are_left_out(schema: dict[str, Any]) -> None:
    for path in schema["paths"]:
        assert re.fullmatch(r"(/[A-Za-z]+|/\{[a-z_]+\})+", path), path
        assert not path.startswith(("/admin", "/schema", "/docs", "/static"))
    assert "/streams/{stream_id}" in schema["paths"]


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def _ref_name(ref: dict[str, Any]) -> str:
    return ref["$ref"].rpartition("/")[2]


def test_every_success_is_the_envelope(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    assert "AnyEnvelope" not in components  # every payload is declared
    for path, method, operation in _operations(schema):
        successes = [code for code in operation["responses"] if code.startswith("2")]
        assert successes == ["200"], (method, path)
        if path == "/metrics":  # Prometheus scrapes text, not JSON
            assert operation["responses"]["200"]["content"] == {
                "text/plain": {"schema": {"type": "string"}}
            }
            continue
        if path == "/streams/{stream_id}/snapshot":  # a picture
            assert set(operation["responses"]["200"]["content"]) == {"image/jpeg"}
            continue
        if path == "/recordings/{recording_id}/download":  # a video
            assert set(operation["responses"]["200"]["content"]) == {"video/mp4"}
            continue
        body = operation["responses"]["200"]["content"]["application/json"]["schema"]
        envelope = components[_ref_name(body)]
        assert set(envelope["properties"]) == {"message", "payload"}, (method, path)
        assert envelope["properties"]["message"]["type"] == "string"
        assert envelope["required"] == ["message", "payload"]


def test_every_error_response_is_the_error_component(schema: dict[str, Any]) -> None:
    for path, method, operation in _operations(schema):
        errors = {code: r for code, r in operation["responses"].items() if code[0] in "45"}
        # /healthz and /services answer whenever the process answers at all: they have no
        # error of their own.
        assert errors or path in ("/healthz", "/services"), (method, path)
        for code, response in errors.items():
            body = response["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/Error"}, (method, path, code)
            assert re.match(r"^\d{4}: ", response["description"]), (method, path, code)


class _UndeclaredApi(APIView):
    def get(self, request: Any) -> Any:  # no @payload
        raise NotImplementedError


def test_an_undeclared_payload_is_a_generator_warning() -> None:
    generator = SchemaGenerator(patterns=[route("undeclared", _UndeclaredApi.as_view(), "u")])
    document = generator.get_schema(request=None, public=True)
    assert "AnyEnvelope" in document["components"]["schemas"]
    warnings = list(GENERATOR_STATS._warn_cache)
    reset_generator_stats()
    assert any("_UndeclaredApi.get does not declare its payload" in w for w in warnings)


def test_error_component_lists_every_error_code(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    error = components["Error"]
    assert set(error["required"]) == {"message", "errorCode", "details"}
    assert error["properties"]["message"]["type"] == "string"
    assert error["properties"]["details"]["nullable"] is True
    codes = components[_ref_name(error["properties"]["errorCode"])]
    assert codes["type"] == "integer"
    assert codes["enum"] == [int(code) for code in ErrorCode]
    for code in ErrorCode:
        assert f"`{int(code)}` - " in codes["description"]


def _operation(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return schema["paths"][path][method]


def test_default_errors_follow_what_the_view_does(schema: dict[str, Any]) -> None:
    signup = _operation(schema, "post", "/accounts")
    assert set(signup["responses"]) == {"200", "400", "409", "413", "415", "429"}
    detail = _operation(schema, "patch", "/streams/{stream_id}")
    assert set(detail["responses"]) == {"200", "400", "401", "404", "409", "413", "415"}
    listing = _operation(schema, "get", "/streams")
    assert set(listing["responses"]) == {"200", "401"}
    # staff only: a user's valid token that is not a staff user's is 403
    assert set(_operation(schema, "get", "/agents/nodes")["responses"]) == {"200", "401", "403"}
    node = _operation(schema, "patch", "/agents/nodes/{node_id}")
    assert set(node["responses"]) == {"200", "400", "401", "403", "404", "413", "415"}
    assert "not a staff user" in node["responses"]["403"]["description"]
    restart = _operation(schema, "post", "/streams/{stream_id}/relays/{destination_id}/restart")
    assert restart["responses"]["409"]["description"].startswith("1013: ")
    hook = _operation(schema, "post", "/agents/hooks/{token}/{event}")
    assert re.match(r"1009: .*; 1011: ", hook["responses"]["503"]["description"])
    readyz = _operation(schema, "get", "/readyz")
    assert set(readyz["responses"]) == {"200", "503"}
    assert readyz["responses"]["503"]["description"].startswith("1012: ")
    webhook = _operation(schema, "post", "/webhooks")
    assert webhook["responses"]["409"]["description"].startswith("1011: ")


def test_operation_ids_are_unique(schema: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in _operations(schema)]
    assert len(ids) == len(set(ids))
    mute = "/streams/{stream_id}/relays/{destination_id}/mute"
    assert _operation(schema, "post", mute)["operationId"] == "relay_mute_post"
    assert _operation(schema, "post", mute.replace("mute", "unmute"))["operationId"] == (
        "relay_unmute_post"
    )


def test_security_schemes(schema: dict[str, Any]) -> None:
    schemes = schema["components"]["securitySchemes"]
    assert schemes["jwtAuth"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["nodeToken"]["scheme"] == "bearer"
    assert schemes["metricsToken"]["scheme"] == "bearer"
    public = {
        "/accounts",
        "/accounts/auth/local",
        "/accounts/auth/refresh",
        "/healthz",
        "/readyz",
        "/services",
    }
    for path, method, operation in _operations(schema):
        expected: list[dict[str, list[str]]]
        if path.startswith("/agents/hooks") or path in public:
            expected = [{}]  # nginx-rtmp's hooks carry the node's token in the path
        elif path.startswith("/agents/nodes"):
            expected = [{"jwtAuth": []}]  # operators: staff users (IsAdminUser)
        elif path.startswith("/agents"):
            expected = [{"nodeToken": []}]  # the ingest nodes' agents
        elif path == "/metrics":
            expected = [{"metricsToken": []}, {}]  # or no token, from loopback only
        else:
            expected = [{"jwtAuth": []}]
        assert operation["security"] == expected, (method, path)


def test_request_bodies_come_from_the_views_serializers(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]

    def body(method: str, path: str) -> dict[str, Any]:
        return _operation(schema, method, path)["requestBody"]

    signup = body("post", "/accounts")["content"]["application/json"]["schema"]
    assert _ref_name(signup) == "AccountCreateInput"
    assert components["AccountCreateInput"]["additionalProperties"] is False
    patch = body("patch", "/streams/{stream_id}")["content"]["application/json"]["schema"]
    assert set(components[_ref_name(patch)]["properties"]) == {"isActive", "pullUrl", "record"}
    hook = body("post", "/agents/hooks/{token}/{event}")["content"]
    assert "application/x-www-form-urlencoded" in hook
    for path, method in [("/streams", "post"), ("/streams/{stream_id}/changeKey", "post")]:
        assert "requestBody" not in _operation(schema, method, path)


# --- served over HTTP ----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/schema", "/schema/"])
def test_schema_is_served_as_yaml(url: str) -> None:
    response = APIClient().get(url, HTTP_AUTHORIZATION="Bearer not-a-token")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    assert yaml.safe_load(response.content)["info"]["title"] == "rig HTTP API"


@pytest.mark.parametrize("url", ["/schema?format=json", "/schema.json", "/schema.json/"])
def test_schema_is_served_as_json(url: str) -> None:
    response = APIClient().get(url)
    assert response.status_code == 200
    assert "json" in response["Content-Type"]
    assert "/streams/{stream_id}" in response.json()["paths"]


def _streamed(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.mark.parametrize("url", ["/docs", "/docs/"])
def test_docs_render_swagger_ui_from_local_assets(url: str) -> None:
    client = APIClient()
    response = client.get(url, HTTP_AUTHORIZATION="Bearer not-a-token")
    assert response.status_code == 200
    html = response.content.decode()
    assert response["Content-Type"].startswith("text/html")
    assert "cdn" not in html.lower()
    assets = re.findall(r'(?:href|src)="(/static/drf_spectacular_sidecar/[^"]+)"', html)
    assert {a.rpartition("/")[2] for a in assets} >= {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
    }
    assert '"/schema"' in html or "'/schema'" in html
    assert '"validatorUrl": null' in html  # Swagger UI would otherwise call an outside service
    assert "https://" not in html and "http://" not in html
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert len(_streamed(served)) > 100, asset


def test_sidecar_route_serves_nothing_outside_the_sidecar() -> None:
    client = APIClient()
    for path in ["../../../rig/settings.py", "swagger-ui-dist/../../../rig/settings.py", "nope.js"]:
        assert_error(client.get(f"/static/drf_spectacular_sidecar/{path}"), 404, 1000)


# --- the documented payloads are what the API returns ----------------------------------------


def _json_schema(node: Any, components: dict[str, Any]) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema, refs inlined, unknown properties refused: a
    payload field the docs do not know about fails as much as a documented one that is gone."""
    if isinstance(node, list):
        return [_json_schema(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _json_schema(components[_ref_name(node)], components)
    node = {key: _json_schema(value, components) for key, value in node.items()}
    if node.get("type") == "object" and "properties" in node:
        node.setdefault("additionalProperties", False)
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


class Documented:
    """Checks each answer against the schema of its operation and records which ran."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.checked: set[tuple[str, str]] = set()

    def _validate(self, body: Any, schema: dict[str, Any]) -> None:
        components = self.schema["components"]["schemas"]
        jsonschema.validate(body, _json_schema(copy.deepcopy(schema), components))

    def __call__(self, response: Any, method: str, path: str, message: str) -> Any:
        payload = assert_ok(response, message)
        operation = _operation(self.schema, method, path)
        self._validate(
            response.json(), operation["responses"]["200"]["content"]["application/json"]["schema"]
        )
        self.checked.add((method, path))
        return payload

    def error(self, response: Any, method: str, path: str, status: int, code: int) -> None:
        """An error answer: its status is documented for the operation, with its code."""
        body = assert_error(response, status, code)
        documented = _operation(self.schema, method, path)["responses"].get(str(status))
        assert documented is not None, (method, path, status)
        assert re.search(rf"(^|; ){code}: ", documented["description"]), (method, path, status)
        self._validate(body, documented["content"]["application/json"]["schema"])

    def text(self, response: Any, method: str, path: str) -> str:
        """A 200 that is not JSON: its media type is the documented one."""
        assert response.status_code == 200, response.content
        content = _operation(self.schema, method, path)["responses"]["200"]["content"]
        media_type = response["Content-Type"].split(";")[0]
        assert set(content) == {media_type}, (method, path, response["Content-Type"])
        self.checked.add((method, path))
        return response.content.decode()


def test_documented_payloads_match_real_answers(
    schema: dict[str, Any], node_and_token: tuple[IngestNode, str]
) -> None:
    documented = Documented(schema)
    anon = APIClient()
    documented(anon.get("/healthz"), "get", "/healthz", "ok")
    documented(anon.get("/readyz"), "get", "/readyz", "ready")
    documented(anon.get("/services"), "get", "/services", "Supported services")
    metrics = documented.text(anon.get("/metrics"), "get", "/metrics")  # the test client: loopback
    assert "rig_streams_live" in metrics

    signup = {"username": "carol", "password": PASSWORD, "email": "carol@example.com"}
    r = anon.post("/accounts", signup, format="json")
    documented(r, "post", "/accounts", "User created")
    login = {"username": "carol", "password": PASSWORD}
    r = anon.post("/accounts/auth/local", login, format="json")
    tokens = documented(r, "post", "/accounts/auth/local", "Authentication successful")
    r = anon.post("/accounts/auth/refresh", {"refreshToken": tokens["refreshToken"]}, format="json")
    documented(r, "post", "/accounts/auth/refresh", "Token refreshed")
    carol = client_for(User.objects.get(username="carol"))
    documented(carol.get("/accounts/me"), "get", "/accounts/me", "User detail")
    servers = documented(carol.get("/ingests"), "get", "/ingests", "Ingest servers")
    assert [server["recommended"] for server in servers] == [True]

    # A webhook before anything happens, so the session below leaves deliveries to read.
    hook_url = "https://hooks.example.com/rig"
    r = carol.post("/webhooks", {"url": hook_url}, format="json")
    webhook = documented(r, "post", "/webhooks", "Webhook created")
    wid = webhook["id"]
    documented(carol.get("/webhooks"), "get", "/webhooks", "Webhook list for user")
    one_hook = "/webhooks/{webhook_id}"
    documented(carol.get(f"/webhooks/{wid}"), "get", one_hook, "Webhook detail")
    r = carol.patch(f"/webhooks/{wid}", {"isActive": True}, format="json")
    documented(r, "patch", one_hook, "Webhook updated")
    r = carol.post(f"/webhooks/{wid}/rotateSecret")
    documented(r, "post", "/webhooks/{webhook_id}/rotateSecret", "Webhook secret rotated")
    r = carol.post(f"/webhooks/{wid}/test")
    documented(r, "post", "/webhooks/{webhook_id}/test", "Test event queued")

    stream = documented(carol.post("/streams"), "post", "/streams", "New stream created")
    sid = stream["id"]
    documented(carol.get("/streams"), "get", "/streams", "Stream list for user")
    added = {"service": "YouTube", "streamKey": "yt-key"}
    r = carol.post(f"/streams/{sid}/destination", added, format="json")
    destination = documented(
        r, "post", "/streams/{stream_id}/destination", "Stream destination added"
    )
    did = destination["id"]
    r = carol.get(f"/streams/{sid}/destinations")
    documented(r, "get", "/streams/{stream_id}/destinations", "Stream destinations")
    one = "/streams/{stream_id}/destinations/{destination_id}"
    documented(carol.get(f"/streams/{sid}/destinations/{did}"), "get", one, "Stream destination")
    r = carol.patch(f"/streams/{sid}/destinations/{did}", {"isActive": True}, format="json")
    documented(r, "patch", one, "Stream destination updated")
    relay = "/streams/{stream_id}/relays/{destination_id}"
    # Not live yet: a pending relay, and no restart.
    r = carol.get(f"/streams/{sid}/relays/{did}")
    assert documented(r, "get", relay, "Stream relay")["state"] == "pending"
    r = carol.post(f"/streams/{sid}/relays/{did}/restart")
    documented.error(r, "post", relay + "/restart", 409, 1013)

    _, token = node_and_token
    form = urlencode({"call": "publish", "app": "live", "name": stream["streamKey"], "clientid": 3})
    r = anon.post(
        f"/agents/hooks/{token}/publish", form, content_type="application/x-www-form-urlencoded"
    )
    documented(r, "post", "/agents/hooks/{token}/{event}", "OK")
    nodes = client_for(token=token)
    documented(nodes.get("/agents/streams"), "get", "/agents/streams", "Live streams for node")
    r = nodes.get(f"/agents/config/{stream['streamKey']}")
    documented(r, "get", "/agents/config/{stream_key}", "Stream Config")
    report = {
        "streams": [
            {
                "streamKey": stream["streamKey"],
                "relays": [
                    {
                        "destinationId": did,
                        "state": "live",
                        "bitrateKbps": 2500.0,
                        "fps": 30.0,
                        "bytesSent": 1_000_000,
                        "since": 1_700_000_000.0,
                        "newLog": ["ffmpeg: connected to a.rtmp.youtube.com"],
                    }
                ],
            }
        ],
        "publishers": [stream["streamKey"]],
        "load": {"relays": 1, "loadAvg1": 0.42},
    }
    r = nodes.post("/agents/status", report, format="json")
    documented(r, "post", "/agents/status", "Status recorded")
    # Live, with a relay reported: provisionStatus and its destinations are filled in.
    live = documented(carol.get(f"/streams/{sid}"), "get", "/streams/{stream_id}", "Stream detail")
    assert live["provisionStatus"]["destinations"][0]["state"] == "live"
    r = carol.patch(f"/streams/{sid}", {"isActive": True}, format="json")
    documented(r, "patch", "/streams/{stream_id}", "Stream updated")

    # The relay API, on the live relay.
    r = carol.get(f"/streams/{sid}/relays")
    assert documented(r, "get", "/streams/{stream_id}/relays", "Stream relays")[0]["id"] == did
    detail = documented(carol.get(f"/streams/{sid}/relays/{did}"), "get", relay, "Stream relay")
    assert detail["state"] == "live" and detail["log"]
    r = carol.post(f"/streams/{sid}/relays/{did}/restart")
    documented(r, "post", relay + "/restart", "Relay restart requested")
    r = carol.post(f"/streams/{sid}/relays/{did}/mute")
    assert documented(r, "post", relay + "/mute", "Relay muted")["isMuted"] is True
    r = carol.post(f"/streams/{sid}/relays/{did}/unmute")
    assert documented(r, "post", relay + "/unmute", "Relay unmuted")["isMuted"] is False

    # A pulled source: another stream takes its video from a camera; the node pulls it.
    pulled = carol.post("/streams").json()["payload"]
    source_path = "/streams/{stream_id}/source"
    documented.error(carol.get(f"/streams/{pulled['id']}/source"), "get", source_path, 409, 1013)
    camera = "rtsp://viewer:s3cret@cam.example.com/stream1"
    r = carol.patch(f"/streams/{pulled['id']}", {"pullUrl": camera}, format="json")
    shown = documented(r, "patch", "/streams/{stream_id}", "Stream updated")["pullUrl"]
    assert shown == "rtsp://viewer:***@cam.example.com/stream1"
    wanted = documented(nodes.get("/agents/pulls"), "get", "/agents/pulls", "Pulls for node")
    assert [pull["url"] for pull in wanted] == [camera]
    pull_report = {
        "streams": [],
        "pulls": [
            {
                "streamKey": pulled["streamKey"],
                "state": "live",
                "bitrateKbps": 900.0,
                "fps": 30.0,
                "since": 1_700_000_000.0,
                "newLog": [f"Input #0, rtsp, from '{camera}':"],
            }
        ],
    }
    r = nodes.post("/agents/status", pull_report, format="json")
    documented(r, "post", "/agents/status", "Status recorded")
    r = carol.get(f"/streams/{pulled['id']}/source")
    source = documented(r, "get", source_path, "Stream source")
    assert source["state"] == "live" and source["log"] and "s3cret" not in str(source)
    r = carol.post(f"/streams/{pulled['id']}/source/restart")
    documented(r, "post", source_path + "/restart", "Source restart requested")

    # Recordings: the live stream records; its node reports the file.
    r = carol.patch(f"/streams/{sid}", {"record": True}, format="json")
    assert documented(r, "patch", "/streams/{stream_id}", "Stream updated")["record"] is True
    assert nodes.get("/agents/streams").json()["payload"][0]["record"] is True
    rec_id = "0b9e3c52-6f0e-4b7a-9d51-3f3c2a1b0c9d"
    recording = {
        "id": rec_id,
        "streamKey": stream["streamKey"],
        "startedAt": 1_700_000_000.0,
        "durationS": 12.5,
        "bytes": 2_000_000,
        "state": "recording",
    }
    r = nodes.post("/agents/status", {"streams": [], "recordings": [recording]}, format="json")
    documented(r, "post", "/agents/status", "Status recorded")
    r = carol.get(f"/streams/{sid}/recordings")
    listed = documented(r, "get", "/streams/{stream_id}/recordings", "Stream recordings")
    assert [(rec["id"], rec["state"], rec["bytes"]) for rec in listed] == [
        (rec_id, "recording", 2_000_000)
    ]
    one_recording = "/recordings/{recording_id}"
    documented(carol.get(f"/recordings/{rec_id}"), "get", one_recording, "Recording")
    r = carol.delete(f"/recordings/{rec_id}")
    documented.error(r, "delete", one_recording, 409, 1013)  # still being written
    r = carol.get(f"/recordings/{rec_id}/download")
    documented.error(r, "get", one_recording + "/download", 503, 1012)  # no agent to ask
    # Its bytes (video/mp4, with Range): tests/media/test_recordings.py.
    documented.checked.add(("get", one_recording + "/download"))
    done = {**recording, "state": "done", "endedAt": 1_700_000_012.5}
    nodes.post("/agents/status", {"streams": [], "recordings": [done]}, format="json")
    r = carol.delete(f"/recordings/{rec_id}")
    assert documented(r, "delete", one_recording, "Recording deleted") == {"id": rec_id}

    # Operators: staff users see every node, the one reporting and one that never did.
    node, _ = node_and_token
    silent, _ = node_create("node2", region="eu", capacity=0)
    staff = client_for(UserFactory.create(is_staff=True))
    listed = documented(staff.get("/agents/nodes"), "get", "/agents/nodes", "Ingest nodes")
    assert [n["health"] for n in listed] == ["healthy", "unknown"]
    assert listed[0]["load"]["relays"] == 1
    one_node = "/agents/nodes/{node_id}"
    r = staff.get(f"/agents/nodes/{silent.pk}")
    documented(r, "get", one_node, "Ingest node")
    r = staff.patch(f"/agents/nodes/{node.pk}", {"isDraining": True, "capacity": 50}, format="json")
    assert documented(r, "patch", one_node, "Ingest node updated")["isDraining"] is True
    documented.error(carol.get("/agents/nodes"), "get", "/agents/nodes", 403, 1003)
    documented.error(carol.get(f"/agents/nodes/{node.pk}"), "get", one_node, 403, 1003)

    # The webhook's deliveries: the ping and the session's events, one of them delivered.
    delivery = WebhookDelivery.objects.filter(event="stream.live").get()
    delivery.status, delivery.response_code = DeliveryStatus.DELIVERED, 204
    delivery.attempts, delivery.delivered_at = 1, delivery.created_at
    delivery.save()
    r = carol.get(f"/webhooks/{wid}/deliveries")
    deliveries = documented(r, "get", "/webhooks/{webhook_id}/deliveries", "Webhook deliveries")
    assert {d["event"] for d in deliveries} >= {"ping", "stream.live", "destination.live"}

    # The snapshot: node1 has no agent to ask here (503); its picture, and the 409 of a stream
    # that is not live, are checked against this schema with real processes in
    # tests/media/test_snapshots.py.
    snapshot = "/streams/{stream_id}/snapshot"
    documented.error(carol.get(f"/streams/{sid}/snapshot"), "get", snapshot, 503, 1012)
    documented.checked.add(("get", snapshot))
    r = carol.post(f"/streams/{sid}/changeKey")
    documented(r, "post", "/streams/{stream_id}/changeKey", "New stream key")
    # The session the key change ended, in the stream's history with what its relay sent.
    sessions_path = "/streams/{stream_id}/sessions"
    (ended,) = documented(
        carol.get(f"/streams/{sid}/sessions"), "get", sessions_path, "Stream sessions"
    )
    assert ended["reason"] == "stream key changed" and ended["destinations"][0]["bytesSent"]
    r = carol.get(f"/streams/{sid}/sessions?before=nope")
    documented.error(r, "get", sessions_path, 400, 1005)
    r = carol.delete(f"/streams/{sid}/destinations/{did}")
    documented(r, "delete", one, "Stream destination deleted")
    r = carol.delete(f"/streams/{sid}")
    documented(r, "delete", "/streams/{stream_id}", "Stream deleted")
    documented(carol.delete(f"/webhooks/{wid}"), "delete", one_hook, "Webhook deleted")
    change = {"oldPassword": PASSWORD, "newPassword": "An0therL0ngPassw0rd"}
    r = carol.post("/accounts/password", change, format="json")
    documented(r, "post", "/accounts/password", "User password changed")

    # Every operation was checked against a real answer: a new one needs a step here.
    assert documented.checked == {(method, path) for path, method, _ in _operations(schema)}


def test_answers_are_rendered_through_their_documented_shape() -> None:
    """What a view puts in its payload leaves through the shape its ``@payload`` documents: a
    field nobody documented never reaches the client, and a documented field the view forgot
    fails in the tests instead of going missing in production (a nullable one is null)."""
    from rest_framework import serializers

    from rig.api import ok
    from rig.schema import payload

    class Shape(serializers.Serializer):
        id = serializers.IntegerField()
        name = serializers.CharField(allow_null=True)

    @payload(Shape, many=True)
    def listed(view: object, request: object) -> Any:
        return ok("Things", [{"name": None, "id": "7", "secret": "s3cr3t"}])

    @payload(Shape)
    def forgetful(view: object, request: object) -> Any:
        return ok("Thing", {"name": "no id"})

    @payload(Shape)
    def nothing(view: object, request: object) -> Any:
        return ok("Gone", None)

    assert listed(None, None).data == {"message": "Things", "payload": [{"id": 7, "name": None}]}
    assert nothing(None, None).data == {"message": "Gone", "payload": None}
    with pytest.raises(KeyError):
        forgetful(None, None)
