"""/metrics: Prometheus text with the gauges an operator watches, the hook latency histogram and
Celery task outcomes counted by a real worker; loopback or a token only."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from agents.models import IngestNode
from agents.node.protocol import RelayState
from agents.tasks import node_nudge
from rig.metrics import task_outcome_record
from streams.models import Stream
from tests.conftest import ROOT, _test_database_url, assert_error
from tests.factories import DestinationFactory, StreamFactory, node_create, relay_row, session_start
from tests.media.harness import free_port, stop
from tests.test_agents_api import form_hook

pytestmark = pytest.mark.django_db


def scrape(client: APIClient | None = None, **extra: Any) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = (client or APIClient()).get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def live_stream(alice, node: IngestNode) -> Stream:
    """Alice live on node1 with three relays (two live, one failed) and a muted-off fourth."""
    stream = StreamFactory.create(owner=alice)
    session_start(stream, node)
    states = [RelayState.LIVE, RelayState.LIVE, RelayState.FAILED]
    for i, state in enumerate(states):
        destination = DestinationFactory.create(stream=stream, stream_key=f"secret-dest-key-{i}")
        relay_row(destination, state=state, bytes_sent=1000 * (i + 1), restarts=i)
    IngestNode.objects.filter(pk=node.pk).update(last_seen_at=timezone.now() - timedelta(seconds=5))
    StreamFactory.create(owner=alice)  # idle
    return stream


def test_gauges_show_streams_relays_and_nodes(live_stream: Stream) -> None:
    node_create("node2", region="eu-west")  # never reported
    response = APIClient().get("/metrics")
    assert b"secret-dest-key" not in response.content
    assert live_stream.stream_key.encode() not in response.content
    samples = scrape()

    assert value(samples, "rig_streams_live") == 1
    by_state = {state: value(samples, "rig_relays", state=state) for state in RelayState}
    assert by_state == {
        "starting": 0,
        "live": 2,
        "reconnecting": 0,
        "failed": 1,
        "stopped": 0,
    }
    assert all(("rig_relays", (("state", state),)) in samples for state in RelayState)
    destinations = list(live_stream.destinations.order_by("id"))
    for i, destination in enumerate(destinations):
        labels = {
            "stream_id": str(live_stream.id),
            "destination_id": str(destination.pk),
            "service": "YouTube",
        }
        assert value(samples, "rig_relay_bytes_sent", **labels) == 1000 * (i + 1)
        assert value(samples, "rig_relay_restarts", **labels) == i
    age = value(samples, "rig_node_heartbeat_age_seconds", node="node1", region="local")
    assert 4 <= age < 60
    assert value(
        samples, "rig_node_heartbeat_age_seconds", node="node2", region="eu-west"
    ) == float("inf")
    assert value(samples, "rig_node_relays", node="node1") == 2  # the failed one is not running
    assert ("rig_node_relays", (("node", "node2"),)) in samples


def test_scrape_costs_three_queries_however_many_relays(
    live_stream: Stream, django_assert_num_queries
) -> None:
    with django_assert_num_queries(3):
        scrape()
    for i in range(10):
        destination = DestinationFactory.create(stream=live_stream)
        relay_row(destination, state=RelayState.STARTING, restarts=i)
    node_create("node3")
    with django_assert_num_queries(3):
        samples = scrape()
    assert value(samples, "rig_relays", state="starting") == 10


def test_hook_histogram_counts_each_call_by_outcome(node_and_token, alice_stream: Stream) -> None:
    _, token = node_and_token
    ok_count = dict(hook="publish", outcome="ok")
    refused = dict(hook="publish", outcome="refused")
    done = dict(hook="publish_done", outcome="ok")
    before = scrape()
    assert form_hook(token, "publish", alice_stream.stream_key).status_code == 200
    assert form_hook(token, "publish", "no-such-key").status_code == 404
    assert form_hook(token, "publish_done", alice_stream.stream_key).status_code == 200
    after = scrape()
    for labels in (ok_count, refused, done):
        count = "rig_hook_duration_seconds_count"
        assert value(after, count, **labels) == value(before, count, **labels) + 1, labels
    assert value(after, "rig_hook_duration_seconds_sum", **ok_count) > value(
        before, "rig_hook_duration_seconds_sum", **ok_count
    )
    # a slow bucket includes the call; the buckets are cumulative
    assert value(after, "rig_hook_duration_seconds_bucket", le="+Inf", **ok_count) == value(
        after, "rig_hook_duration_seconds_count", **ok_count
    )


def _wait_for(predicate: Any, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape()
        if predicate(samples):
            return samples
        assert time.monotonic() < deadline, "metrics did not change in time"
        time.sleep(0.2)


def test_task_outcomes_from_a_real_worker(celery_worker_process) -> None:
    task = "agents.tasks.node_nudge"

    def count(samples: dict, outcome: str) -> float:
        return value(samples, "rig_celery_tasks_total", task=task, outcome=outcome)

    before = scrape()
    assert ("rig_celery_tasks_total", (("outcome", "failed"), ("task", task))) in before
    node_nudge.delay(987654)  # unknown node: a quick success
    unreachable, _ = node_create("unreachable", agent_url="http://127.0.0.1:1")
    node_nudge.delay(unreachable.pk)  # connection refused: retried three times, then failed
    after = _wait_for(
        lambda s: (
            count(s, "succeeded") > count(before, "succeeded")
            and count(s, "failed") > count(before, "failed")
        ),
        timeout=40,
    )
    assert count(after, "succeeded") == count(before, "succeeded") + 1
    assert count(after, "retried") == count(before, "retried") + 3
    assert count(after, "failed") == count(before, "failed") + 1


def test_redis_down_breaks_neither_task_nor_scrape(live_stream: Stream, settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    task_outcome_record(task="agents.tasks.node_nudge", outcome="succeeded")  # logged, not raised
    assert node_nudge.apply(args=(987654,)).get() is False
    samples = scrape()
    assert value(samples, "rig_streams_live") == 1
    assert not any(name == "rig_celery_tasks_total" for name, _ in samples)


def test_loopback_is_open_without_a_token() -> None:
    scrape()
    assert_error(APIClient().get("/metrics", REMOTE_ADDR="10.1.2.3"), 403, 1003)
    # Through a reverse proxy on this host, loopback says nothing about who is asking.
    assert_error(APIClient().get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9"), 403, 1003)
    assert_error(APIClient().get("/metrics", HTTP_FORWARDED="for=203.0.113.9"), 403, 1003)
    assert_error(APIClient().get("/metrics", HTTP_X_REAL_IP="203.0.113.9"), 403, 1003)


def test_behind_a_configured_proxy_loopback_is_not_enough(settings) -> None:
    """A proxy that adds no header of its own: every client arrives from loopback, so rig,
    told it runs behind one, asks for the token."""
    settings.RIG_TRUSTED_PROXIES = 1
    assert_error(APIClient().get("/metrics"), 403, 1003)
    settings.RIG_METRICS_TOKEN = "metrics-s3cret"
    assert ("rig_streams_live", ()) in scrape(HTTP_AUTHORIZATION="Bearer metrics-s3cret")


def test_token_is_required_when_set(settings) -> None:
    settings.RIG_METRICS_TOKEN = "metrics-s3cret"
    assert_error(APIClient().get("/metrics"), 401, 1003)
    assert_error(APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong"), 401, 1003)
    assert_error(APIClient().get("/metrics", HTTP_AUTHORIZATION="metrics-s3cret"), 401, 1003)
    samples = scrape(HTTP_AUTHORIZATION="Bearer metrics-s3cret", REMOTE_ADDR="10.1.2.3")
    assert ("rig_streams_live", ()) in samples


def test_metrics_is_get_only() -> None:
    assert_error(APIClient().post("/metrics"), 405, 1001)


@pytest.fixture
def gunicorn_multiprocess(transactional_db: None, tmp_path) -> Any:
    """rig under gunicorn with two worker processes sharing metrics through files."""

    port = free_port()
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "histogram_99999.db").write_bytes(b"stale")  # emptied at start
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "rig.wsgi:application",
            *("-c", "deploy/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", "--workers", "2"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "gunicorn.log").open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:  # a server that never came up must not outlive the test either
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
                time.sleep(0.1)
        yield base, metrics_dir
    finally:
        stop(process, timeout=10)


def test_hook_histogram_is_one_total_across_gunicorn_workers(gunicorn_multiprocess) -> None:

    base, metrics_dir = gunicorn_multiprocess
    _, token = node_create("gnode")
    assert not (metrics_dir / "histogram_99999.db").exists()

    def refused_hook(_: int) -> int:
        request = urllib.request.Request(
            f"{base}/agents/hooks/{token}/publish", data=b"app=live&name=nope&clientid=1"
        )
        try:
            urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as refused:
            return refused.code
        return 200

    sent = 0
    # Until both workers have answered a hook: requests go eight at a time, so while one sync
    # worker is busy the other has to accept (one at a time, one worker may take them all).
    with ThreadPoolExecutor(8) as pool:
        while len(list(metrics_dir.glob("histogram_*.db"))) < 2 or sent < 10:
            assert sent < 800, "one gunicorn worker took every connection"
            assert set(pool.map(refused_hook, range(8))) == {404}
            sent += 8
    counts = set()
    for _ in range(6):  # whichever worker answers the scrape, the total is the same
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            text = response.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        (count,) = [
            s.value
            for s in families["rig_hook_duration_seconds"].samples
            if s.name.endswith("_count") and s.labels == {"hook": "publish", "outcome": "refused"}
        ]
        counts.add(count)
        assert "rig_streams_live" in families
    assert counts == {sent}


def test_gunicorn_answers_what_it_cannot_parse_with_the_envelope(gunicorn_multiprocess) -> None:
    """An over-long request line or a broken header never reaches Django: gunicorn answers
    it, in rig's error envelope, without echoing the request (it may carry a key)."""
    base, _ = gunicorn_multiprocess
    port = int(base.rsplit(":", 1)[1])
    secret = "sk_live_" + "x" * 5000
    for request, status in [
        (f"GET /agents/config/{secret} HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (f"GET / HTTP/1.1\r\nHost: x\r\nBad Header {secret[:40]}\r\n\r\n", 400),
    ]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(request.encode())
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        head, _, body = answer.decode("latin1").partition("\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ")
        assert "Content-Type: application/json" in head
        envelope = json.loads(body)
        assert set(envelope) == {"message", "errorCode", "details"}
        assert envelope["errorCode"] == 1005 and "sk_live" not in answer.decode("latin1")
