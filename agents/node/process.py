"""One ffmpeg attempt of a relay: spawn it, read its progress and log as they come, stop it
as ordered, and say why it ended. When to run one and what its figures mean is the relay's
state machine (:mod:`agents.node.supervisor`), in the manner of datarhei Core's ``process``
beneath its ``restream``.

Children never outlive the agent: each is spawned with ``PR_SET_PDEATHSIG=SIGKILL``. Linux
sends that signal when the *thread* that forked the child exits, not the process, so the
thread that creates an :class:`Attempt` must stay alive until :meth:`Attempt.wait` returns.
Each child also gets its own process group, so a Ctrl-C in the agent's terminal does not reach
it; the supervisor stops the children itself.

Standard library only: it runs on nodes that have no Django.
"""

from __future__ import annotations

import ctypes
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from typing import IO, Any

from agents.node.relay import Progress, ProgressParser, redact
from agents.node.tcpwatch import PeerReading, socket_inodes

__all__ = [
    "TICK",
    "Attempt",
    "PipeLines",
    "answers",
    "die_with_parent",
    "exit_text",
    "probe_address",
    "spawn",
    "target_address",
]

TICK = 0.2  # the longest a read waits: the relay re-checks orders, stalls and liveness this often
TERM_GRACE = 3.0  # seconds between the first SIGTERM of an ordered stop and SIGKILL
_LEVEL_TAG = re.compile(r"\[(?:warning|error|fatal|panic)\] ")
_ERROR_TAG = re.compile(r"\[(?:error|fatal|panic)\] ")


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    # Resolved once in the parent: the child, between fork and exec, should only make a call.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_prctl = _load_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGKILL when the thread that spawned it goes away."""

    def setup() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            # The parent died before prctl took effect: nobody would ever send the signal.
            os.kill(os.getpid(), signal.SIGKILL)

    return setup


_DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443, "rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


def target_address(url: str) -> tuple[str, int] | None:
    """(host, port) a relay connects to; None if unknown. SRT gives its port in the URL."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname and port else None


def probe_address(url: str) -> tuple[str, int] | None:
    """Where to check that a relay's destination is back (a TCP connect), or None: SRT runs
    over UDP, where nothing answers a connect."""
    return None if url.startswith("srt://") else target_address(url)


def answers(address: tuple[str, int]) -> bool:
    """Whether something accepts a TCP connection there (within half a second)."""
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


def exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def spawn(command: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """A child that reports on stdout and stderr (pipes), in its own process group, killed when
    the calling thread ends (see above)."""
    return subprocess.Popen(
        command,
        **{"stdin": subprocess.DEVNULL, **popen},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,
        preexec_fn=die_with_parent(os.getpid()),
    )


class PipeLines:
    """Complete lines from a child's pipes as they arrive, each with its pipe's name."""

    def __init__(self, **pipes: IO[bytes] | None) -> None:
        self._selector = selectors.DefaultSelector()
        for name, pipe in pipes.items():
            assert pipe is not None
            self._selector.register(pipe, selectors.EVENT_READ, name)
        self._pending: dict[int, bytes] = {}

    def read(self, timeout: float) -> list[tuple[str, str]] | None:
        """(pipe name, line) for every non-empty line completed within ``timeout``, in order;
        None once every pipe is closed."""
        if not self._selector.get_map():
            return None
        lines: list[tuple[str, str]] = []
        for key, _ in self._selector.select(timeout=timeout):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                self._selector.unregister(key.fileobj)
                chunk = b"\n"  # flush whatever partial line was left
            *complete, self._pending[key.fd] = (self._pending.get(key.fd, b"") + chunk).split(b"\n")
            for raw in complete:
                if text := raw.decode(errors="replace").strip():
                    lines.append((key.data, text))
        return lines

    def close(self) -> None:
        self._selector.close()


class Attempt:
    """One ffmpeg process: progress (``-progress pipe:1``) on stdout, log lines on stderr.

    Not thread-safe: the thread that made it reads it, stops it and waits for it.
    """

    def __init__(self, command: list[str], secrets: tuple[str, ...]) -> None:
        """Spawn ``command``; OSError if it cannot start."""
        self.proc = spawn(command)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._peer = PeerReading(lambda: socket_inodes(self.proc.pid))
        self.secrets = secrets
        self.stalled: str | None = None  # why it was killed for a stall
        self._lines = PipeLines(progress=self.proc.stdout, log=self.proc.stderr)
        self._parser = ProgressParser()
        self._term_sent: float | None = None  # monotonic time of the first SIGTERM
        self._term_repeated = False
        self._last_line: str | None = None
        self._last_error_line: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stopping(self) -> bool:
        """An ordered stop has begun: whatever comes next, an order ended it."""
        return self._term_sent is not None

    def started(self) -> str:
        return f"started ffmpeg, pid {self.pid}"

    def ended(self, returncode: int) -> str:
        return f"ffmpeg {exit_text(returncode)}"

    def not_reading_for(self, now: float) -> float:
        """Seconds its destination has not been reading what it sends (agents.node.tcpwatch)."""
        return self._peer.not_reading_for(now)

    def kill(self) -> None:
        self.proc.kill()

    def wake(self) -> None:
        """An order came: ``read`` returns within a tick anyway."""

    def read(self) -> tuple[list[Progress], list[str]] | None:
        """What arrived within one tick: progress blocks and log lines (keys redacted), in
        order. None once ffmpeg closed both pipes."""
        arrived = self._lines.read(TICK)
        if arrived is None:
            return None
        progress: list[Progress] = []
        log: list[str] = []
        for pipe, text in arrived:
            if pipe == "progress":
                if (block := self._parser.feed(text)) is not None:
                    progress.append(block)
            else:
                log.append(self._logged(text))
        return progress, log

    def _logged(self, line: str) -> str:
        line = redact(line, self.secrets)
        self._last_line = line
        if _ERROR_TAG.search(line):
            self._last_error_line = line
        return line

    def stop(self, now: float) -> None:
        """Called every tick while the attempt should end. ffmpeg's first SIGTERM only asks its
        main loop to finish; a relay whose input is quiet (the publisher left) sits in a
        blocking read until a second one interrupts it, and then still writes the end of the
        stream: the platform gets a clean unpublish at once, not a silent connection. SIGKILL
        after TERM_GRACE."""
        if self._term_sent is None:
            self.proc.terminate()
            self._term_sent = now
        elif now - self._term_sent > TERM_GRACE:
            self.proc.kill()
        elif not self._term_repeated:
            self.proc.terminate()
            self._term_repeated = True

    def kill_stalled(self, reason: str) -> None:
        """Nothing to flush on a stalled relay: no point asking nicely."""
        if self.stalled is None:
            self.stalled = reason
            self.proc.kill()

    def wait(self) -> int:
        """Reap ffmpeg and close its pipes; its exit status."""
        returncode = self.proc.wait()
        self._lines.close()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return returncode

    def outcome(self, returncode: int) -> str:
        """Why the process ended, for ``last_error``: already redacted."""
        if self.stalled is not None:
            return self.stalled
        detail = self._last_error_line or self._last_line
        if detail is None:
            return f"ffmpeg {exit_text(returncode)}"
        return f"{_LEVEL_TAG.sub('', detail)} ({exit_text(returncode)})"
