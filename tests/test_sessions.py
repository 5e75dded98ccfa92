"""Publish sessions: one row per publish, the history users read, and the node's status report
staying within its budget at full capacity (logs travel as new lines only)."""

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from agents.models import IngestNode
from agents.node.agent import Agent
from agents.node.config import AgentConfig
from agents.node.protocol import LOG_LINES_KEPT, REPORT_BUDGET_BYTES, RelayState
from agents.node.relay import RelaySnapshot
from streams.models import Relay, Session, Stream
from tests.conftest import assert_error, assert_ok, client_for
from tests.factories import DestinationFactory, StreamFactory
from tests.test_agents_api import form_hook, relay_report

pytestmark = pytest.mark.django_db


def _report(token: str, stream: Stream, *relays: dict[str, Any]) -> None:
    body = {"streams": [{"streamKey": stream.stream_key, "relays": list(relays)}]}
    assert_ok(
        client_for(token=token).post("/agents/status", body, format="json"), "Status recorded"
    )


def test_each_publish_is_a_session_in_the_history(
    node_and_token: tuple[IngestNode, str], alice_client: APIClient, alice_stream: Stream
) -> None:
    _, token = node_and_token
    yt = DestinationFactory.create(stream=alice_stream)
    tw = DestinationFactory.create(stream=alice_stream, service="Twitch")
    url = f"/streams/{alice_stream.id}/sessions"
    assert assert_ok(alice_client.get(url), "Stream sessions") == []

    form_hook(token, "publish", alice_stream.stream_key, clientid="1")
    _report(token, alice_stream, relay_report(yt.pk, bytesSent=5000, restarts=2))
    form_hook(token, "publish_done", alice_stream.stream_key, clientid="1")
    form_hook(token, "publish", alice_stream.stream_key, clientid="2")
    _report(token, alice_stream, relay_report(tw.pk, "failed", bytesSent=0, lastError="refused"))

    live, first = assert_ok(alice_client.get(url), "Stream sessions")  # newest first
    assert live["endedAt"] is None and live["reason"] is None and live["node"] == "node1"
    assert [(d["id"], d["service"], d["state"], d["lastError"]) for d in live["destinations"]] == [
        (tw.pk, "Twitch", "failed", "refused")
    ]
    assert first["reason"] == "publisher disconnected" and first["endedAt"] >= first["startedAt"]
    assert first["durationS"] >= 0
    # The ended session's relay stopped with what it had sent; the new one starts from zero.
    assert [
        (d["id"], d["state"], d["bytesSent"], d["restarts"]) for d in first["destinations"]
    ] == [(yt.pk, "stopped", 5000, 2)]
    relays = assert_ok(alice_client.get(f"/streams/{alice_stream.id}/relays"), "Stream relays")
    assert [(r["id"], r["state"], r["bytesSent"]) for r in relays] == [
        (yt.pk, "pending", 0),  # nothing reported in this session yet
        (tw.pk, "failed", 0),
    ]

    # A deleted destination stays in the history, without its id.
    alice_client.delete(f"/streams/{alice_stream.id}/destinations/{yt.pk}")
    _, first = assert_ok(alice_client.get(url), "Stream sessions")
    assert [(d["id"], d["service"], d["bytesSent"]) for d in first["destinations"]] == [
        (None, "YouTube", 5000)
    ]


def test_relays_the_node_stopped_after_its_publisher_left_are_not_shown_live(
    node_and_token: tuple[IngestNode, str], alice_client: APIClient, alice_stream: Stream
) -> None:
    """nginx died: the node no longer lists the publisher and stops the stream's relays at
    once, so its reports leave the stream out. Until the session ends (the publisher gone
    for RIG_PUBLISHER_STALE_S), the API must not keep saying the destination is live."""
    _, token = node_and_token
    yt = DestinationFactory.create(stream=alice_stream)
    other = StreamFactory.create(owner=alice_stream.owner)
    tw = DestinationFactory.create(stream=other, service="Twitch")
    form_hook(token, "publish", alice_stream.stream_key, clientid="1")
    form_hook(token, "publish", other.stream_key, clientid="2")
    mine = {"streamKey": alice_stream.stream_key, "relays": [relay_report(yt.pk)]}
    theirs = {"streamKey": other.stream_key, "relays": [relay_report(tw.pk)]}
    body = {"streams": [mine, theirs], "publishers": [alice_stream.stream_key, other.stream_key]}
    node = client_for(token=token)
    assert_ok(node.post("/agents/status", body, format="json"), "Status recorded")
    url = f"/streams/{alice_stream.id}/relays"
    assert [r["state"] for r in assert_ok(alice_client.get(url), "Stream relays")] == ["live"]

    body = {"streams": [theirs], "publishers": [other.stream_key]}
    assert_ok(node.post("/agents/status", body, format="json"), "Status recorded")
    relays = assert_ok(alice_client.get(url), "Stream relays")
    assert [(r["state"], r["bitrateKbps"]) for r in relays] == [("stopped", None)]
    assert alice_client.get(f"/streams/{alice_stream.id}").json()["payload"]["isStreaming"]
    others = assert_ok(alice_client.get(f"/streams/{other.id}/relays"), "Stream relays")
    assert [r["state"] for r in others] == ["live"]  # still reported: untouched


def test_history_pages_back_and_is_the_owners_only(
    node_and_token: tuple[IngestNode, str],
    alice_client: APIClient,
    alice_stream: Stream,
    bob: User,
    settings: Any,
) -> None:
    _, token = node_and_token
    settings.RIG_SESSIONS_PAGE = 3
    settings.RIG_SESSIONS_KEPT = 5
    for n in range(7):
        form_hook(token, "publish", alice_stream.stream_key, clientid=str(n))
        form_hook(token, "publish_done", alice_stream.stream_key, clientid=str(n))
    assert alice_stream.sessions.count() == 5  # the oldest are pruned
    url = f"/streams/{alice_stream.id}/sessions"
    pages = [assert_ok(alice_client.get(url), "Stream sessions")]
    while pages[-1]:
        before = pages[-1][-1]["id"]
        pages.append(assert_ok(alice_client.get(f"{url}?before={before}"), "Stream sessions"))
    assert [len(page) for page in pages] == [3, 2, 0]
    sessions = [s for page in pages for s in page]
    starts = [s["startedAt"] for s in sessions]
    assert starts == sorted(starts, reverse=True) and len({s["id"] for s in sessions}) == 5

    bob_client = client_for(bob)
    missing = assert_error(bob_client.get(url), 404, 1000)  # another tenant's stream
    unknown = assert_error(
        bob_client.get(f"/streams/{StreamFactory.build().id}/sessions"), 404, 1000
    )
    assert missing == unknown
    for before in ["nope", "\x00", str(StreamFactory.build().id)]:
        assert_error(alice_client.get(url, {"before": before}), 400, 1005)
    bobs = StreamFactory.create(owner=bob)
    form_hook(token, "publish", bobs.stream_key, clientid="99")
    foreign = str(Session.objects.get(stream=bobs).pk)  # not a session of this stream
    assert_error(alice_client.get(url, {"before": foreign}), 400, 1005)


def test_a_node_at_full_capacity_with_busy_logs_is_heard(
    node_and_token: tuple[IngestNode, str], alice: User, settings: Any, monkeypatch: Any
) -> None:
    """100 relays (the default capacity), each with a long error and a log that filled up:
    every report stays within the budget and is accepted, so the node is never declared lost
    for talking too much, and every line reaches the control plane in order, over a few
    reports."""
    node, token = node_and_token
    assert node.capacity == 100
    settings.RIG_MAX_STREAMS_PER_USER = settings.RIG_MAX_DESTINATIONS_PER_STREAM = 100
    streams = [StreamFactory.create(owner=alice) for _ in range(10)]
    for n, stream in enumerate(streams):
        for _ in range(10):
            DestinationFactory.create(stream=stream)
        assert form_hook(token, "publish", stream.stream_key, clientid=str(n)).status_code == 200

    def snapshots(lines: int) -> list[RelaySnapshot]:
        return [
            RelaySnapshot(
                relay_id=f"{d.stream_id}:{d.pk}",
                stream_id=str(d.stream_id),
                destination_id=d.pk,
                state=RelayState.RECONNECTING,
                bitrate_kbps=None,
                fps=None,
                bytes_sent=10**9,
                restarts=7,
                since=1_790_000_000.0,
                last_error="[error] " + "x" * 1990,
                log=tuple(f"{d.pk} line {i} " + "y" * 250 for i in range(lines - 100, lines)),
                pid=None,
                log_total=lines,
            )
            for stream in streams
            for d in stream.destinations.all()
        ]

    config = AgentConfig(control_url="http://127.0.0.1:9", token=token, listen_port=0)
    agent = Agent(config)
    agent._keys = {str(s.id): s.stream_key for s in streams}
    node_client = client_for(token=token)
    reports = 0
    for lines in (100, 160):  # a full log; then 60 new lines on every relay
        current = snapshots(lines)
        monkeypatch.setattr(agent.supervisor, "states", lambda current=current: current)
        while True:
            body, cursor = agent.status_report([s.stream_key for s in streams])
            assert len(json.dumps(body, separators=(",", ":"))) <= REPORT_BUDGET_BYTES
            response = node_client.post("/agents/status", body, format="json")
            assert assert_ok(response, "Status recorded") == {"relays": 100}
            reports += 1
            if cursor == agent._log_sent:
                break  # nothing new went in: every line was delivered
            agent._log_sent = cursor
        for snapshot in current:
            relay = Relay.objects.get(destination_id=snapshot.destination_id)
            assert relay.log == list(snapshot.log)[-LOG_LINES_KEPT:]
            assert relay.restarts == 7 and relay.last_error.startswith("[error] xxx")
    print(f"\n[node report] 100 relays, 160 log lines each: delivered in {reports} reports")
    assert reports < 80
