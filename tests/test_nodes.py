"""Ingest nodes at scale: heartbeats, the node watch (lost nodes), capacity, drain, and the
operators' node API."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import User
from agents.models import IngestNode, NodeWatch
from agents.tasks import nodes_check
from streams.models import Stream
from tests.conftest import assert_error, assert_ok, client_for
from tests.factories import (
    DestinationFactory,
    StreamFactory,
    UserFactory,
    node_create,
    session_start,
)
from tests.media.harness import free_port
from tests.test_agents_api import form_hook, relay_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(db: None) -> APIClient:
    return client_for(UserFactory.create(username="ops", is_staff=True))


def heartbeat(token: str, streams: list | None = None, **load: Any) -> Any:
    body: dict[str, Any] = {"streams": streams or [], "publishers": []}
    if load:
        body["load"] = load
    return client_for(token=token).post("/agents/status", body, format="json")


def _age(node: IngestNode, seconds: float) -> None:
    IngestNode.objects.filter(pk=node.pk).update(
        last_seen_at=timezone.now() - timedelta(seconds=seconds)
    )


# --- heartbeats and the node list ------------------------------------------------------------


def test_heartbeat_load_shows_in_the_node_list(
    staff_client: APIClient, node_and_token, alice: User
) -> None:
    _node, token = node_and_token
    stream = StreamFactory.create(owner=alice)
    DestinationFactory.create(stream=stream)
    DestinationFactory.create(stream=stream, service="Twitch")
    DestinationFactory.create(stream=stream, is_active=False)
    form_hook(token, "publish", stream.stream_key)
    assert_ok(heartbeat(token, relays=2, loadAvg1=0.42), "Status recorded")
    _idle, _ = node_create("node2", region="eu-west", capacity=10)
    nodes = assert_ok(staff_client.get("/agents/nodes"), "Ingest nodes")
    assert [n["name"] for n in nodes] == ["node1", "node2"]
    busy, fresh = nodes
    assert busy["health"] == "healthy" and busy["heartbeatAgeS"] < 5 and busy["lastSeen"]
    assert busy["load"] == {
        "streams": 1,
        "relays": 2,
        "relaysRunning": 2,
        "loadAvg1": 0.42,
        "utilization": 0.02,
    }
    assert fresh["health"] == "unknown" and fresh["lastSeen"] is None
    assert fresh["region"] == "eu-west" and fresh["capacity"] == 10
    assert fresh["load"]["streams"] == 0
    assert "token" not in str(nodes).lower()


def test_node_list_queries_do_not_grow_with_nodes(
    staff_client: APIClient, django_assert_num_queries
) -> None:
    for n in range(5):
        node_create(f"n{n}")
    with django_assert_num_queries(4):  # auth user, nodes, streams per node, relays per node
        staff_client.get("/agents/nodes")


def test_node_api_is_for_staff_only(
    alice_client: APIClient, anon_client: APIClient, node_and_token
) -> None:
    node, token = node_and_token
    for client, status, code in (
        (alice_client, 403, 1003),
        (anon_client, 401, 1003),
        (client_for(token=token), 401, 1003),
    ):
        assert_error(client.get("/agents/nodes"), status, code)
        assert_error(client.get(f"/agents/nodes/{node.pk}"), status, code)
        assert_error(
            client.patch(f"/agents/nodes/{node.pk}", {"isDraining": True}, format="json"),
            status,
            code,
        )
    assert IngestNode.objects.get(pk=node.pk).is_draining is False


@pytest.mark.parametrize(
    "body",
    [{"isDraining": "yes"}, {"capacity": "5"}, {"capacity": -1}, {"capacity": True}, {"x": 1}],
)
def test_node_update_bad_input_changes_nothing(staff_client, node: IngestNode, body) -> None:
    assert_error(staff_client.patch(f"/agents/nodes/{node.pk}", body, format="json"), 400, 1005)
    node.refresh_from_db()
    assert node.capacity == 100 and node.is_draining is False


@pytest.mark.parametrize("node_id", ["999999", "abc", "1" * 30, "%C2%B2", "%D9%A1"])
def test_unknown_node_is_404(staff_client: APIClient, node_id: str) -> None:
    assert_error(staff_client.get(f"/agents/nodes/{node_id}"), 404, 1000)


# --- drain ------------------------------------------------------------------------------------


def test_drain_refuses_new_publishes_and_keeps_live_ones(
    staff_client: APIClient, node_and_token, alice: User
) -> None:
    node, token = node_and_token
    on_air = StreamFactory.create(owner=alice)
    later = StreamFactory.create(owner=alice)
    assert form_hook(token, "publish", on_air.stream_key).status_code == 200
    drained = assert_ok(
        staff_client.patch(f"/agents/nodes/{node.pk}", {"isDraining": True}, format="json"),
        "Ingest node updated",
    )
    assert drained["isDraining"] is True and drained["load"]["streams"] == 1
    assert_error(form_hook(token, "publish", later.stream_key), 503, 1009)
    assert Stream.objects.get(pk=on_air.pk).is_streaming  # the live one goes on
    assert_ok(client_for(token=token).get("/agents/streams"), "Live streams for node")
    staff_client.patch(f"/agents/nodes/{node.pk}", {"isDraining": False}, format="json")
    assert form_hook(token, "publish", later.stream_key).status_code == 200


# --- capacity ---------------------------------------------------------------------------------


def test_node_at_capacity_refuses_with_a_clear_error(node_and_token, alice: User) -> None:
    node, token = node_and_token
    IngestNode.objects.filter(pk=node.pk).update(capacity=3)
    first, second, third = (StreamFactory.create(owner=alice) for _ in range(3))
    for n in range(2):
        DestinationFactory.create(stream=first, stream_key=f"a{n}")
        DestinationFactory.create(stream=second, stream_key=f"b{n}")
    DestinationFactory.create(stream=third, stream_key="c0")
    DestinationFactory.create(stream=first, is_active=False)  # inactive: runs no relay
    assert form_hook(token, "publish", first.stream_key).status_code == 200
    body = assert_error(form_hook(token, "publish", second.stream_key), 503, 1011)
    assert body["message"] == "Node is at capacity: publish to another node"
    assert body["details"] == {"capacity": ["2 of 3 relays in use, 2 more asked."]}
    assert not Stream.objects.get(pk=second.pk).is_streaming
    assert form_hook(token, "publish", third.stream_key).status_code == 200  # fits exactly
    _other, other_token = node_create("node2")
    assert form_hook(other_token, "publish", second.stream_key).status_code == 200


# --- the node watch ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _watch_running(watch_up: None) -> None:
    """These tests judge silence as a watch that has long been running would."""


def test_silent_node_is_lost_and_its_sessions_end(
    node_and_token, alice_client: APIClient, alice_stream: Stream, settings
) -> None:
    settings.RIG_NODE_STALE_S = 10
    node, token = node_and_token
    yt = DestinationFactory.create(stream=alice_stream)
    form_hook(token, "publish", alice_stream.stream_key)
    heartbeat(token, [{"streamKey": alice_stream.stream_key, "relays": [relay_report(yt.pk)]}])
    _age(node, 5)
    assert nodes_check() == []  # late, not lost yet
    _age(node, 11)
    assert nodes_check() == ["node1"]
    assert nodes_check() == []  # idempotent
    detail = assert_ok(alice_client.get(f"/streams/{alice_stream.id}"), "Stream detail")
    assert detail["isStreaming"] is False
    status = detail["provisionStatus"]
    assert status["state"] == "stopped" and status["reason"] == "node lost"
    assert status["destinations"][0]["state"] == "stopped"
    # While lost it accepts no publishes; its agent, if it is only cut off, is told to stop.
    assert_error(form_hook(token, "publish", alice_stream.stream_key), 503, 1009)
    assert assert_ok(client_for(token=token).get("/agents/streams"), "Live streams for node") == []
    # The publisher reconnects to another node: a new session, no wait.
    _other, other_token = node_create("node2", region="eu-west")
    assert form_hook(other_token, "publish", alice_stream.stream_key).status_code == 200
    status = assert_ok(alice_client.get(f"/streams/{alice_stream.id}"), "Stream detail")[
        "provisionStatus"
    ]
    assert status["node"] == "node2" and status["region"] == "eu-west"
    # The lost node reports again: healthy, and takes publishes again.
    heartbeat(token)
    node.refresh_from_db()
    assert node.lost_at is None


def test_nodes_never_seen_are_not_lost(node: IngestNode) -> None:
    assert nodes_check() == []
    node.refresh_from_db()
    assert node.lost_at is None


def test_lost_node_shows_in_the_node_list(staff_client: APIClient, node_and_token) -> None:
    node, token = node_and_token
    heartbeat(token)
    _age(node, 60)
    assert assert_ok(staff_client.get("/agents/nodes"), "Ingest nodes")[0]["health"] == "stale"
    nodes_check()
    lost = assert_ok(staff_client.get(f"/agents/nodes/{node.pk}"), "Ingest node")
    assert lost["health"] == "lost" and lost["lostAt"]
    heartbeat(token)
    back = assert_ok(staff_client.get(f"/agents/nodes/{node.pk}"), "Ingest node")
    assert back["health"] == "healthy" and back["lostAt"] is None


def test_provision_status_follows_the_node_heartbeat(
    node_and_token, alice_client: APIClient, alice_stream: Stream
) -> None:
    node, token = node_and_token
    IngestNode.objects.filter(pk=node.pk).update(hostname="ingest-1.example", region="us-east")
    form_hook(token, "publish", alice_stream.stream_key)
    heartbeat(token)
    node.refresh_from_db()
    assert node.last_seen_at is not None
    status = assert_ok(alice_client.get(f"/streams/{alice_stream.id}"), "Stream detail")[
        "provisionStatus"
    ]
    assert status["region"] == "us-east"
    assert status["server"] == {
        "hostname": "ingest-1.example",
        "lastCheck": node.last_seen_at.isoformat(),
    }


@pytest.mark.parametrize(
    ("load", "code"),
    [
        ({"relays": -1}, 1005),
        ({"relays": "2"}, 1005),
        ({"relays": 1, "x": 2}, 1005),
        ({"relays": 1, "loadAvg1": "high"}, 1005),
        ({"loadAvg1": 1.0}, 1004),
    ],
)
def test_bad_heartbeat_load_is_refused(
    node_and_token: tuple[IngestNode, str], load: dict, code: int
) -> None:
    node, token = node_and_token
    body = {"streams": [], "load": load}
    assert_error(client_for(token=token).post("/agents/status", body, format="json"), 400, code)
    node.refresh_from_db()
    assert node.last_seen_at is None  # a refused report is not a heartbeat


def _lose(node: IngestNode, settings) -> None:
    _age(node, settings.RIG_NODE_STALE_S + 1)
    assert nodes_check() == [node.name]


def test_node_back_with_the_same_publisher_takes_its_session_back(
    node_and_token, alice_client: APIClient, alice_stream: Stream, settings
) -> None:
    node, token = node_and_token
    yt = DestinationFactory.create(stream=alice_stream)
    form_hook(token, "publish", alice_stream.stream_key, clientid="42")
    _lose(node, settings)
    assert not Stream.objects.get(pk=alice_stream.pk).is_streaming
    # The cut-off node reports again: its nginx still has the publisher, its relay still runs.
    report = [{"streamKey": alice_stream.stream_key, "relays": [relay_report(yt.pk)]}]
    body = {"streams": report, "publishers": [alice_stream.stream_key]}
    assert_ok(
        client_for(token=token).post("/agents/status", body, format="json"), "Status recorded"
    )
    detail = assert_ok(alice_client.get(f"/streams/{alice_stream.id}"), "Stream detail")
    assert detail["isStreaming"] is True
    status = detail["provisionStatus"]
    assert status["state"] == "live" and status["reason"] is None and status["endedAt"] is None
    assert status["node"] == "node1" and status["resumedAt"]
    live = assert_ok(client_for(token=token).get("/agents/streams"), "Live streams for node")
    assert [s["streamKey"] for s in live] == [alice_stream.stream_key]
    # It is the same session: nginx's publish_done for that connection ends it.
    form_hook(token, "publish_done", alice_stream.stream_key, clientid="42")
    assert not Stream.objects.get(pk=alice_stream.pk).is_streaming


@pytest.mark.parametrize("meanwhile", ["moved", "deactivated", "key changed"])
def test_node_back_does_not_take_back_what_changed_meanwhile(
    node_and_token, alice_client: APIClient, alice_stream: Stream, settings, meanwhile: str
) -> None:
    node, token = node_and_token
    key = alice_stream.stream_key
    form_hook(token, "publish", key)
    _lose(node, settings)
    if meanwhile == "moved":
        _, other_token = node_create("node2")
        assert form_hook(other_token, "publish", key).status_code == 200
    elif meanwhile == "deactivated":
        alice_client.patch(f"/streams/{alice_stream.id}", {"isActive": False}, format="json")
    else:
        alice_client.post(f"/streams/{alice_stream.id}/changeKey")
    body = {"streams": [], "publishers": [key]}
    assert_ok(
        client_for(token=token).post("/agents/status", body, format="json"), "Status recorded"
    )
    assert assert_ok(client_for(token=token).get("/agents/streams"), "Live streams for node") == []
    stream = Stream.objects.get(pk=alice_stream.pk)
    assert stream.is_streaming is (meanwhile == "moved")
    assert stream.session is not None
    assert stream.session.node_id != node.pk or not stream.is_streaming


# --- where OBS should connect -----------------------------------------------------------------


def test_ingest_servers_lists_nodes_that_take_publishes(
    alice_client: APIClient, alice: User, settings
) -> None:
    assert assert_ok(alice_client.get("/ingests"), "Ingest servers") == [
        {"name": "default", "region": None, "rtmpUrl": settings.RIG_INGEST_URL, "recommended": True}
    ]
    busy_eu, busy_token = node_create("eu-1", region="eu-west", capacity=4)
    node_create("eu-2", region="eu-west", capacity=4)
    node_create("us-1", region="us-east", capacity=4)
    node_create("drained", region="eu-west", is_draining=True)
    node_create("full", region="eu-west", capacity=1)
    node_create("lost", region="eu-west", lost_at=timezone.now())
    node_create("silent", region="eu-west")  # never reported: not offered
    for node in IngestNode.objects.exclude(name="silent"):
        IngestNode.objects.filter(pk=node.pk).update(last_seen_at=timezone.now())
    stream = StreamFactory.create(owner=alice)
    DestinationFactory.create(stream=stream)
    form_hook(busy_token, "publish", stream.stream_key)
    full = IngestNode.objects.get(name="full")
    other = StreamFactory.create(owner=alice)
    DestinationFactory.create(stream=other)
    session_start(other, full)

    servers = assert_ok(alice_client.get("/ingests?region=eu-west"), "Ingest servers")
    assert [(s["name"], s["region"], s["recommended"]) for s in servers] == [
        ("eu-1", "eu-west", False),  # one relay in use
        ("eu-2", "eu-west", True),  # idle, in the asked region
        ("us-1", "us-east", False),
    ]
    assert servers[0]["rtmpUrl"] == busy_eu.rtmp_url
    by_name = {
        s["name"]: s["recommended"]
        for s in assert_ok(alice_client.get("/ingests"), "Ingest servers")
    }
    assert by_name == {"eu-1": False, "eu-2": True, "us-1": False}  # eu-2 before us-1 by name
    unknown_region = assert_ok(alice_client.get("/ingests?region=mars"), "Ingest servers")
    assert [s["name"] for s in unknown_region if s["recommended"]] == ["eu-2"]
    assert "capacity" not in str(servers) and "load" not in str(servers)


def test_ingest_servers_need_a_user(anon_client: APIClient, node_client: APIClient) -> None:
    assert_error(anon_client.get("/ingests"), 401, 1003)
    assert_error(node_client.get("/ingests"), 401, 1003)


def test_ingest_servers_queries_do_not_grow_with_nodes(
    alice_client: APIClient, django_assert_num_queries
) -> None:
    for n in range(5):
        node_create(f"n{n}", last_seen_at=timezone.now())
    with django_assert_num_queries(4):  # auth user, nodes, streams per node, relays per node
        assert len(assert_ok(alice_client.get("/ingests"), "Ingest servers")) == 5


def test_a_control_plane_outage_declares_no_node_lost(
    node_and_token, settings, live_server
) -> None:
    """While the API does not answer where the nodes reach it, no node can report: silence then
    is no node's fault, and none is declared lost (no sessions ended, no webhooks)."""
    node, token = node_and_token
    heartbeat(token)
    _age(node, 60)
    settings.RIG_API_URL = f"http://127.0.0.1:{free_port()}"  # nothing answers there
    assert nodes_check() == []
    settings.RIG_API_URL = live_server.url
    assert nodes_check() == []  # back: every node gets the full window to report again
    watch = NodeWatch.objects.get()
    assert watch.up_since is not None and watch.checked_at == watch.up_since
    NodeWatch.objects.update(
        up_since=timezone.now() - timedelta(seconds=settings.RIG_NODE_STALE_S + 1)
    )
    assert nodes_check() == [node.name]  # still silent a whole window after: lost


def test_a_watch_that_did_not_run_gives_nodes_their_grace(node_and_token, settings) -> None:
    """The workers (or the whole control plane) were down: the watch starts counting anew."""
    node, token = node_and_token
    heartbeat(token)
    _age(node, 600)
    NodeWatch.objects.update(checked_at=timezone.now() - timedelta(minutes=10))
    assert nodes_check() == []
    node.refresh_from_db()
    assert node.lost_at is None
