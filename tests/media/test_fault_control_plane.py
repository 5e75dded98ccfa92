"""Fault suite, the control plane: unreachable for the node and the node watch alike (a proxy
in front of the live server is cut), while media keeps flowing on the node."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.media.conftest import create_stream, detail_of, relay_states
from tests.media.harness import Platform, Proxy, free_port, wait_until
from tests.media.test_faults import BOTH_LIVE, _both_see_video

pytestmark = [pytest.mark.media, pytest.mark.timeout(300)]

OUTAGE_STALE_S = 10  # the node watch's threshold, as in production
OUTAGE_S = 30  # how long the control plane is unreachable: three times that


class _ControlPlaneOutage:
    """The control plane as the node and the node watch reach it, through a proxy a test cuts."""

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self.upstream_port = upstream_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.proxy: Proxy | None = Proxy(self.port, upstream_port)

    def cut(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None

    def restore(self) -> None:
        self.proxy = Proxy(self.port, self.upstream_port)


@pytest.fixture
def outage(live_server: Any) -> Iterator[_ControlPlaneOutage]:
    port = int(str(live_server.url).rsplit(":", 1)[1])
    cut = _ControlPlaneOutage(port)
    yield cut
    cut.cut()


@pytest.fixture
def celery_worker_options(outage: _ControlPlaneOutage) -> dict[str, Any]:
    """The node watch runs (beat), judging silence as in production (checking every second),
    and probes the API where the node reaches it."""
    env = {"RIG_NODE_STALE_S": str(OUTAGE_STALE_S), "RIG_NODE_CHECK_S": "1"}
    return {"beat": True, "env": {**env, "RIG_API_URL": outage.url}}


def test_a_control_plane_outage_ends_nothing(
    outage: _ControlPlaneOutage,
    rig_nodes: Any,
    streamer: APIClient,
    youtube: Platform,
    twitch: Platform,
    settings: Any,
    tmp_path: Path,
) -> None:
    """Before: 10 s without heartbeats declared the node lost, ended its sessions in the
    database and sent stream.ended and node.lost, although media never stopped."""
    from agents.models import IngestNode
    from webhooks.models import WebhookDelivery, WebhookEndpoint

    settings.RIG_NODE_STALE_S = OUTAGE_STALE_S
    rig = rig_nodes("cp", agent_control_url=outage.url)
    hook = streamer.post("/webhooks", {"url": "https://hooks.example.com/rig"}, format="json")
    assert hook.status_code == 200
    stream = create_stream(streamer, YouTube="ytkey", Twitch="twkey")
    rig.publish(stream["streamKey"])
    wait_until(lambda: relay_states(streamer, stream["id"]) == BOTH_LIVE, 20)
    before = WebhookDelivery.objects.count()

    outage.cut()  # the API is unreachable for the node and for the node watch
    time.sleep(OUTAGE_S)
    assert _both_see_video(youtube, twitch, tmp_path, "during")  # media never stops
    outage.restore()
    time.sleep(OUTAGE_STALE_S + 2)  # the node reports again, and the watch judges again

    node = IngestNode.objects.get(pk=rig.node.pk)
    assert node.lost_at is None
    assert detail_of(streamer, stream["id"])["isStreaming"] is True
    assert relay_states(streamer, stream["id"]) == BOTH_LIVE
    events = WebhookDelivery.objects.filter(endpoint__in=WebhookEndpoint.objects.all())
    assert [d.event for d in events.order_by("id")[before:]] == []  # nothing ended, nothing lost
    assert _both_see_video(youtube, twitch, tmp_path, "after")
