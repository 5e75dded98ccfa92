"""Recordings through the API: the record flag and its quota, what a node's reports make of
the rows, tenancy, and retention (the media tests record real sessions and download them)."""

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import IngestNode
from agents.services import node_report, recordings_expire
from streams.models import Recording, Stream
from tests.conftest import assert_error, assert_ok, client_for
from tests.factories import node_create, session_start

pytestmark = pytest.mark.django_db


def report(stream: Stream, state: str = "recording", **extra: Any) -> dict[str, Any]:
    return {
        "id": extra.pop("id", str(uuid.uuid4())),
        "streamKey": stream.stream_key,
        "startedAt": time.time() - 10,
        "durationS": 10.0,
        "bytes": 1_000_000,
        "state": state,
        **extra,
    }


@pytest.fixture
def recorded(alice_stream: Stream) -> tuple[Stream, IngestNode]:
    node, _ = node_create("rec-node")
    session_start(alice_stream, node)
    Stream.objects.filter(pk=alice_stream.pk).update(record=True)
    alice_stream.refresh_from_db()
    return alice_stream, node


def test_record_flag_reaches_the_node_and_the_stream(
    alice_client: APIClient, recorded: tuple[Stream, IngestNode]
) -> None:
    stream, node = recorded
    node_view = client_for(token=_token_of(node))
    assert node_view.get("/agents/streams").json()["payload"][0]["record"] is True
    payload = assert_ok(
        alice_client.patch(f"/streams/{stream.id}", {"record": False}, format="json"),
        "Stream updated",
    )
    assert payload["record"] is False
    assert node_view.get("/agents/streams").json()["payload"][0]["record"] is False
    body = assert_error(
        alice_client.patch(f"/streams/{stream.id}", {"record": "yes"}, format="json"), 400, 1005
    )
    assert "record" in body["details"]


def test_reports_make_rows_only_for_streams_the_node_serves(
    alice_client: APIClient, recorded: tuple[Stream, IngestNode], bob: Any
) -> None:
    stream, node = recorded
    first = report(stream, error=f"rtmp://127.0.0.1/live/{stream.stream_key}: broken")
    node_report(node=node, streams=[], recordings=[first])
    stranger, _ = node_create("stranger")
    node_report(node=stranger, streams=[], recordings=[report(stream)])  # not its stream
    listed = assert_ok(alice_client.get(f"/streams/{stream.id}/recordings"), "Stream recordings")
    assert [r["id"] for r in listed] == [first["id"]]
    assert listed[0]["node"] == "rec-node" and listed[0]["bytes"] == 1_000_000
    # A report from another node about this recording changes nothing.
    node_report(node=stranger, streams=[], recordings=[{**first, "state": "done"}])
    assert Recording.objects.get().state == "recording"
    # The node's next report no longer lists it while it was recording: its agent stopped.
    node_report(node=node, streams=[], recordings=[])
    row = Recording.objects.get()
    assert row.state == "failed" and "agent stopped" in row.reason
    assert stream.stream_key not in str(listed)


def test_the_quota_refuses_recording_and_stops_running_recorders(
    alice_client: APIClient, recorded: tuple[Stream, IngestNode], settings: Any
) -> None:
    stream, node = recorded
    settings.RIG_RECORDING_QUOTA_MB = 1
    token_client = client_for(token=_token_of(node))
    big = report(stream, bytes=2 * 1024 * 1024)
    node_report(node=node, streams=[], recordings=[big])
    assert token_client.get("/agents/streams").json()["payload"][0]["record"] is False
    ended = {**big, "state": "done", "endedAt": time.time()}
    node_report(node=node, streams=[], recordings=[ended])
    assert Recording.objects.get().reason == "storage quota reached"
    alice_client.patch(f"/streams/{stream.id}", {"record": False}, format="json")
    body = assert_error(
        alice_client.patch(f"/streams/{stream.id}", {"record": True}, format="json"), 409, 1011
    )
    assert "of 1 MB used" in body["details"]["record"][0]
    assert Stream.objects.get(pk=stream.pk).record is False


def _token_of(node: IngestNode) -> str:
    """A fresh token for the node (the fixture's is not kept)."""
    from agents.models import new_node_token

    token = new_node_token()
    node.set_token(token)
    node.save()
    return token


def test_another_tenants_recording_is_404_like_a_missing_one(
    recorded: tuple[Stream, IngestNode], bob_client: APIClient
) -> None:
    stream, node = recorded
    row = report(stream, state="done")
    node_report(node=node, streams=[], recordings=[row])
    missing = str(uuid.uuid4())
    for method, suffix in [("get", ""), ("delete", ""), ("get", "/download")]:
        foreign = getattr(bob_client, method)(f"/recordings/{row['id']}{suffix}")
        unknown = getattr(bob_client, method)(f"/recordings/{missing}{suffix}")
        assert_error(foreign, 404, 1000)
        assert (foreign.status_code, foreign.content) == (unknown.status_code, unknown.content)
    assert_error(bob_client.get(f"/streams/{stream.id}/recordings"), 404, 1000)
    assert Recording.objects.count() == 1


def test_retention_deletes_old_recordings(recorded: tuple[Stream, IngestNode], settings) -> None:
    stream, node = recorded
    settings.RIG_RECORDING_RETENTION_DAYS = 7
    old, new = report(stream, state="done"), report(stream, state="done")
    node_report(node=node, streams=[], recordings=[old, new])
    Recording.objects.filter(pk=old["id"]).update(started_at=timezone.now() - timedelta(days=8))
    IngestNode.objects.filter(pk=node.pk).update(agent_url="")  # nothing to ask: the file is gone
    assert recordings_expire() == 1
    assert [str(pk) for pk in Recording.objects.values_list("pk", flat=True)] == [new["id"]]
