"""Streams: create, list, detail, changeKey, update, delete."""

import re
import uuid

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from streams.models import Stream
from tests.conftest import assert_error, assert_ok
from tests.factories import DestinationFactory, StreamFactory

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")


def test_create_stream_seed_shape(alice_client: APIClient, alice: User, settings) -> None:
    payload = assert_ok(alice_client.post("/streams/"), "New stream created")
    assert uuid.UUID(payload["id"]).version == 4
    assert KEY_RE.match(payload["streamKey"])
    assert payload["destinations"] is None
    assert payload["provisionStatus"] is None
    assert payload["isStreaming"] is False
    assert payload["isActive"] is True
    assert payload["ingestServer"] == settings.RIG_INGEST_URL
    assert payload["ingestUrl"] == f"{settings.RIG_INGEST_URL}/{payload['streamKey']}"
    assert Stream.objects.get(pk=payload["id"]).owner == alice


def test_create_needs_no_body_or_content_type(alice_client: APIClient) -> None:
    response = alice_client.generic("POST", "/streams")
    assert_ok(response, "New stream created")


def test_stream_keys_are_random_and_unique(alice_client: APIClient) -> None:
    keys = {alice_client.post("/streams/").json()["payload"]["streamKey"] for _ in range(20)}
    assert len(keys) == 20


def test_stream_limit_per_user(alice_client: APIClient, settings) -> None:
    settings.RIG_MAX_STREAMS_PER_USER = 2
    alice_client.post("/streams/")
    alice_client.post("/streams/")
    assert_error(alice_client.post("/streams/"), 409, 1011)


def test_list_seed_shape_and_only_own_streams(
    alice_client: APIClient, alice: User, bob: User
) -> None:
    mine = [StreamFactory.create(owner=alice), StreamFactory.create(owner=alice)]
    DestinationFactory.create(stream=mine[0])
    StreamFactory.create(owner=bob)
    payload = assert_ok(alice_client.get("/streams/"), "Stream list for user")
    assert [item["id"] for item in payload] == [str(s.id) for s in mine]
    for item, stream in zip(payload, mine, strict=True):
        assert item["streamKey"] == stream.stream_key
        assert item["destinations"] is None  # as the seed shows for the list
        assert item["provisionStatus"] is None
        assert item["isStreaming"] is False
        assert item["isActive"] is True


def test_list_empty(alice_client: APIClient) -> None:
    assert assert_ok(alice_client.get("/streams"), "Stream list for user") == []


def test_list_query_count_is_constant(
    alice_client: APIClient, alice: User, django_assert_num_queries
) -> None:
    for _ in range(10):
        DestinationFactory.create(stream=StreamFactory.create(owner=alice))
    with django_assert_num_queries(2):  # the token's user, then the streams with their node
        assert len(alice_client.get("/streams/").json()["payload"]) == 10


def test_detail_seed_shape(alice_client: APIClient, alice_stream: Stream, settings) -> None:
    destination = DestinationFactory.create(
        stream=alice_stream, stream_key="simaimsimim_siimimimiasdsr"
    )
    payload = assert_ok(alice_client.get(f"/streams/{alice_stream.id}"), "Stream detail")
    assert payload["id"] == str(alice_stream.id)
    assert payload["streamKey"] == alice_stream.stream_key
    assert payload["destinations"] == [
        {
            "id": destination.pk,
            "service": "YouTube",
            "streamKey": "simaimsimim_siimimimiasdsr",
            "rtmpUrl": f"{settings.RIG_SERVICE_INGEST['YouTube']}/simaimsimim_siimimimiasdsr",
            "isActive": True,
            "serverUrl": settings.RIG_SERVICE_INGEST["YouTube"],
            "isMuted": False,
            "transcode": None,
        }
    ]
    assert payload["provisionStatus"] is None
    assert payload["isStreaming"] is False
    assert payload["isActive"] is True


def test_detail_without_destinations_is_null(alice_client: APIClient, alice_stream: Stream) -> None:
    payload = assert_ok(alice_client.get(f"/streams/{alice_stream.id}/"), "Stream detail")
    assert payload["destinations"] is None


def test_detail_query_count_is_constant(
    alice_client: APIClient, alice_stream: Stream, django_assert_num_queries
) -> None:
    for _ in range(5):
        DestinationFactory.create(stream=alice_stream)
    with django_assert_num_queries(3):  # user, stream + node, destinations + relays
        alice_client.get(f"/streams/{alice_stream.id}")


@pytest.mark.parametrize("bad_id", ["not-a-uuid", str(uuid.uuid4()), "1", "%00", "x" * 300])
def test_unknown_stream_ids_are_1000(alice_client: APIClient, bad_id: str) -> None:
    assert_error(alice_client.get(f"/streams/{bad_id}"), 404, 1000)


def test_change_key_seed_shape_and_old_key_dies(
    alice_client: APIClient, alice_stream: Stream, node_client: APIClient
) -> None:
    old = alice_stream.stream_key
    payload = assert_ok(
        alice_client.post(f"/streams/{alice_stream.id}/changeKey"), "New stream key"
    )
    assert payload["streamID"] == str(alice_stream.id)
    assert KEY_RE.match(payload["key"]) and payload["key"] != old
    alice_stream.refresh_from_db()
    assert alice_stream.stream_key == payload["key"]
    assert_error(node_client.get(f"/agents/config/{old}"), 404, 1000)
    assert_ok(node_client.get(f"/agents/config/{payload['key']}"), "Stream Config")


def test_change_key_wrong_method_is_1001(alice_client: APIClient, alice_stream: Stream) -> None:
    assert_error(alice_client.get(f"/streams/{alice_stream.id}/changeKey"), 405, 1001)


def test_deactivate_and_reactivate(alice_client: APIClient, alice_stream: Stream) -> None:
    url = f"/streams/{alice_stream.id}"
    payload = assert_ok(
        alice_client.patch(url, {"isActive": False}, format="json"), "Stream updated"
    )
    assert payload["isActive"] is False
    payload = assert_ok(
        alice_client.patch(url, {"isActive": True}, format="json"), "Stream updated"
    )
    assert payload["isActive"] is True


@pytest.mark.parametrize(
    ("body", "code"),
    [({}, 1004), ({"isActive": "false"}, 1005), ({"isActive": 0}, 1005), ({"x": 1}, 1005)],
)
def test_update_bad_input(
    alice_client: APIClient, alice_stream: Stream, body: dict, code: int
) -> None:
    response = alice_client.patch(f"/streams/{alice_stream.id}", body, format="json")
    assert_error(response, 400, code)
    alice_stream.refresh_from_db()
    assert alice_stream.is_active is True


def test_delete_stream(alice_client: APIClient, alice_stream: Stream) -> None:
    DestinationFactory.create(stream=alice_stream)
    payload = assert_ok(alice_client.delete(f"/streams/{alice_stream.id}"), "Stream deleted")
    assert payload == {"id": str(alice_stream.id)}
    assert not Stream.objects.filter(pk=alice_stream.pk).exists()
    assert_error(alice_client.get(f"/streams/{alice_stream.id}"), 404, 1000)


def test_streams_need_a_user_token(anon_client: APIClient, node_client: APIClient) -> None:
    for client in (anon_client, node_client):
        assert_error(client.get("/streams/"), 401, 1003)
        assert_error(client.post("/streams/"), 401, 1003)
