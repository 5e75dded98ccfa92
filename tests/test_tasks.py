"""Nudges: enqueued only after commit, delivered over HTTP to the node's agent, harmless twice."""

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from rest_framework.test import APIClient

from agents.models import IngestNode
from agents.node.protocol import agent_secret
from agents.tasks import node_nudge
from streams.models import Stream
from tests.conftest import assert_ok
from tests.factories import node_create
from tests.test_agents_api import form_hook

pytestmark = pytest.mark.django_db


class _Recorder(BaseHTTPRequestHandler):
    calls: list[tuple[str, str]]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.calls.append((self.path, self.headers.get("Authorization", "")))
        body = json.dumps({"message": "Reconciling", "payload": None}).encode()
        self.send_response(202)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def agent_listener() -> Iterator[tuple[str, list]]:
    calls: list[tuple[str, str]] = []
    handler = type("Handler", (_Recorder,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", calls
    server.shutdown()
    server.server_close()


def test_nudge_posts_to_agent_with_its_secret(node_and_token, agent_listener) -> None:
    node, token = node_and_token
    url, calls = agent_listener
    IngestNode.objects.filter(pk=node.pk).update(agent_url=url)
    assert node_nudge.apply(args=(node.pk,)).get() is True
    assert node_nudge.apply(args=(node.pk,)).get() is True  # twice is fine
    assert calls == [("/reconcile", f"Bearer {agent_secret(token)}")] * 2
    # At rest the secret is encrypted: the database holds neither it nor the token.
    with connection.cursor() as cursor:
        cursor.execute("SELECT agent_secret FROM agents_ingestnode WHERE id = %s", [node.pk])
        assert agent_secret(token) not in cursor.fetchone()[0]


def test_a_node_from_before_agent_secrets_is_not_nudged_with_its_hash(
    node: IngestNode, agent_listener
) -> None:
    """Its token must be set again (node_create does, from the token file); meanwhile the
    agent's poll is the backstop, and nothing the database holds in the clear is sent."""
    url, calls = agent_listener
    IngestNode.objects.filter(pk=node.pk).update(agent_url=url, agent_secret="")
    assert not node_nudge.apply(args=(node.pk,)).successful()
    assert calls == []


def test_nudge_for_unknown_node_is_a_no_op(db: None) -> None:
    assert node_nudge.apply(args=(987654,)).get() is False


def test_publish_enqueues_nudge_only_on_commit(
    node_and_token, alice_stream: Stream, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    sent: list[int] = []
    monkeypatch.setattr(node_nudge, "delay", lambda node_id: sent.append(node_id))
    node, token = node_and_token
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert_ok(form_hook(token, "publish", alice_stream.stream_key), "OK")
    assert sent == []  # nothing leaves before the transaction commits
    for callback in callbacks:
        callback()
    assert sent == [node.pk]


@pytest.mark.parametrize(
    "action",
    [
        lambda c, s, d: c.post(
            f"/streams/{s.id}/destination", {"service": "Twitch", "streamKey": "k"}, format="json"
        ),
        lambda c, s, d: c.patch(
            f"/streams/{s.id}/destinations/{d.pk}", {"isActive": False}, format="json"
        ),
        lambda c, s, d: c.delete(f"/streams/{s.id}/destinations/{d.pk}"),
        lambda c, s, d: c.post(f"/streams/{s.id}/changeKey"),
        lambda c, s, d: c.patch(f"/streams/{s.id}", {"isActive": False}, format="json"),
        lambda c, s, d: c.delete(f"/streams/{s.id}"),
    ],
    ids=["add", "disable", "delete-dest", "changeKey", "deactivate", "delete-stream"],
)
def test_changes_to_a_live_stream_nudge_its_node(
    action,
    node_and_token,
    alice_client: APIClient,
    alice_stream: Stream,
    make_destination,
    django_capture_on_commit_callbacks,
    monkeypatch,
) -> None:
    sent: list[int] = []
    monkeypatch.setattr(node_nudge, "delay", lambda node_id: sent.append(node_id))
    node, token = node_and_token
    destination = make_destination(stream=alice_stream)
    form_hook(token, "publish", alice_stream.stream_key)
    with django_capture_on_commit_callbacks(execute=True):
        response = action(alice_client, alice_stream, destination)
    assert response.status_code == 200
    assert sent == [node.pk]


def test_changes_to_an_idle_stream_nudge_nobody(
    alice_client: APIClient, alice_stream: Stream, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    sent: list[int] = []
    monkeypatch.setattr(node_nudge, "delay", lambda node_id: sent.append(node_id))
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(
            f"/streams/{alice_stream.id}/destination",
            {"service": "Twitch", "streamKey": "k"},
            format="json",
        )
    assert sent == []


def test_nudge_travels_through_real_broker_and_worker(
    agent_listener, celery_worker_process
) -> None:
    """Published to the real broker (Redis), run by a real `celery worker` process."""
    url, calls = agent_listener
    node, token = node_create("broker-node", agent_url=url)
    node_nudge.delay(node.pk)
    deadline = time.monotonic() + 15
    while not calls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calls == [("/reconcile", f"Bearer {agent_secret(token)}")]


def test_broker_down_never_fails_a_publish(
    node_and_token, alice_stream: Stream, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    """With Redis unreachable the publish still succeeds; the agent's poll provisions it."""

    def broker_down(node_id: int) -> None:
        raise OSError("Connection refused")

    monkeypatch.setattr(node_nudge, "delay", broker_down)
    _, token = node_and_token
    with django_capture_on_commit_callbacks(execute=True):
        assert_ok(form_hook(token, "publish", alice_stream.stream_key), "OK")
    alice_stream.refresh_from_db()
    assert alice_stream.is_streaming


def test_webhook_sends_have_their_own_queue(settings) -> None:
    """A slow receiver holds up only webhook sends, never a node nudge or the node watch."""
    from rig.celery import app

    def queue_of(task: str) -> str:
        return str(app.amqp.router.route({}, task)["queue"].name)

    assert queue_of("webhooks.tasks.delivery_send") == settings.RIG_WEBHOOK_QUEUE
    assert queue_of("webhooks.tasks.delivery_sweep") == settings.RIG_WEBHOOK_QUEUE
    for task in ("agents.tasks.node_nudge", "agents.tasks.nodes_check"):
        assert queue_of(task) == settings.CELERY_TASK_DEFAULT_QUEUE
    assert settings.RIG_WEBHOOK_QUEUE != settings.CELERY_TASK_DEFAULT_QUEUE
