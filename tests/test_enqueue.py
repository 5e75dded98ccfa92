"""Requests never wait for the broker: tasks go to it from a sender thread, after commit."""

import threading
from typing import Any

from agents.tasks import node_nudge
from rig import enqueue
from streams.models import Stream
from tests.conftest import assert_ok
from tests.test_agents_api import form_hook


def test_a_publish_hook_answers_while_the_broker_hangs(
    node_and_token: Any,
    alice_stream: Stream,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: Any,
    settings: Any,
) -> None:
    settings.RIG_ENQUEUE_INLINE = False
    broker_back = threading.Event()
    sent: list[int] = []

    def hanging_broker(node_id: int) -> None:  # as kombu retrying a dead Redis for seconds
        broker_back.wait(30)
        sent.append(node_id)

    monkeypatch.setattr(node_nudge, "delay", hanging_broker)
    node, token = node_and_token
    with django_capture_on_commit_callbacks(execute=True):
        assert_ok(form_hook(token, "publish", alice_stream.stream_key), "OK")
    assert sent == []  # answered, and the session committed, while the send still hangs
    alice_stream.refresh_from_db()
    assert alice_stream.is_streaming
    broker_back.set()
    assert enqueue.drain(10)
    assert sent == [node.pk]


def test_a_failed_send_is_logged_and_the_next_one_goes(
    monkeypatch: Any, settings: Any, caplog: Any
) -> None:
    settings.RIG_ENQUEUE_INLINE = False
    sent: list[int] = []

    def flaky(node_id: int) -> None:
        if node_id == 1:
            raise ConnectionError("redis is down")
        sent.append(node_id)

    monkeypatch.setattr(node_nudge, "delay", flaky)
    enqueue.enqueue(node_nudge, 1)
    enqueue.enqueue(node_nudge, 2)
    assert enqueue.drain(10)
    assert sent == [2]
    assert "could not enqueue agents.tasks.node_nudge(1,)" in caplog.text
