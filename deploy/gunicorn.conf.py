"""gunicorn's settings and hooks, shared by `make up` (deploy/Procfile) and the systemd unit.

Workers: one request at a time each (gthread with one thread: idle keep-alive connections wait
in the worker's poller, not in a thread), two per core (WEB_CONCURRENCY overrides). Threads in one
worker share its interpreter lock: on 2 cores, in paired runs, a worker of one thread spent
2.0-2.5 ms of CPU (with Postgres) per GET /agents/streams, one of 4 threads 2.4-2.9 (bench/api.py
runs both layouts).

With PROMETHEUS_MULTIPROC_DIR set, every worker writes its in-process metrics (the hook latency
histogram) to files there and /metrics merges them. Files left by an earlier run would add old
counts, so the master empties the directory at start, and tells prometheus-client when a worker
exits (so live-process gauges stop counting it).
"""

import gc
import json
import os
from pathlib import Path
from typing import Any

from gunicorn import util

worker_class = "gthread"
threads = 1
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1)))


def on_starting(server: Any) -> None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()


def post_worker_init(worker: Any) -> None:
    """What a worker loaded at start (Django, rig, every view) lives as long as the worker: it
    is frozen out of the garbage collector's way, so a full collection no longer walks its
    120,000 objects in the middle of a request (a 67-ms pause on this machine)."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports every view now, not at a first request
    gc.freeze()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


# gunicorn answers requests it cannot parse (a request line over 4094 bytes, bad headers)
# itself, with an HTML page. rig's clients expect the error envelope everywhere: the same
# answer in JSON, codes as rig.api.ErrorCode has them, and nothing of the request echoed (a
# request line may carry a stream key).
_ERROR_CODES = {403: 1003, 500: 1008}  # INVALID_CREDENTIALS, FETCH_FAILED; else INVALID_INPUT


def _write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    body = json.dumps(
        {"message": reason, "errorCode": _ERROR_CODES.get(status_int, 1005), "details": None}
    )
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, (head + body).encode("latin1"))


util.write_error = _write_json_error
