"""Every user endpoint tried by the owner, another tenant, an anonymous client and a node.

Another tenant's ids answer exactly like unknown ids (1000/404), and nothing changes."""

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from streams.models import Destination, Pull, Stream
from tests.conftest import assert_error
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db

Endpoint = tuple[str, Callable[[Stream, Destination], str], dict | None]

ENDPOINTS: list[Endpoint] = [
    ("get", lambda s, d: f"/streams/{s.id}", None),
    ("patch", lambda s, d: f"/streams/{s.id}", {"isActive": False}),
    ("patch", lambda s, d: f"/streams/{s.id}", {"pullUrl": "rtsp://cam.example.com/1"}),
    ("delete", lambda s, d: f"/streams/{s.id}", None),
    ("post", lambda s, d: f"/streams/{s.id}/changeKey", None),
    ("post", lambda s, d: f"/streams/{s.id}/destination", {"service": "Twitch", "streamKey": "k"}),
    ("get", lambda s, d: f"/streams/{s.id}/destinations", None),
    ("get", lambda s, d: f"/streams/{s.id}/destinations/{d.pk}", None),
    ("patch", lambda s, d: f"/streams/{s.id}/destinations/{d.pk}", {"streamKey": "changed"}),
    ("delete", lambda s, d: f"/streams/{s.id}/destinations/{d.pk}", None),
]
IDS = [f"{method.upper()} {i}" for i, (method, _, _) in enumerate(ENDPOINTS)]


def call(client: APIClient, endpoint: Endpoint, stream: Stream, destination: Destination):
    method, url, body = endpoint
    return getattr(client, method)(url(stream, destination), body, format="json")


def snapshot(stream: Stream) -> tuple:
    stream.refresh_from_db()
    destinations = tuple(Destination.objects.filter(stream=stream).values_list())
    pulls = tuple(Pull.objects.filter(stream=stream).values_list())
    return (stream.stream_key, stream.is_active, destinations, pulls)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_owner_succeeds(alice_client: APIClient, alice_stream: Stream, endpoint: Endpoint) -> None:
    destination = DestinationFactory.create(stream=alice_stream)
    response = call(alice_client, endpoint, alice_stream, destination)
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_other_tenant_sees_404_and_changes_nothing(
    bob_client: APIClient, alice_stream: Stream, endpoint: Endpoint
) -> None:
    destination = DestinationFactory.create(stream=alice_stream)
    before = snapshot(alice_stream)
    body = assert_error(call(bob_client, endpoint, alice_stream, destination), 404, 1000)
    assert alice_stream.stream_key not in str(body)
    assert snapshot(alice_stream) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_other_tenant_answer_is_identical_to_unknown_id(
    bob_client: APIClient, alice_stream: Stream, endpoint: Endpoint, bob
) -> None:
    """No oracle: Alice's stream id and a random id get byte-identical answers."""
    destination = DestinationFactory.create(stream=alice_stream)
    foreign = call(bob_client, endpoint, alice_stream, destination)
    alice_stream_id = alice_stream.id
    Stream.objects.filter(pk=alice_stream_id).delete()
    unknown = call(bob_client, endpoint, alice_stream, destination)
    assert (foreign.status_code, foreign.content) == (unknown.status_code, unknown.content)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_anonymous_and_node_get_1003(
    anon_client: APIClient, node_client: APIClient, alice_stream: Stream, endpoint: Endpoint
) -> None:
    destination = DestinationFactory.create(stream=alice_stream)
    before = snapshot(alice_stream)
    for client in (anon_client, node_client):
        assert_error(call(client, endpoint, alice_stream, destination), 401, 1003)
    assert snapshot(alice_stream) == before


def test_agent_endpoints_refuse_users(alice_client: APIClient, alice_stream: Stream) -> None:
    for method, url in [
        ("get", f"/agents/config/{alice_stream.stream_key}"),
        ("get", "/agents/streams"),
        ("get", "/agents/pulls"),
        ("post", "/agents/status"),
    ]:
        assert_error(getattr(alice_client, method)(url, {"streams": []}, format="json"), 401, 1003)
