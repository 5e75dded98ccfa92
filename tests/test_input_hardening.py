"""Bad input on every endpoint that takes a body: a clear envelope, never a 500, no change."""

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from agents.node.protocol import REPORT_MAX_BYTES
from streams.models import Destination, Stream
from tests.conftest import assert_error, client_for
from tests.factories import DestinationFactory, StreamFactory, UserFactory, node_create

pytestmark = pytest.mark.django_db

BODY_ENDPOINTS = [
    ("post", "/accounts/", "anon", {"username": "x", "password": "y", "email": "z"}),
    ("post", "/accounts/auth/local", "anon", {"username": "x", "password": "y"}),
    ("post", "/accounts/auth/refresh", "anon", {"refreshToken": "x"}),
    ("post", "/accounts/password", "user", {"oldPassword": "x", "newPassword": "y"}),
    ("patch", "/streams/{sid}", "user", {"isActive": True}),
    ("post", "/streams/{sid}/destination", "user", {"service": "Twitch", "streamKey": "k"}),
    ("patch", "/streams/{sid}/destinations/{did}", "user", {"streamKey": "k"}),
    ("post", "/agents/status", "node", {"streams": []}),
]
IDS = [f"{m.upper()} {p}" for m, p, _, _ in BODY_ENDPOINTS]
WRONG_VALUES = [None, 1, 1.5, True, [], {}, ["a"], {"a": 1}, "\x00", "é" * 600]


@pytest.fixture
def world(db: None) -> dict:
    user = UserFactory.create(username="carol")
    stream = StreamFactory.create(owner=user)
    destination = DestinationFactory.create(stream=stream, stream_key="orig")
    _, token = node_create("n1")
    return {
        "user": user,
        "stream": stream,
        "destination": destination,
        "clients": {"anon": APIClient(), "user": client_for(user), "node": client_for(token=token)},
    }


def _send(world: dict, method: str, path: str, who: str, **kwargs: object):
    url = path.format(sid=world["stream"].id, did=world["destination"].pk)
    return world["clients"][who].generic(method.upper(), url, **kwargs)


def _unchanged(world: dict) -> None:
    assert User.objects.count() == 1
    stream: Stream = world["stream"]
    stream.refresh_from_db()
    assert stream.is_active is True
    assert list(Destination.objects.values_list("stream_key", flat=True)) == ["orig"]


@pytest.mark.parametrize(("method", "path", "who", "valid"), BODY_ENDPOINTS, ids=IDS)
@pytest.mark.parametrize(
    "raw", [b"{not json", b'{"a": }', b"\xff\xfe", b"[1, 2", b"NaN-ish"], ids=lambda r: repr(r)
)
def test_malformed_json_is_1002(world, method, path, who, valid, raw: bytes) -> None:
    response = _send(world, method, path, who, data=raw, content_type="application/json")
    assert_error(response, 415, 1002)
    _unchanged(world)


@pytest.mark.parametrize(("method", "path", "who", "valid"), BODY_ENDPOINTS, ids=IDS)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_non_json_content_type_is_1002(world, method, path, who, valid, content_type) -> None:
    response = _send(world, method, path, who, data=b"a=b", content_type=content_type)
    assert_error(response, 415, 1002)
    _unchanged(world)


@pytest.mark.parametrize(("method", "path", "who", "valid"), BODY_ENDPOINTS, ids=IDS)
def test_oversized_body_is_413(world, method, path, who, valid, settings) -> None:
    limit = REPORT_MAX_BYTES if path == "/agents/status" else settings.RIG_MAX_BODY_BYTES
    big = b'{"x": "' + b"a" * (limit + 10) + b'"}'
    response = _send(world, method, path, who, data=big, content_type="application/json")
    assert_error(response, 413, 1005)
    _unchanged(world)


@pytest.mark.parametrize(("method", "path", "who", "valid"), BODY_ENDPOINTS, ids=IDS)
@pytest.mark.parametrize("body", [b"[]", b'"text"', b"42", b"null", b"true"])
def test_non_object_bodies_are_rejected(world, method, path, who, valid, body) -> None:
    response = _send(world, method, path, who, data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errorCode"] in {1004, 1005}
    _unchanged(world)


@pytest.mark.parametrize(("method", "path", "who", "valid"), BODY_ENDPOINTS, ids=IDS)
def test_unknown_fields_are_1005(world, method, path, who, valid) -> None:
    import json

    body = json.dumps({**valid, "surprise": 1}).encode()
    response = _send(world, method, path, who, data=body, content_type="application/json")
    details = assert_error(response, 400, 1005)["details"]
    assert "surprise" in details
    _unchanged(world)


@pytest.mark.parametrize(("method", "path", "who", "valid"), BODY_ENDPOINTS, ids=IDS)
@pytest.mark.parametrize("wrong", WRONG_VALUES, ids=repr)
def test_wrong_types_in_every_field_never_500(world, method, path, who, valid, wrong) -> None:
    import json

    for field in valid:
        body = json.dumps({**valid, field: wrong}).encode()
        response = _send(world, method, path, who, data=body, content_type="application/json")
        assert response.status_code < 500, (field, response.content)
        assert set(response.json()) in ({"message", "errorCode", "details"}, {"message", "payload"})
        _unchanged(world) if response.status_code != 200 else None


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete", "options", "head"])
@pytest.mark.parametrize("path", ["/nope", "/streams/x/y/z/w", "/accounts/auth", "/admin", "/ap"])
def test_unknown_routes_are_1000_json(method: str, path: str, db: None) -> None:
    client = client_for(token="rign_garbage")
    response = getattr(client, method)(path)
    assert response.status_code == 404
    if method != "head":
        assert response.json()["errorCode"] == 1000


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/accounts/"),
        ("get", "/accounts/auth/local"),
        ("delete", "/accounts/password"),
        ("put", "/streams/"),
        ("post", "/streams/{sid}"),
        ("get", "/streams/{sid}/destination"),
        ("post", "/agents/config/k"),
        ("get", "/agents/status"),
        ("get", "/agents/hooks/t/publish"),
    ],
)
def test_wrong_methods_are_1001(world, method: str, path: str) -> None:
    who = "node" if path.startswith("/agents/") else "user"
    response = _send(world, method, path, who)
    assert_error(response, 405, 1001)


def test_accept_html_still_gets_json(world) -> None:
    response = world["clients"]["user"].get("/streams/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")


def test_no_trailing_slash_redirects(world) -> None:
    for path in ["/streams", "/streams/", f"/streams/{world['stream'].id}/"]:
        response = world["clients"]["user"].get(path)
        assert response.status_code == 200
