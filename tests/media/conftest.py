"""Fixtures for the end-to-end media tests: the whole rig on loopback.

Control plane: pytest-django's live_server (real HTTP, real Postgres). Worker: a real `celery
worker` on the real Redis. Ingest: a private nginx-rtmp from deploy/'s template whose hooks call
the live server. Agent: `python -m agents.node agent` as a child process. Destinations: two
separate nginx-rtmp "platforms" standing in for YouTube and Twitch."""

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.models import IngestNode
from agents.node.ingest import IngestConfig
from tests.conftest import ROOT, client_for
from tests.factories import UserFactory, node_create
from tests.media.harness import Platform, free_port, publish, stop, wait_until
from tests.nginx import NginxIngest

pytestmark = pytest.mark.media


@pytest.fixture
def youtube(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(tmp_path, "yt").start()
    yield platform
    platform.stop()


@pytest.fixture
def twitch(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(tmp_path, "tw").start()
    yield platform
    platform.stop()


@dataclass
class RigNode:
    node: IngestNode
    token: str
    ingest: NginxIngest
    root: Path
    env: dict[str, str]
    agent: subprocess.Popen | None = None
    publishers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def rtmp_port(self) -> int:
        return self.ingest.cfg.rtmp_port

    def publish_url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/live/{key}"

    def publish(self, key: str, video_bitrate: str = "800k") -> subprocess.Popen:
        process = publish(
            self.publish_url(key),
            self.root / f"publisher-{len(self.publishers)}.log",
            video_bitrate,
        )
        self.publishers.append(process)
        return process

    def start_agent(self) -> subprocess.Popen:
        log = (self.root / "agent.log").open("ab")
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "agents.node", "agent"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self.agent

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        if self.agent and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGCONT)  # a frozen agent must hear the signal
            self.agent.send_signal(sig)
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()

    def agent_log(self) -> str:
        path = self.root / "agent.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def rig_nodes(
    live_server, celery_worker_process, youtube: Platform, twitch: Platform, settings, tmp_path
) -> Iterator[Callable[..., RigNode]]:
    """Starts ingest nodes on demand: each its own nginx-rtmp, agent process and token."""
    settings.RIG_ENQUEUE_INLINE = False  # as in production: hooks never wait for the broker
    settings.RIG_SERVICE_INGEST = {
        **settings.RIG_SERVICE_INGEST,
        "YouTube": youtube.base_url,
        "Twitch": twitch.base_url,
    }
    control_url = live_server.url.replace("localhost", "127.0.0.1")
    started: list[RigNode] = []

    def start(
        name: str = "e2e",
        agent_control_url: str | None = None,
        env: dict[str, str] | None = None,
        **fields: Any,
    ) -> RigNode:
        """``agent_control_url``: where the agent reaches the control plane, if not directly
        (a proxy that a test cuts), for its calls and nginx's publish hook, which it
        forwards; nginx's other hooks always go straight to it. ``env``: more of
        the agent's settings."""
        root = tmp_path / name
        root.mkdir()
        agent_port = free_port()
        cfg = IngestConfig(
            prefix=root / "ingest",
            rtmp_port=free_port(),
            rtmp_bind="127.0.0.1",
            http_port=free_port(),
            hook_base_url="",
            publish_hook_url=f"http://127.0.0.1:{agent_port}/hooks/publish",
        )
        node, token = node_create(
            name,
            rtmp_url=f"rtmp://127.0.0.1:{cfg.rtmp_port}/live",
            agent_url=f"http://127.0.0.1:{agent_port}",
            **fields,
        )
        cfg = replace(cfg, hook_base_url=f"{control_url}/agents/hooks/{token}")
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("RIG_")}
        env = {
            **inherited,
            "RIG_CONTROL_URL": agent_control_url or control_url,
            "RIG_NODE_TOKEN": token,
            "RIG_RTMP_PORT": str(cfg.rtmp_port),
            "RIG_NGINX_HTTP_PORT": str(cfg.http_port),
            "RIG_AGENT_LISTEN": f"127.0.0.1:{agent_port}",
            "RIG_AGENT_POLL_S": "5",
            "RIG_AGENT_REPORT_S": "1",
            "RIG_RELAY_BACKOFF_INITIAL_S": "0.5",
            "RIG_RELAY_BACKOFF_MAX_S": "2",
            "RIG_ALLOW_PRIVATE_DESTINATIONS": "1",  # the platforms are on loopback
            "RIG_RECORDINGS_DIR": str(root / "recordings"),
            **(env or {}),
        }
        ingest = NginxIngest(cfg)
        ingest.start()
        rig = RigNode(node=node, token=token, ingest=ingest, root=root, env=env)
        started.append(rig)
        rig.start_agent()
        return rig

    try:
        yield start
    finally:
        for rig in started:
            for process in rig.publishers:
                stop(process)
            rig.stop_agent()
            rig.ingest.stop()
            # pytest shows a test's captured output only when it fails: each node's last
            # agent log lines are then in CI's report.
            lines = rig.agent_log().splitlines()[-400:]
            print(
                f"--- agent log of {rig.node.name} (last {len(lines)} lines) ---", *lines, sep="\n"
            )


@pytest.fixture
def rig(rig_nodes: Callable[..., RigNode]) -> RigNode:
    """One ingest node, as `make up` runs it."""
    return rig_nodes("e2e")


@pytest.fixture
def streamer(transactional_db: None) -> APIClient:
    return client_for(UserFactory.create(username="streamer"))


# --- the API as a streamer uses it ---------------------------------------------------------


def create_stream(client: APIClient, **keys: str) -> dict[str, Any]:
    stream = client.post("/streams/").json()["payload"]
    stream["destinationIds"] = {}
    for service, key in keys.items():
        response = client.post(
            f"/streams/{stream['id']}/destination",
            {"service": service, "streamKey": key},
            format="json",
        )
        assert response.status_code == 200, response.content
        stream["destinationIds"][service] = response.json()["payload"]["id"]
    return stream


def detail_of(client: APIClient, stream_id: str) -> dict[str, Any]:
    return client.get(f"/streams/{stream_id}").json()["payload"]


def relay_states(client: APIClient, stream_id: str) -> dict[str, str]:
    status = detail_of(client, stream_id)["provisionStatus"] or {}
    return {d["service"]: d["state"] for d in status.get("destinations", [])}


@pytest.fixture
def live_stream(rig: RigNode, streamer: APIClient, youtube: Platform, twitch: Platform):
    """A stream with YouTube and Twitch destinations, published and relayed to both."""
    stream = create_stream(streamer, YouTube="ytkey", Twitch="twkey")
    publisher = rig.publish(stream["streamKey"])
    wait_until(lambda: {"ytkey"} <= set(youtube.publishers()), 20)
    wait_until(lambda: {"twkey"} <= set(twitch.publishers()), 20)
    # and live as the API says it (a leg reaches its platform a second before it reports so)
    live = {"YouTube": "live", "Twitch": "live"}
    wait_until(lambda: relay_states(streamer, stream["id"]) == live, 15)
    return stream, publisher
