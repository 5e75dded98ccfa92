"""Relays that share their stream's fan-out process (agents.node.fanout) instead of running an
ffmpeg each: one process per publish session reads the stream once and writes every RTMP(S)
destination of it; each destination is a leg of it.

To its relay (agents.node.lifecycle) a leg looks like one ffmpeg attempt (:class:`LegAttempt`:
read its progress and log, stop it, say why it ended), so states, backoff, giving up, restarts,
mute and the control API are the same for both kinds. A leg does not reconnect by itself: its
connection ending ends the attempt, and the relay decides when to try again. The process
(:class:`FanoutProcess`) is started ahead of need (a spare), is given its session's source with
the first leg, and ends half a second after its last leg left, when the stream's next session
replaces it, when its source ends, or killed when it has said nothing for the stall timeout
(every leg's attempt ends with it, and starts again).

Standard library only: it runs on nodes that have no Django.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agents.node.process import TICK, PipeLines, exit_text, spawn
from agents.node.relay import Progress, RelaySpec, redact
from agents.node.tcpwatch import PeerReading

__all__ = ["FanoutProcesses", "LegAttempt", "fans_out"]

_RETIRED_KEPT = 1024
# The longest a leg's read waits with no report (connecting, or its process wedged): its relay
# re-checks stalls and liveness this often; orders wake it at once. Longer than the process's
# report period (agents.node.fanout.REPORT_S, 1 s), so a live leg's thread wakes once a report,
# not also at a tick falling just before each (10 legs: 0.16 % of a core for the agent at 1 s,
# 0.09 at 2 s).
LEG_TICK = 1.5
IDLE_S = 0.5  # a process with no legs left lives this long: a restarted leg finds it still there
_ROOT = str(Path(__file__).resolve().parents[2])  # where the agents package is, for the child


def fans_out(spec: RelaySpec) -> bool:
    """Whether the relay can be a leg of its stream's fan-out: a copy of a stream of this node's
    ingest to an RTMP(S) destination. Pulls, transcoding, SRT destinations and what a shared
    encoder feeds stay ffmpeg relays."""
    return (
        not (spec.pull or spec.local or spec.transcode)
        and spec.source_url.startswith("rtmp://")
        and "/encoded/" not in spec.source_url
        and spec.target_url.startswith(("rtmp://", "rtmps://"))
    )


class LegAttempt:
    """One connection of a leg, as the relay's attempt: the same methods as
    :class:`agents.node.process.Attempt`. Its relay's thread uses it (``kill`` may come from
    the thread shutting the node down; leaving is idempotent); the fan-out's reader thread only
    puts events in its queue."""

    def __init__(self, processes: FanoutProcesses, spec: RelaySpec, secrets: tuple[str, ...]):
        self.secrets = secrets
        self.stalled: str | None = None
        # What the fan-out process said of this leg (None: the process ended), for the relay's
        # thread: each wakes it, as an order does (``wake``).
        self._events: queue.SimpleQueue[dict[str, object] | None] = queue.SimpleQueue()
        self._id = f"{spec.relay_id}#{time.monotonic_ns()}"  # this attempt, not the relay
        self._target = spec.target_url
        self._ordered = False
        self._ended: str | None = None
        self._peer = PeerReading()  # from the figures its process reports
        self._process = processes.attach(spec, self._id, self)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def stopping(self) -> bool:
        return self._ordered

    def started(self) -> str:
        return f"joined the stream's fan-out, pid {self.pid}"

    def read(self) -> tuple[list[Progress], list[str]] | None:
        """What came since the last read: it waits for the process's next report (every
        second while connected), an order (``wake``) or ``LEG_TICK``, whichever comes first,
        so a live leg's thread wakes with its reports, not at every tick as well. None once
        the leg has ended."""
        if self._ended is not None:
            return None
        progress: list[Progress] = []
        log: list[str] = []
        try:
            event = self._events.get(timeout=LEG_TICK)
            while True:  # and whatever else is queued
                self._take(event, progress, log)
                event = self._events.get_nowait()
        except queue.Empty:
            pass
        return progress, log  # an end shows at the next read

    def put(self, event: dict[str, object] | None) -> None:
        """What the fan-out process said of this leg (None: it ended)."""
        self._events.put(event)

    def _take(
        self, event: dict[str, object] | None, progress: list[Progress], log: list[str]
    ) -> None:
        if self._ended is not None:
            return
        if event is None:  # the fan-out process ended: its source did
            self._ended = redact(self._process.outcome(), self.secrets)
        elif "end" in event:
            self._ended = redact(f"{self._target}: {event['end']}", self.secrets)
            log.append(f"[error] {self._ended}")
        elif "log" in event:
            log.append(redact(str(event["log"]), self.secrets))
        elif "connected" in event:
            log.append("[info] connected to the destination")
        elif "bytes" in event:
            if isinstance(tcp := event.get("tcp"), list) and len(tcp) == 3:
                self._peer.observe(time.monotonic(), 0, *(int(figure) for figure in tcp))
            progress.append(
                Progress(
                    total_size=int(str(event["bytes"])),
                    frame=int(str(event["frames"])),
                    out_time_us=int(str(event["timeUs"])),
                )
            )

    def wake(self) -> None:
        """An order came: the relay's thread reads at once (``{}`` is no event)."""
        self._events.put({})

    def not_reading_for(self, now: float) -> float:
        return self._peer.not_reading_for(now)

    def stop(self, now: float) -> None:
        """Leave the fan-out; the process carries on for the stream's other legs."""
        self._ordered = True
        self._leave()

    def kill_stalled(self, reason: str) -> None:
        if self.stalled is None:
            self.stalled = reason
            self._leave()

    def kill(self) -> None:
        self.stop(time.monotonic())

    def _leave(self) -> None:
        if self._ended is None:
            self._ended = ""
        self._process.detach(self._id)
        self.wake()

    def wait(self) -> int:
        self._leave()
        return 0 if self._ordered else 1

    def ended(self, returncode: int) -> str:
        return "left the stream's fan-out"

    def outcome(self, returncode: int) -> str:
        if self.stalled is not None:
            return self.stalled
        return self._ended or "the destination's connection ended"


class FanoutProcess:
    """One fan-out process and the legs attached to it: its own thread spawns it, hands its
    events to the legs and reaps it; the legs' threads write its orders."""

    def __init__(self, on_exit: Callable[[FanoutProcess], None], silent_s: float) -> None:
        self._silent_s = silent_s
        self._source = ""  # none yet: a spare, started ahead of need
        self._lock = threading.Lock()
        self._legs: dict[str, LegAttempt] = {}
        self._idle_since: float | None = None
        self._last_line = ""
        self._returncode: int | None = None
        self.closing = False  # no leg may attach any more
        self._heard = time.monotonic()  # its last line: it says it is alive every second
        self._silence = ""
        self._on_exit = on_exit
        self._orders_lock = threading.Lock()
        self._orders = bytearray()  # written to its stdin as the pipe takes them
        started = threading.Event()
        self._failed: OSError | None = None
        self._command = [sys.executable, "-m", "agents.node.fanout", "--control"]
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True,
                                        name="fan-out")  # fmt: skip
        self._thread.start()
        started.wait()
        if self._failed is not None:
            raise self._failed

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, source_url: str) -> None:
        """Give the spare its stream: from now on it reads it and says it is alive."""
        self._source, self._heard = source_url, time.monotonic()
        self._send({"source": source_url})

    def attach(self, leg_id: str, leg: LegAttempt, url: str, mute: bool) -> bool:
        """Take the leg (False: too late, the process is ending)."""
        with self._lock:
            if self.closing:
                return False
            self._legs[leg_id] = leg
            self._idle_since = None
        self._send({"add": leg_id, "url": url, "mute": mute})
        return True

    def detach(self, leg_id: str) -> None:
        with self._lock:
            if self._legs.pop(leg_id, None) is None:
                return
            if not self._legs:
                self._idle_since = time.monotonic()
        self._send({"remove": leg_id})

    def outcome(self) -> str:
        if self._silence:
            return f"{self._silence}, killed"
        status = exit_text(self._returncode or 0)
        if self._last_line:
            return f"source: {self._last_line} (fan-out {status})"
        return f"the stream's source ended (fan-out {status})"

    def _send(self, order: dict[str, object]) -> None:
        """Queue an order and write what its stdin takes now; the rest goes on the process's
        own thread, so a wedged process (its pipe full) never blocks a caller, who may hold
        the registry's or a relay's lock."""
        with self._orders_lock:
            self._orders += (json.dumps(order) + "\n").encode()
            self._write_orders()

    def _write_orders(self) -> None:
        """Under ``_orders_lock``: as much of the queued orders as the pipe takes."""
        if not self._orders:
            return
        try:
            assert self.proc.stdin is not None
            del self._orders[: os.write(self.proc.stdin.fileno(), self._orders)]
        except BlockingIOError:
            pass  # full: the rest on the next tick
        except (OSError, ValueError):
            self._orders.clear()  # it is ending: its thread tells the legs

    def _run(self, started: threading.Event) -> None:
        env = {**os.environ, "PYTHONPATH": _ROOT}
        try:  # this thread lives until the process is reaped (PR_SET_PDEATHSIG)
            self.proc = spawn(self._command, stdin=subprocess.PIPE, env=env)
            assert self.proc.stdin is not None
            os.set_blocking(self.proc.stdin.fileno(), False)  # see _send
        except Exception as error:  # the caller raises it, as an OSError
            self._failed = error if isinstance(error, OSError) else OSError(str(error))
            return
        finally:
            started.set()
        lines = PipeLines(events=self.proc.stdout, log=self.proc.stderr)
        while (arrived := lines.read(self._tick())) is not None:
            with self._orders_lock:
                self._write_orders()
            for name, line in arrived:
                self._on_line(line, is_event=name == "events")
            self._end_if_idle()
        lines.close()
        self._returncode = self.proc.wait()
        with self._lock:
            self.closing = True
            legs, self._legs = list(self._legs.values()), {}
        self._on_exit(self)
        for leg in legs:
            leg.put(None)
        with self._orders_lock:  # no order is written to a closed (or reused) descriptor
            self._orders.clear()
            for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()

    def _tick(self) -> float:
        """How long its thread waits for a line: a playing process says it is alive every
        second, and a spare has nothing to say; orders its stdin has not taken yet and an
        idle process's end are looked after more often."""
        with self._lock:
            idle = self._idle_since is not None
        return TICK if idle or self._orders else LEG_TICK

    def _on_line(self, line: str, *, is_event: bool) -> None:
        self._heard = time.monotonic()
        if not is_event:  # why its source ended (or a Python error): every leg's log
            with self._lock:
                legs = list(self._legs.values())
            # Any leg's key hidden from every leg (one log for them all), longest first.
            secrets = [secret for leg in legs for secret in leg.secrets]
            text = redact(line, secrets)
            self._last_line = text
            for leg in legs:
                leg.put({"log": f"[error] source: {self._last_line}"})
            return
        try:
            event = json.loads(line)
        except ValueError:
            return
        with self._lock:
            owner = self._legs.get(str(event.get("leg")))
        if owner is not None:
            owner.put(event)

    def _end_if_idle(self) -> None:
        """End it a while after its last leg left; kill it when it has said nothing for
        ``silent_s`` (stopped, wedged): its legs start again with a new one."""
        now = time.monotonic()
        with self._lock:
            idle = self._idle_since is not None and now - self._idle_since > IDLE_S
            ending, self.closing = idle and not self.closing, self.closing or idle
        if ending:
            self._on_exit(self)
            self.proc.terminate()
        elif self._source and now - self._heard > self._silent_s and self.proc.poll() is None:
            self._silence = f"the stream's fan-out said nothing for {now - self._heard:.0f}s"
            self.proc.kill()

    def terminate(self) -> None:
        with self._lock:
            self.closing = True
        if self.proc.poll() is None:
            self.proc.terminate()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


class FanoutProcesses:
    """The node's fan-out processes, one per (stream source, publish session)."""

    def __init__(self, *, silent_s: float = 15.0) -> None:
        self._silent_s = silent_s
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], FanoutProcess] = {}
        self._all: list[FanoutProcess] = []
        self._retired: dict[tuple[str, str], None] = {}  # superseded sessions, oldest first
        self._closed = False
        # One process started ahead of need: a new session costs no Python start-up (0.1 s of
        # the publisher's wait in the publish hook, measured by `make bench`).
        self._spare: FanoutProcess | None = None
        with self._lock:
            self._make_spare()

    def _make_spare(self) -> None:
        try:
            self._spare = FanoutProcess(self._exited, self._silent_s)
        except OSError:
            self._spare = None  # tried again when one is needed
            return
        self._all = [p for p in self._all if not p.join(0)] + [self._spare]

    def attach(self, spec: RelaySpec, leg_id: str, leg: LegAttempt) -> FanoutProcess:
        key = (spec.source_url, spec.session)
        with self._lock:
            if self._closed:
                raise OSError("the node's relays are shut down")
            if key in self._retired:  # a relay still on the session's spec: it is over
                raise OSError("the stream's session is over")
            process = self._running.get(key)
            if process is None or not process.attach(leg_id, leg, spec.target_url, spec.mute):
                if self._spare is None or self._spare.closing:
                    self._make_spare()
                if self._spare is None:
                    raise OSError("could not start the stream's fan-out")
                process, self._spare = self._spare, None
                process.start(spec.source_url)
                self._running[key] = process
                attached = process.attach(leg_id, leg, spec.target_url, spec.mute)
                self._make_spare()  # after the leg's order: its spawn is not on the leg's path
                if not attached:
                    raise OSError("the stream's fan-out ended as it started")
        return process

    def retire(self, wanted: set[tuple[str, str]]) -> None:
        """End, and wait for, the processes of a stream's earlier sessions: ``wanted`` holds
        the (source, session) of every leg now wanted. A new session's publisher must not be
        admitted while the last session's process still plays its name (the agent counts the
        players before it answers nginx's publish hook)."""
        sources = {source for source, _ in wanted}
        with self._lock:
            old = [
                (key, process)
                for key, process in self._running.items()
                if key[0] in sources and key not in wanted
            ]
            for key, _ in old:
                self._retired[key] = None
            while len(self._retired) > _RETIRED_KEPT:
                del self._retired[next(iter(self._retired))]
        old_processes = [process for _, process in old]
        for process in old_processes:
            process.terminate()
        for process in old_processes:
            if not process.join(1.0):
                process.proc.kill()

    def _exited(self, process: FanoutProcess) -> None:
        with self._lock:
            if process is self._spare:
                self._spare = None
            for key, running in list(self._running.items()):
                if running is process:
                    del self._running[key]

    def shutdown(self, timeout: float) -> None:
        with self._lock:
            self._closed = True
            processes = list(self._all)
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + timeout
        for process in processes:
            if not process.join(max(0.0, deadline - time.monotonic())):
                process.proc.kill()
                process.join(2.0)
