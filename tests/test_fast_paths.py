"""The agent API's fast paths give what the slow ones gave: a compiled query (rig.queries) what
the ORM would, a payload rendered field by field (rig.schema) what DRF's serializer would, a
kept database connection checked without a query (rig.postgres) what Django's check finds."""

import json
import select
import time
import uuid
from typing import Any
from unittest.mock import patch

import pytest
from django.db import close_old_connections, connection, connections
from django.db.backends.postgresql import base as postgresql
from rest_framework import serializers
from rest_framework.test import APIClient

from agents.payloads import AgentDestinationPayload, LiveStreamPayload
from rig.queries import CompiledQuery, columns, instance
from rig.schema import _renderer
from streams.models import Destination, Stream
from tests.conftest import assert_ok
from tests.factories import DestinationFactory

PROFILE = {"height": 480, "fps": 30, "videoBitrateKbps": 1500, "audioBitrateKbps": 128}


def _config_item(**overrides: Any) -> dict[str, Any]:
    return {
        "id": 7,
        "service": "YouTube",
        "streamKey": "k",
        "rtmpUrl": "rtmps://a.rtmps.youtube.com:443/live2/k",
        "isActive": True,
        "isMuted": False,
        "transcode": None,
        "restartSeq": 0,
        **overrides,
    }


def test_a_nested_payload_renders_as_drf_renders_it() -> None:
    live = [
        {
            "streamID": uuid.uuid4(),
            "streamKey": "abc",
            "clientId": "12",
            "destinations": [_config_item(), _config_item(id=8, transcode=PROFILE)],
            "record": False,
            "extra": "not documented: left out",
        }
    ]
    fast = [_renderer(LiveStreamPayload)(item) for item in live]
    slow = LiveStreamPayload(live, many=True).data
    assert json.dumps(fast) == json.dumps(slow)  # same keys, order, types and values
    assert "extra" not in fast[0] and fast[0]["destinations"][1]["transcode"] == PROFILE


def test_a_value_of_another_type_is_converted_as_drf_converts_it() -> None:
    item = _config_item(id="8", isActive=1, restartSeq=True, streamKey=5)
    fast = _renderer(AgentDestinationPayload)(item)
    assert json.dumps(fast) == json.dumps(AgentDestinationPayload(item).data)
    assert (fast["id"], fast["isActive"], fast["restartSeq"], fast["streamKey"]) == (
        8,
        True,
        1,
        "5",
    )


def test_a_missing_field_fails_unless_it_may_be_null() -> None:
    without_key = {k: v for k, v in _config_item().items() if k != "streamKey"}
    with pytest.raises(KeyError, match="streamKey"):
        _renderer(AgentDestinationPayload)(without_key)
    without_profile = {k: v for k, v in _config_item().items() if k != "transcode"}
    assert _renderer(AgentDestinationPayload)(without_profile)["transcode"] is None


def test_a_shape_that_reads_other_keys_renders_through_drf() -> None:
    class Renamed(serializers.Serializer):
        name = serializers.CharField(source="title")

    assert _renderer(Renamed)({"title": "x"}) == {"name": "x"}


@pytest.mark.django_db
def test_a_compiled_query_returns_what_the_orm_returns(alice_stream: Stream) -> None:
    DestinationFactory.create(stream=alice_stream, stream_key="first", transcode=PROFILE)
    DestinationFactory.create(stream=alice_stream, stream_key="second")
    names = columns(Destination)
    query = CompiledQuery(
        lambda stream_id: (
            Destination.objects.filter(stream_id=stream_id).values_list(*names).order_by("id")
        ),
        stream_id=uuid.UUID(int=1),
    )
    for _ in range(2):  # compiled on the first run, reused on the second
        got = [instance(Destination, names, row) for row in query.rows(stream_id=alice_stream.pk)]
        want = list(alice_stream.destinations.order_by("id"))
        assert [(d.pk, d.stream_key, d.transcode) for d in got] == [
            (d.pk, d.stream_key, d.transcode) for d in want
        ]  # keys decrypted, JSON decoded: the converters ran
    assert query.rows(stream_id=uuid.uuid4()) == []


@pytest.mark.django_db
def test_a_placeholder_the_query_does_not_carry_is_refused() -> None:
    query = CompiledQuery(
        lambda key: Stream.objects.filter(is_active=True).values_list("id"), key="\x1fnever"
    )
    with pytest.raises(ValueError, match="key"):
        query.rows(key="x")


def test_a_uuid_placeholder_is_found_as_a_database_without_uuids_gets_it() -> None:
    from rig.queries import _slot

    marker = uuid.UUID(int=13)
    slot = _slot({"stream_id": marker}, marker.hex)  # SQLite (make up's default) gets the hex
    assert slot.value({"stream_id": uuid.UUID(int=99)}) == uuid.UUID(int=99).hex
    assert _slot({"stream_id": marker}, marker).value({"stream_id": marker}) == marker
    assert _slot({"flag": 1}, True) is True  # a bool is not the int placeholder 1


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_database_closed_is_replaced_before_a_request_uses_it(
    node_client: APIClient,
) -> None:
    """A gunicorn worker keeps its connection between requests; Postgres restarted or an
    operator terminated it meanwhile: the next request is answered, on a new connection."""
    assert_ok(node_client.get("/agents/streams"), "Live streams for node")
    kept = connection.connection
    pid = kept.info.backend_pid
    operator = connections.create_connection("default")
    try:
        with operator.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        operator.close()
    deadline = time.monotonic() + 5
    while not select.select([kept.fileno()], [], [], 0.05)[0] and time.monotonic() < deadline:
        pass  # the server's goodbye is on its way
    close_old_connections()  # what every request starts with (Django's request_started)
    assert_ok(node_client.get("/agents/streams"), "Live streams for node")
    assert connection.connection.info.backend_pid != pid


@pytest.mark.django_db(transaction=True)
def test_an_open_connection_is_kept_without_asking_the_database(node_client: APIClient) -> None:
    assert_ok(node_client.get("/agents/streams"), "Live streams for node")
    kept = connection.connection
    close_old_connections()
    with patch.object(postgresql.DatabaseWrapper, "is_usable", side_effect=AssertionError):
        assert_ok(node_client.get("/agents/streams"), "Live streams for node")
    assert connection.connection is kept
