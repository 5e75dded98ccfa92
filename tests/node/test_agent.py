"""The node agent's own surface: its nudge listener and a reconcile loop that never dies."""

import hashlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from agents.node.agent import Agent
from agents.node.config import AgentConfig
from agents.node.desired import desired_relays, publishers_to_drop
from agents.node.protocol import agent_secret


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


def test_publishers_without_a_live_session_here_are_dropped() -> None:
    publishers = {"key1": "7", "revoked": "3"}
    assert publishers_to_drop([STREAM], publishers) == ["revoked"]
    assert publishers_to_drop([STREAM], {"key1": "6"}) == ["key1"]  # a replaced session
    assert publishers_to_drop([{**STREAM, "clientId": ""}], {"key1": "6"}) == []
