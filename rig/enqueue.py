"""Hand Celery tasks to the broker after commit, off the request path.

Every task rig enqueues from a request is a hint the system survives losing: a node nudge (the
agent polls anyway) or a webhook delivery (its row stays pending for ``delivery_sweep``). So a
request never waits for the broker: with Redis down, one ``delay()`` spends seconds in the
client's connection retries, longer than nginx-rtmp waits for a publish hook. The sends go to
one sender thread through a bounded queue; when the queue is full, the hint is dropped and
logged.
"""

import logging
import queue
import threading
from typing import Any

from django.conf import settings
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


def _sender_loop() -> None:
    while True:
        task, args = _sends.get()
        _send(task, args)
        _sends.task_done()


def _ensure_sender() -> None:
    global _sender
    with _sender_lock:
        if _sender is None or not _sender.is_alive():
            _sender = threading.Thread(target=_sender_loop, name="rig-enqueue", daemon=True)
            _sender.start()


def enqueue(task: Any, *args: Any) -> None:
    """Send ``task.delay(*args)`` without waiting for the broker (inline when
    ``RIG_ENQUEUE_INLINE``, as unit tests want)."""
    if settings.RIG_ENQUEUE_INLINE:
        _send(task, args)
        return
    _ensure_sender()
    try:
        _sends.put_nowait((task, args))
    except queue.Full:
        logger.warning("enqueue backlog full (broker down?): dropped %s%s", task.name, args)


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
