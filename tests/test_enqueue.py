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


def test_a_hint_made_in_a_request_leaves_once_the_response_is_written(
    monkeypatch: Any, settings: Any
) -> None:
    from django.core.signals import request_finished, request_started

    settings.RIG_ENQUEUE_INLINE = False
    sent: list[int] = []
    monkeypatch.setattr(node_nudge, "delay", sent.append)
    request_started.send(sender=None)
    try:
        enqueue.enqueue(node_nudge, 4)  # a publish committed in the view
        assert enqueue.drain(10)
        assert sent == []  # the answer is still being written
    finally:
        request_finished.send(sender=None)
    assert enqueue.drain(10)
    assert sent == [4]
    # A request whose end was never signalled: its hint goes when the thread's next one begins.
    request_started.send(sender=None)
    enqueue.enqueue(node_nudge, 5)
    request_started.send(sender=None)
    request_finished.send(sender=None)
    assert enqueue.drain(10)
    assert sent == [4, 5]


def test_a_hint_asked_again_while_the_sender_is_busy_goes_once(
    monkeypatch: Any, settings: Any
) -> None:
    settings.RIG_ENQUEUE_INLINE = False
    sending, busy, sent = threading.Event(), threading.Event(), []

    def slow(node_id: int) -> None:
        sending.set()
        busy.wait(30)
        sent.append(node_id)

    monkeypatch.setattr(node_nudge, "delay", slow)
    enqueue.enqueue(node_nudge, 1)
    assert sending.wait(10)
    for node_id in (2, 3, 2, 2):  # a burst of publishes on nodes 2 and 3 meanwhile
        enqueue.enqueue(node_nudge, node_id)
    busy.set()
    assert enqueue.drain(10)
    assert sent == [1, 2, 3]
