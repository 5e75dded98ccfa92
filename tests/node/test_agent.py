"""The node agent's own surface: its nudge listener and a reconcile loop that never dies."""

import hashlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from agents.node.agent import Agent, AgentConfig


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

    def stream_config(self, key: str) -> list[dict[str, Any]] | None:
        return None

    def report(
        self,
        streams: list[dict[str, Any]],
        publishers: list[str] | None = None,
        load: dict[str, Any] | None = None,
    ) -> None:
        self.reports.append((streams, publishers))
        self.loads.append(load)


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


def test_nudge_needs_the_token_hash_and_triggers_a_reconcile(agent) -> None:
    running, control = agent
    _wait(lambda: control.asked >= 1)  # the first pass (which failed) is done
    assert _nudge(running, "wrong") == 401
    assert _nudge(running, "rign_test-token") == 401  # the token itself is not the secret
    time.sleep(0.2)
    assert control.asked == 1
    secret = hashlib.sha256(b"rign_test-token").hexdigest()
    assert _nudge(running, secret) == 202
    _wait(lambda: control.asked >= 2)  # the loop survived the unexpected error and ran again


def test_reports_keep_coming_and_say_when_nginx_is_unknown(agent) -> None:
    _, control = agent
    _wait(lambda: len(control.reports) >= 2)
    assert control.reports[-1] == ([], None)  # no relays; nginx unreachable, so no publishers
    load = control.loads[-1]  # every report is a heartbeat with the node's load
    assert load is not None and load["relays"] == 0 and load["loadAvg1"] >= 0
