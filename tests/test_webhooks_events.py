"""Events: emitted with the change that causes them (publish hooks, relay reports), only to the
owner's matching active webhooks, and enqueued only after commit."""

from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from streams.models import Session, Stream
from tests.conftest import assert_ok, client_for
from tests.factories import DestinationFactory, StreamFactory
from tests.test_agents_api import form_hook, relay_report
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.tasks import delivery_send

pytestmark = pytest.mark.django_db


def webhook(owner: User, events: list[str] | None = None, **fields: Any) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        owner=owner, url="https://hooks.example.com/x", events=events or [], **fields
    )


def sent(endpoint: WebhookEndpoint) -> list[tuple[str, dict]]:
    deliveries = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("id")
    return [(d.event, d.payload) for d in deliveries]


@pytest.fixture
def enqueued(monkeypatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(delivery_send, "delay", calls.append)
    return calls


def test_publish_and_publish_done_emit_stream_events(
    node_and_token,
    alice: User,
    bob: User,
    alice_stream: Stream,
    enqueued,
    django_capture_on_commit_callbacks,
) -> None:
    _, token = node_and_token
    every = webhook(alice)
    ended_only = webhook(alice, ["stream.ended"])
    inactive = webhook(alice, is_active=False)
    bobs = webhook(bob)
    with django_capture_on_commit_callbacks(execute=True):
        assert_ok(form_hook(token, "publish", alice_stream.stream_key), "OK")
    [(event, body)] = sent(every)
    assert event == "stream.live"
    assert set(body) == {"id", "event", "createdAt", "data"}
    assert body["event"] == "stream.live"
    assert body["data"]["streamID"] == str(alice_stream.id)
    assert body["data"]["node"] == "node1"
    assert body["data"]["startedAt"] is not None
    assert alice_stream.stream_key not in str(body)
    assert sent(ended_only) == []
    with django_capture_on_commit_callbacks(execute=True):
        assert_ok(form_hook(token, "publish_done", alice_stream.stream_key), "OK")
    events = sent(every)
    assert [event for event, _ in events] == ["stream.live", "stream.ended"]
    ended = events[1][1]["data"]
    assert ended["reason"] == "publisher disconnected"
    assert ended["endedAt"] is not None
    assert [event for event, _ in sent(ended_only)] == ["stream.ended"]
    assert sent(inactive) == [] and sent(bobs) == []
    assert len(enqueued) == 3  # one task per delivery row


def test_same_publisher_again_emits_nothing_new(node_and_token, alice, alice_stream, enqueued):
    _, token = node_and_token
    every = webhook(alice)
    form_hook(token, "publish", alice_stream.stream_key)
    form_hook(token, "publish", alice_stream.stream_key)
    assert [event for event, _ in sent(every)] == ["stream.live"]


def test_key_rotation_ends_the_session_with_an_event(
    node_and_token, alice, alice_client: APIClient, alice_stream, enqueued
) -> None:
    _, token = node_and_token
    every = webhook(alice)
    form_hook(token, "publish", alice_stream.stream_key)
    old_key = alice_stream.stream_key
    assert_ok(alice_client.post(f"/streams/{alice_stream.id}/changeKey"), "New stream key")
    event, body = sent(every)[-1]
    assert event == "stream.ended"
    assert body["data"]["reason"] == "stream key changed"
    assert old_key not in str(sent(every))


def test_events_leave_only_after_commit(
    node_and_token, alice, alice_stream, django_capture_on_commit_callbacks, enqueued
) -> None:
    _, token = node_and_token
    webhook(alice)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert_ok(form_hook(token, "publish", alice_stream.stream_key), "OK")
    assert enqueued == []
    for callback in callbacks:
        callback()
    assert enqueued == list(WebhookDelivery.objects.values_list("id", flat=True))


def test_broker_down_does_not_fail_the_publish(
    node_and_token, alice, alice_stream, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    def broker_down(delivery_id: int) -> None:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(delivery_send, "delay", broker_down)
    _, token = node_and_token
    every = webhook(alice)
    with django_capture_on_commit_callbacks(execute=True):
        assert_ok(form_hook(token, "publish", alice_stream.stream_key), "OK")
    alice_stream.refresh_from_db()
    assert alice_stream.is_streaming
    assert WebhookDelivery.objects.get(endpoint=every).status == "pending"  # for the sweep


def report(token: str, stream: Stream, *relays: dict) -> None:
    body = {"streams": [{"streamKey": stream.stream_key, "relays": list(relays)}]}
    assert_ok(
        client_for(token=token).post("/agents/status", body, format="json"), "Status recorded"
    )


def test_relay_transitions_emit_destination_events(
    node_and_token, alice, alice_stream, enqueued
) -> None:
    _, token = node_and_token
    every = webhook(alice, ["destination.live", "destination.failed", "destination.recovered"])
    yt = DestinationFactory.create(stream=alice_stream, stream_key="secret-yt-key")
    form_hook(token, "publish", alice_stream.stream_key)
    states = [
        "starting",  # nothing
        "live",  # destination.live
        "live",  # nothing
        "reconnecting",  # nothing
        "live",  # destination.recovered
        "failed",  # destination.failed
        "failed",  # nothing
        "live",  # destination.recovered
    ]
    for state in states:
        error = "Connection refused" if state == "failed" else None
        report(token, alice_stream, relay_report(yt.pk, state, lastError=error))
    events = sent(every)
    assert [event for event, _ in events] == [
        "destination.live",
        "destination.recovered",
        "destination.failed",
        "destination.recovered",
    ]
    failed = events[2][1]["data"]
    assert failed == {
        "streamID": str(alice_stream.id),
        "destinationId": yt.pk,
        "service": "YouTube",
        "state": "failed",
        "lastError": "Connection refused",
    }
    assert "secret-yt-key" not in str(events)


def test_first_report_failed_and_two_users_in_one_report(
    node_and_token, alice, bob, enqueued
) -> None:
    _, token = node_and_token
    alices, bobs = webhook(alice), webhook(bob)
    a_stream, b_stream = StreamFactory.create(owner=alice), StreamFactory.create(owner=bob)
    a_dest = DestinationFactory.create(stream=a_stream)
    b_dest = DestinationFactory.create(stream=b_stream, service="Twitch")
    form_hook(token, "publish", a_stream.stream_key, clientid="1")
    form_hook(token, "publish", b_stream.stream_key, clientid="2")
    body = {
        "streams": [
            {"streamKey": a_stream.stream_key, "relays": [relay_report(a_dest.pk, "failed")]},
            {"streamKey": b_stream.stream_key, "relays": [relay_report(b_dest.pk, "live")]},
        ]
    }
    client_for(token=token).post("/agents/status", body, format="json")
    assert [(e, p["data"]["destinationId"]) for e, p in sent(alices)[1:]] == [
        ("destination.failed", a_dest.pk)
    ]
    assert [(e, p["data"]["service"]) for e, p in sent(bobs)[1:]] == [
        ("destination.live", "Twitch")
    ]


def test_report_costs_one_query_more_when_nothing_changes(
    node_and_token, alice, alice_stream, django_assert_num_queries, enqueued
) -> None:
    """Steady state (every relay still live): one read of the previous states, no emission."""
    _, token = node_and_token
    webhook(alice)
    destinations = [DestinationFactory.create(stream=alice_stream) for _ in range(5)]
    form_hook(token, "publish", alice_stream.stream_key)
    relays = [relay_report(d.pk) for d in destinations]
    report(token, alice_stream, *relays)
    before = WebhookDelivery.objects.count()
    for relay in relays:  # steady state: no new log lines either
        del relay["newLog"]
    # node lookup, last_seen_at, the lock on the streams it writes for, served streams, owned
    # destinations, previous states, upsert, plus the transaction's savepoint pair
    with django_assert_num_queries(9):
        report(token, alice_stream, *relays)
    assert WebhookDelivery.objects.count() == before


def test_lost_node_tells_each_owner_once_which_streams_it_took_down(
    node_and_token, alice, bob, settings, enqueued, watch_up
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from agents.models import IngestNode
    from agents.tasks import nodes_check

    node, token = node_and_token
    alices, bobs, quiet = webhook(alice), webhook(bob, ["node.lost"]), webhook(bob, ["ping"])
    first, second = StreamFactory.create(owner=alice), StreamFactory.create(owner=alice)
    third = StreamFactory.create(owner=bob)
    for stream in (first, second, third):
        assert form_hook(token, "publish", stream.stream_key).status_code == 200
    IngestNode.objects.filter(pk=node.pk).update(
        last_seen_at=timezone.now() - timedelta(seconds=settings.RIG_NODE_STALE_S + 1)
    )
    assert nodes_check() == ["node1"]
    lost = [p["data"] for e, p in sent(alices) if e == "node.lost"]
    assert len(lost) == 1
    assert lost[0]["node"] == "node1" and lost[0]["region"] == "local" and lost[0]["lostAt"]
    assert sorted(lost[0]["streamIDs"]) == sorted([str(first.id), str(second.id)])
    ended = [p["data"] for e, p in sent(alices) if e == "stream.ended"]
    assert {d["reason"] for d in ended} == {"node lost"} and len(ended) == 2
    assert [(e, p["data"]["streamIDs"]) for e, p in sent(bobs)] == [("node.lost", [str(third.id)])]
    assert sent(quiet) == []
    assert nodes_check() == []  # once
    assert len([e for e, _ in sent(alices) if e == "node.lost"]) == 1


def test_stale_session_taken_over_ends_with_an_event(
    node_and_token, alice, alice_stream, settings, enqueued
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from tests.factories import node_create

    _, token = node_and_token
    hook = webhook(alice)
    form_hook(token, "publish", alice_stream.stream_key)
    Session.objects.filter(stream=alice_stream).update(
        publisher_seen_at=timezone.now() - timedelta(seconds=settings.RIG_PUBLISHER_STALE_S + 1)
    )
    _, other_token = node_create("node2")
    assert (
        form_hook(other_token, "publish", alice_stream.stream_key, clientid="9").status_code == 200
    )
    events = [(e, p["data"]["node"], p["data"]["reason"]) for e, p in sent(hook)]
    assert events == [
        ("stream.live", "node1", None),
        ("stream.ended", "node1", "publisher replaced"),
        ("stream.live", "node2", None),
    ]


def test_deleting_a_live_stream_ends_its_session_with_an_event(
    node_and_token, alice, alice_client: APIClient, alice_stream, enqueued
) -> None:
    _, token = node_and_token
    hook = webhook(alice)
    form_hook(token, "publish", alice_stream.stream_key)
    assert_ok(alice_client.delete(f"/streams/{alice_stream.id}"), "Stream deleted")
    assert [(e, p["data"]["reason"]) for e, p in sent(hook)] == [
        ("stream.live", None),
        ("stream.ended", "stream deleted"),
    ]
