"""Two ingest nodes on one machine: each serves what is published to it; a node that stops
reporting is declared lost by the node watch (celery beat), its streams move to the other node
when the publisher reconnects, and when it comes back it stops what it should no longer run.

Each node is its own nginx-rtmp and agent process with its own token and ports, on loopback."""

import signal
import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.node.ingest import live_publishers
from tests.conftest import client_for
from tests.factories import UserFactory
from tests.media.conftest import RigNode, create_stream, detail_of
from tests.media.harness import Platform, relay_pids, viewer_frames, wait_until

pytestmark = [pytest.mark.media, pytest.mark.timeout(300)]

STALE_S = 4  # the node watch's threshold here (production default: 10 s)


@pytest.fixture
def celery_worker_options() -> dict[str, Any]:
    return {"beat": True, "env": {"RIG_NODE_STALE_S": str(STALE_S), "RIG_NODE_CHECK_S": "1"}}


@pytest.fixture
def two_nodes(rig_nodes, settings) -> tuple[RigNode, RigNode]:
    settings.RIG_NODE_STALE_S = STALE_S  # the API's view of health matches the watch
    return rig_nodes("node-a", region="eu-west"), rig_nodes("node-b", region="us-east")


@pytest.fixture
def operator(transactional_db: None) -> APIClient:
    return client_for(UserFactory.create(username="ops", is_staff=True))


def _relays_on(node: RigNode, stream: dict[str, Any]) -> list[int]:
    """Processes on this node relaying this stream to its destinations."""
    return relay_pids(stream["streamKey"], node.ingest.cfg)


def _served_by(client: APIClient, stream_id: str, node: str) -> dict[str, Any] | None:
    detail = detail_of(client, stream_id)
    status = detail["provisionStatus"] or {}
    live = detail["isStreaming"] and status.get("node") == node and status.get("state") == "live"
    return detail if live else None


def _nodes(operator: APIClient) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in operator.get("/agents/nodes").json()["payload"]}


def test_lost_node_streams_move_to_the_other_node(
    two_nodes,
    streamer: APIClient,
    operator: APIClient,
    youtube: Platform,
    twitch: Platform,
    tmp_path,
) -> None:
    a, b = two_nodes
    first = create_stream(streamer, YouTube="yt-first")
    second = create_stream(streamer, Twitch="tw-second")
    streamer.patch(f"/streams/{first['id']}", {"record": True}, format="json")
    a.publish(first["streamKey"])
    b.publish(second["streamKey"])
    detail = wait_until(lambda: _served_by(streamer, first["id"], "node-a"), 30)
    assert detail["provisionStatus"]["region"] == "eu-west"
    assert detail["ingestServer"] == f"rtmp://127.0.0.1:{a.rtmp_port}/live"
    wait_until(lambda: _served_by(streamer, second["id"], "node-b"), 30)
    assert _relays_on(a, first) and not _relays_on(b, first)
    assert _relays_on(b, second) and not _relays_on(a, second)
    nodes = wait_until(
        lambda: (
            (n := _nodes(operator))
            and all(node["load"]["relaysRunning"] == 1 for node in n.values())
            and n
        ),
        10,
    )
    assert {name: n["health"] for name, n in nodes.items()} == {
        "node-a": "healthy",
        "node-b": "healthy",
    }
    assert {name: n["load"]["streams"] for name, n in nodes.items()} == {"node-a": 1, "node-b": 1}
    tw_client, _ = twitch.publishers()["tw-second"]
    # The recording on node A has written something (its first fragment) before the loss.
    wait_until(
        lambda: any(
            r["bytes"] > 0
            for r in streamer.get(f"/streams/{first['id']}/recordings").json()["payload"]
        ),
        15,
    )

    a.stop_agent(signal.SIGKILL)  # node A's agent dies; its relays die with it
    killed = time.monotonic()
    detail = wait_until(
        lambda: (d := detail_of(streamer, first["id"]))["isStreaming"] is False and d, 20, 0.1
    )
    detected_after = time.monotonic() - killed
    assert detail["provisionStatus"]["reason"] == "node lost"
    assert detected_after < STALE_S + 5, f"node loss seen after {detected_after:.1f}s"
    assert _nodes(operator)["node-a"]["health"] == "lost"
    # Node B and its stream never noticed.
    assert _served_by(streamer, second["id"], "node-b")
    assert twitch.publishers()["tw-second"][0] == tw_client

    # OBS reconnects, this time to node B: the relays are provisioned there.
    for process in a.publishers:
        process.terminate()
    reconnected = time.monotonic()
    b.publish(first["streamKey"])
    wait_until(lambda: "yt-first" in youtube.publishers(), 20, 0.1)
    reprovisioned_after = time.monotonic() - reconnected
    frames = viewer_frames(f"{youtube.base_url}/yt-first", tmp_path / "yt.flv")
    assert frames.get("video", 0) > 10 and frames.get("audio", 0) > 10
    detail = wait_until(lambda: _served_by(streamer, first["id"], "node-b"), 20)
    assert detail["provisionStatus"]["region"] == "us-east"
    assert _relays_on(b, first) and not _relays_on(a, first)
    # Recorded on both nodes: two recordings, both listed, the first cut short by the loss.
    recordings = wait_until(
        lambda: (
            len(r := streamer.get(f"/streams/{first['id']}/recordings").json()["payload"]) == 2
            and r
        ),
        15,
    )
    assert [(r["node"], r["state"]) for r in recordings] == [
        ("node-b", "recording"),
        ("node-a", "failed"),
    ]
    assert recordings[1]["reason"] == "node lost" and recordings[1]["bytes"] > 0

    # Node A comes back: healthy again, and it runs nothing it should not.
    a.start_agent()
    wait_until(lambda: _nodes(operator)["node-a"]["health"] == "healthy", 15)
    time.sleep(2)
    assert not _relays_on(a, first) and not _relays_on(a, second)
    assert _served_by(streamer, first["id"], "node-b")
    print(
        f"\nnode loss detected after {detected_after:.2f}s (stale {STALE_S}s, check 1s, "
        f"heartbeat 1s); re-provisioned on node B {reprovisioned_after:.2f}s after reconnect"
    )


def test_cut_off_node_stops_its_stale_relays_when_it_returns(
    two_nodes, streamer: APIClient, youtube: Platform, tmp_path
) -> None:
    a, b = two_nodes
    stream = create_stream(streamer, YouTube="yt-cut")
    a.publish(stream["streamKey"])
    wait_until(lambda: _served_by(streamer, stream["id"], "node-a"), 30)
    assert a.agent is not None
    a.agent.send_signal(signal.SIGSTOP)  # node A is cut off: no heartbeats, relays go on
    wait_until(
        lambda: (d := detail_of(streamer, stream["id"]))["isStreaming"] is False and d, 20, 0.1
    )
    assert _relays_on(a, stream), "the cut-off node's relay should still be running"

    b.publish(stream["streamKey"])  # the streamer's OBS reconnects elsewhere
    wait_until(
        lambda: (
            (detail_of(streamer, stream["id"])["provisionStatus"] or {}).get("node") == "node-b"
        ),
        20,
    )
    a.agent.send_signal(signal.SIGCONT)  # node A is back, with a stale relay and publisher
    stat = f"http://127.0.0.1:{a.ingest.cfg.http_port}"
    wait_until(lambda: not _relays_on(a, stream), 15, 0.2)
    wait_until(lambda: not live_publishers(stat), 15, 0.2)
    # With A's stale push gone, B's relay gets the destination.
    wait_until(lambda: _served_by(streamer, stream["id"], "node-b"), 30)
    assert _relays_on(b, stream)
    frames = viewer_frames(f"{youtube.base_url}/yt-cut", tmp_path / "yt.flv")
    assert frames.get("video", 0) > 10 and frames.get("audio", 0) > 10


def test_cut_off_node_keeps_its_stream_when_nothing_moved(
    two_nodes, streamer: APIClient, youtube: Platform
) -> None:
    a, _ = two_nodes
    stream = create_stream(streamer, YouTube="yt-keep")
    a.publish(stream["streamKey"])
    wait_until(lambda: _served_by(streamer, stream["id"], "node-a"), 30)
    yt_client, _ = youtube.publishers()["yt-keep"]
    assert a.agent is not None
    a.agent.send_signal(signal.SIGSTOP)  # cut off: declared lost, but OBS and the relay go on
    wait_until(
        lambda: (d := detail_of(streamer, stream["id"]))["isStreaming"] is False and d, 20, 0.1
    )
    a.agent.send_signal(signal.SIGCONT)
    detail = wait_until(lambda: _served_by(streamer, stream["id"], "node-a"), 20)
    assert detail["provisionStatus"]["resumedAt"]
    time.sleep(6)  # more than the agent's poll: nothing it does later drops the stream either
    assert _served_by(streamer, stream["id"], "node-a")
    client, _ = youtube.publishers()["yt-keep"]
    assert client == yt_client  # the platform never saw a reconnect
