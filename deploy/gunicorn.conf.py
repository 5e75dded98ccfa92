"""gunicorn hooks shared by `make up` (deploy/Procfile) and the systemd unit.

With PROMETHEUS_MULTIPROC_DIR set, every worker writes its in-process metrics (the hook latency
histogram) to files there and /metrics merges them. Files left by an earlier run would add old
counts, so the master empties the directory at start, and tells prometheus-client when a worker
exits (so live-process gauges stop counting it).
"""

import os
from pathlib import Path
from typing import Any


def on_starting(server: Any) -> None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
