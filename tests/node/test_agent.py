"""The node agent's own surface: its nudge listener and a reconcile loop that never dies."""

import hashlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from agents.node.agent import Agent, _failing_encoders
from agents.node.config import AgentConfig
from agents.node.desired import desired_relays, publishers_to_drop
from agents.node.protocol import RelayState, agent_secret
from agents.node.relay import RelaySnapshot


class FakeControlPlane:
    """Stands in for the control plane's HTTP API; the first ask blows up unexpectedly."""

    def __init__(self) -> None:
        self.asked = 0
        self.reports: list[tuple[list[dict[str, Any]], list[str] | None]] = []
        self.loads: list[dict[str, Any] | None] = []

    def live_streams(self) -> list[dict[str, str]]:
        self.asked += 1
        if self.asked == 1:
            raise ValueError("a bug, not a network error")
        return []

    def pulls(self) -> list[dict[str, Any]]:
        return []

    def report(self, body: dict[str, Any]) -> None:
        self.reports.append((body["streams"], body.get("publishers")))
        self.loads.append(body.get("load"))


@pytest.fixture
def agent() -> Iterator[tuple[Agent, FakeControlPlane]]:
    control = FakeControlPlane()
    config = AgentConfig(
        control_url="http://127.0.0.1:9",
        token="rign_test-token",
        stat_url="http://127.0.0.1:9",  # nothing listens: nginx's view is unknown
        listen_port=0,
        poll_interval=60,  # only the first pass and nudges reconcile in these tests
        report_interval=0.1,
    )
    running = Agent(config, control=control)  # type: ignore[arg-type]
    running.start()
    yield running, control
    running.stop()


def _nudge(agent: Agent, secret: str) -> int:
    assert agent._server is not None
    port = agent._server.server_address[1]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/reconcile",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {secret}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def _wait(predicate: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


def test_nudge_needs_the_agent_secret_and_triggers_a_reconcile(agent) -> None:
    running, control = agent
    _wait(lambda: control.asked >= 1)  # the first pass (which failed) is done
    assert _nudge(running, "wrong") == 401
    assert _nudge(running, "rign_test-token") == 401  # the token itself is not the secret
    # Nor is what the control plane's database holds in the clear (the token's hash).
    assert _nudge(running, hashlib.sha256(b"rign_test-token").hexdigest()) == 401
    time.sleep(0.2)
    assert control.asked == 1
    assert _nudge(running, agent_secret("rign_test-token")) == 202
    _wait(lambda: control.asked >= 2)  # the loop survived the unexpected error and ran again


def test_reports_keep_coming_and_a_dead_nginx_has_no_publishers(agent) -> None:
    _, control = agent
    _wait(lambda: len(control.reports) >= 2)
    # No relays; nginx does not answer, so nobody publishes here: its sessions must end.
    assert control.reports[-1] == ([], [])
    load = control.loads[-1]  # every report is a heartbeat with the node's load
    assert load is not None and load["relays"] == 0 and load["loadAvg1"] >= 0


# --- from desired state to relays: pure functions ------------------------------------------

STREAM = {
    "streamID": "s1",
    "streamKey": "key1",
    "clientId": "7",
    "destinations": [
        {"id": 1, "rtmpUrl": "rtmp://yt/live2/a", "isActive": True, "isMuted": True},
        {"id": 2, "rtmpUrl": "rtmp://tw/app/b", "isActive": False},
    ],
}


def _desired(streams: list, publishers: dict, seen: set | None = None) -> tuple:
    return desired_relays(streams, publishers, seen=seen or set(), rtmp_port=1935)


def test_relays_follow_the_admitted_publisher() -> None:
    specs, keys = _desired([STREAM], {"key1": "7"})
    assert keys == {"s1": "key1"}
    [spec] = specs  # the inactive destination has none
    assert spec.relay_id == "s1:1" and spec.mute and spec.session == "7"
    assert spec.source_url == "rtmp://127.0.0.1:1935/live/key1"
    # Before nginx lists its publisher: connected and waiting for the first keyframe.
    assert _desired([STREAM], {})[1] == {"s1": "key1"}
    # Once it has gone: nothing, whatever the hooks say. Another publisher: nothing either.
    assert _desired([STREAM], {}, seen={("key1", "7")}) == ([], {})
    assert _desired([STREAM], {"key1": "8"}) == ([], {})


def test_a_new_session_is_a_new_spec() -> None:
    [old], _ = _desired([STREAM], {"key1": "7"})
    [new], _ = _desired([{**STREAM, "clientId": "9"}], {"key1": "9"}, seen={("key1", "7")})
    assert old.relay_id == new.relay_id and old != new  # the supervisor restarts it afresh


def test_destinations_with_one_profile_share_one_encoder() -> None:
    small = {"height": 360, "fps": 15, "videoBitrateKbps": 600, "audioBitrateKbps": 96}
    other = {**small, "height": 480}
    destinations = [
        {"id": 1, "rtmpUrl": "rtmp://a/k1", "isActive": True},
        {"id": 2, "rtmpUrl": "rtmp://b/k2", "isActive": True, "transcode": small},
        {"id": 3, "rtmpUrl": "rtmp://c/k3", "isActive": True, "transcode": small},
        {"id": 4, "rtmpUrl": "rtmp://d/k4", "isActive": True, "transcode": other},
    ]
    specs, _ = _desired([{**STREAM, "destinations": destinations}], {"key1": "7"})
    by_id = {spec.relay_id: spec for spec in specs}
    encoders = [spec for spec in specs if spec.relay_id.startswith("encode:")]
    assert sorted(spec.transcode for spec in encoders) == [(360, 15, 600, 96), (480, 15, 600, 96)]
    assert all(spec.source_url == "rtmp://127.0.0.1:1935/live/key1" for spec in encoders)
    assert all(spec.session == "7" and not spec.destination_id for spec in encoders)
    small_at = next(spec.target_url for spec in encoders if spec.transcode[0] == 360)
    assert small_at.startswith("rtmp://127.0.0.1:1935/encoded/key1_")
    assert by_id["s1:2"].source_url == by_id["s1:3"].source_url == small_at
    assert by_id["s1:1"].source_url == "rtmp://127.0.0.1:1935/live/key1"
    # Every destination relay copies: only the encoders encode.
    assert all(by_id[f"s1:{n}"].transcode is None for n in (1, 2, 3, 4))


def test_publishers_without_a_live_session_here_are_dropped() -> None:
    publishers = {"key1": "7", "revoked": "3"}
    assert publishers_to_drop([STREAM], publishers) == ["revoked"]
    assert publishers_to_drop([STREAM], {"key1": "6"}) == ["key1"]  # a replaced session
    assert publishers_to_drop([{**STREAM, "clientId": ""}], {"key1": "6"}) == []


def test_a_failing_encoder_is_the_error_of_the_destinations_it_feeds() -> None:
    profile = {"height": 360, "fps": 15, "videoBitrateKbps": 600, "audioBitrateKbps": 96}
    destinations = [
        {"id": 1, "rtmpUrl": "rtmp://a/k1", "isActive": True},
        {"id": 2, "rtmpUrl": "rtmp://b/k2", "isActive": True, "transcode": profile},
    ]
    specs, _ = _desired([{**STREAM, "destinations": destinations}], {"key1": "7"})
    [encoder] = [spec.relay_id for spec in specs if spec.relay_id.startswith("encode:")]

    def snap(relay_id: str, state: RelayState, error: str | None) -> RelaySnapshot:
        return RelaySnapshot(relay_id, state, None, None, 0, 0, 0.0, error, (), None)

    failing = [
        snap(encoder, RelayState.RECONNECTING, "Unknown encoder 'libx264'"),
        snap("s1:1", RelayState.RECONNECTING, "stalled"),
        snap("s1:2", RelayState.RECONNECTING, "stalled: no data for 15s"),
    ]
    assert _failing_encoders(failing, specs) == {"s1:2": "encoder: Unknown encoder 'libx264'"}
    assert _failing_encoders([snap(encoder, RelayState.LIVE, "old")], specs) == {}
