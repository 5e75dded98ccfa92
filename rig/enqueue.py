"""Hand Celery tasks to the broker after commit, off the request path.

Every task rig enqueues from a request is a hint the system survives losing: a node nudge (the
agent polls anyway) or a webhook delivery (its row stays pending for ``delivery_sweep``). So a
request never waits for the broker: with Redis down, one ``delay()`` spends seconds in the
client's connection retries, longer than nginx-rtmp waits for a publish hook. The sends go to
one sender thread through a bounded queue; when the queue is full, the hint is dropped and
logged.

A hint made during a request waits for the request's end (``request_finished``: the response
has been written to its client), so the send's CPU (about 0.7 ms of Celery's message building,
which holds the GIL) never slows the answer it follows. The sender sends a hint once however
often it was queued meanwhile: one nudge reconciles everything a burst of publishes changed.
"""

import logging
import queue
import threading
from typing import Any

from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import transaction

logger = logging.getLogger(__name__)

_QUEUE_SIZE = 1000
_sends: queue.Queue[tuple[Any, tuple[Any, ...]]] = queue.Queue(maxsize=_QUEUE_SIZE)
_sender: threading.Thread | None = None
_sender_lock = threading.Lock()


def _send(task: Any, args: tuple[Any, ...]) -> None:
    try:
        task.delay(*args)
    except Exception:  # broker down: a hint lost, not a request failed
        logger.warning("could not enqueue %s%s", task.name, args, exc_info=True)


def _once(batch: list[tuple[Any, tuple[Any, ...]]]) -> list[tuple[Any, tuple[Any, ...]]]:
    """Each hint once, in the order first asked (all of them if one cannot be compared)."""
    try:
        return list(dict.fromkeys(batch))
    except TypeError:
        return batch


def _sender_loop() -> None:
    while True:
        batch = [_sends.get()]
        while True:
            try:
                batch.append(_sends.get_nowait())
            except queue.Empty:
                break
        try:
            for task, args in _once(batch):
                _send(task, args)
        finally:
            for _ in batch:
                _sends.task_done()


def _ensure_sender() -> None:
    global _sender
    with _sender_lock:
        if _sender is None or not _sender.is_alive():
            _sender = threading.Thread(target=_sender_loop, name="rig-enqueue", daemon=True)
            _sender.start()


def _queue(task: Any, args: tuple[Any, ...]) -> None:
    _ensure_sender()
    try:
        _sends.put_nowait((task, args))
    except queue.Full:
        logger.warning("enqueue backlog full (broker down?): dropped %s%s", task.name, args)


# The hints of the request this thread serves (None between requests).
_request = threading.local()


def _request_begins(**_: Any) -> None:
    # Hints of a request whose end was never signalled (its response never closed) still go.
    _request_ends()
    _request.hints = []


def _request_ends(**_: Any) -> None:
    hints, _request.hints = getattr(_request, "hints", None), None
    for task, args in hints or ():
        _queue(task, args)


request_started.connect(_request_begins, dispatch_uid="rig.enqueue.begins")
request_finished.connect(_request_ends, dispatch_uid="rig.enqueue.ends")


def enqueue(task: Any, *args: Any) -> None:
    """Send ``task.delay(*args)`` without waiting for the broker, once the current request (if
    any) has been answered (inline when ``RIG_ENQUEUE_INLINE``, as unit tests want)."""
    if settings.RIG_ENQUEUE_INLINE:
        _send(task, args)
        return
    hints = getattr(_request, "hints", None)
    if hints is not None:
        hints.append((task, args))
    else:
        _queue(task, args)


def enqueue_after_commit(task: Any, *args: Any) -> None:
    """Enqueue once the current transaction commits; nothing if it rolls back."""
    transaction.on_commit(lambda: enqueue(task, *args))


def drain(timeout: float = 5.0) -> bool:
    """Wait until every queued send was attempted (tests, shutdown). True if drained."""
    done = threading.Event()

    def wait() -> None:
        _sends.join()
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    return done.wait(timeout)
