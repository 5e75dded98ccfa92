"""The ingest's nginx as a child process of a test: every media test gets its own private
nginx-rtmp on free ports (on a node, a process supervisor runs ``nginx_command`` instead)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import TracebackType

from agents.node.ingest import IngestConfig, _http_get, nginx_command, write_nginx_conf


def _connect_host(bind: str) -> str:
    # A wildcard listener is reachable on loopback; a specific address only on itself.
    return "127.0.0.1" if bind in ("0.0.0.0", "", "*") else bind  # noqa: S104


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class NginxIngest:
    """Runs the ingest nginx as a foreground child process.

    nginx is started in its own session/process group so that :meth:`stop` can take the
    master and its worker down together even if the master dies uncleanly.
    """

    def __init__(self, cfg: IngestConfig, *, nginx: str = "nginx") -> None:
        self.cfg = cfg
        self.nginx = nginx
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http_base(self) -> str:
        return self.cfg.http_base

    def start(self, timeout: float = 10.0) -> None:
        """Write the config, start nginx, and wait until it serves RTMP and /stat.

        Raises RuntimeError if nginx exits (bad config, port in use: the message carries
        its stderr and error log), TimeoutError if it is not ready within *timeout*.
        """
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("nginx already running")
        write_nginx_conf(self.cfg)
        stderr_path = self.cfg.prefix.resolve() / "logs" / "nginx.stderr"
        with stderr_path.open("ab") as stderr:
            self.proc = subprocess.Popen(
                nginx_command(self.cfg, nginx=self.nginx),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        host = _connect_host(self.cfg.rtmp_bind)
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise RuntimeError(
                    f"nginx exited with {rc} during startup:\n{self._diagnostics(stderr_path)}"
                )
            if self._ready(host):
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise TimeoutError(
                    f"nginx did not listen on {host}:{self.cfg.rtmp_port} within {timeout}s:\n"
                    f"{self._diagnostics(stderr_path)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop nginx (fast shutdown), escalating to SIGKILL; leaves no process behind."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        # SIGTERM = nginx fast shutdown: the worker exits at once and the master after it.
        # Live RTMP sessions are cut WITHOUT on_publish_done (measured): the control plane
        # notices the end from the agent's reports, which stop listing them.
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        # The group (pgid == master pid, thanks to start_new_session) also holds the
        # worker; kill whatever is still in it, e.g. a worker orphaned by a crashed master.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=timeout)

    def __enter__(self) -> NginxIngest:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _ready(self, host: str) -> bool:
        # Ready = the RTMP port accepts TCP *and* our nginx answers /stat. The /stat check
        # matters: nginx retries a busy port for ~2.5s before giving up, and meanwhile
        # whatever squats the port would accept our probe. /stat names the worker pid, which
        # must be in our process group (pgid == master pid, see start_new_session).
        if self.proc is None or not _port_open(host, self.cfg.rtmp_port):
            return False
        try:
            root = ET.fromstring(_http_get(f"{self.cfg.http_base}/stat", 0.5))  # noqa: S314
            worker = int(root.findtext("pid") or "0")
            return worker > 0 and os.getpgid(worker) == self.proc.pid
        except (OSError, ET.ParseError, ValueError):
            return False

    def _diagnostics(self, stderr_path: Path) -> str:
        parts = []
        for path in (stderr_path, self.cfg.error_log_path):
            with contextlib.suppress(OSError):
                tail = path.read_text(encoding="utf-8", errors="replace")[-2000:]
                parts.append(f"--- {path}\n{tail}")
        return "\n".join(parts)
