"""Runs and supervises the relays of one ingest node: one ffmpeg process per destination.

Each relay is an object with its spec, an order (run or stop) and an observable state, in the
manner of datarhei Core's restream package. Its lifecycle runs in its own long-lived thread,
which spawns ffmpeg, reads its progress and stderr, and on exit or stall restarts it with
exponential backoff. Callers (the agent's poll loop, its HTTP nudge handler) only give orders
and read snapshots, from any thread.

Children never outlive the agent: each is spawned with ``PR_SET_PDEATHSIG=SIGKILL``. Linux
sends that signal when the *thread* that forked the child exits, not the process, which is why
the child is spawned by the relay's own thread and that thread stays alive until the child is
reaped. Each child also gets its own process group, so a Ctrl-C in the agent's terminal does
not reach it; :meth:`Supervisor.shutdown` stops the children itself.

Standard library only: it runs on nodes that have no Django.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agents.node.protocol import LOG_LINES_KEPT
from agents.node.relay import (
    Progress,
    ProgressParser,
    RelaySnapshot,
    RelaySpec,
    RelayState,
    build_relay_command,
    redact,
    relay_secrets,
)

__all__ = ["Supervisor"]

logger = logging.getLogger(__name__)

_TICK = 0.2  # how often a relay's thread re-checks orders, stalls and the live window
_TERM_GRACE = 3.0  # seconds between SIGTERM and SIGKILL on an ordered stop
_RATE_WINDOW = 5  # progress reports (about one a second) that bitrate/fps are measured over
_JITTER = 0.2
_LEVEL_TAG = re.compile(r"\[(?:warning|error|fatal|panic)\] ")
_ERROR_TAG = re.compile(r"\[(?:error|fatal|panic)\] ")

OnChange = Callable[[RelaySnapshot], None]


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


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGKILL when the thread that spawned it goes away."""

    def setup() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            # The parent died before prctl took effect: nobody would ever send the signal.
            os.kill(os.getpid(), signal.SIGKILL)

    return setup


_DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}


def target_address(url: str) -> tuple[str, int] | None:
    """(host, port) a relay connects to, for the reachability probe; None if unknown."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname and port else None


def _answers(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass(frozen=True)
class _Settings:
    ffmpeg: str
    backoff_initial: float
    backoff_max: float
    healthy_reset: float
    live_window: float
    stall_timeout: float
    failed_after: int
    on_change: OnChange | None


LineHandler = Callable[[str], Progress | None]


def _read_lines(
    selector: selectors.BaseSelector, pending: dict[int, bytes]
) -> list[tuple[LineHandler, str]]:
    """Complete lines that arrived within one tick, each with the handler of its pipe."""
    lines: list[tuple[LineHandler, str]] = []
    for key, _ in selector.select(timeout=_TICK):
        fd = key.fd
        chunk = os.read(fd, 65536)
        if not chunk:
            selector.unregister(key.fileobj)
            chunk = b"\n"  # flush whatever partial line was left
        *complete, pending[fd] = (pending.get(fd, b"") + chunk).split(b"\n")
        for raw in complete:
            if text := raw.decode(errors="replace").strip():
                lines.append((key.data, text))
    return lines


class _Run:
    """One ffmpeg process of a relay and what it said."""

    def __init__(self, proc: subprocess.Popen[bytes], secrets: tuple[str, ...]) -> None:
        self.proc = proc
        self.secrets = secrets
        self.started = time.monotonic()
        self.pending: dict[int, bytes] = {}
        self.new_log: list[str] = []
        self.term_sent: float | None = None  # monotonic time of the SIGTERM of an order
        self.term_repeated = False
        self.stalled: str | None = None
        self._parser = ProgressParser()
        self._last_line: str | None = None
        self._last_error_line: str | None = None

    def on_progress_line(self, line: str) -> Progress | None:
        return self._parser.feed(line)

    def on_stderr_line(self, line: str) -> None:
        line = redact(line, self.secrets)
        self.new_log.append(line)
        self._last_line = line
        if _ERROR_TAG.search(line):
            self._last_error_line = line

    def outcome(self, returncode: int) -> str:
        """Why the process ended, for ``last_error``: already redacted."""
        if self.stalled is not None:
            return self.stalled
        detail = self._last_error_line or self._last_line
        if detail is None:
            return f"ffmpeg {_exit_text(returncode)}"
        return f"{_LEVEL_TAG.sub('', detail)} ({_exit_text(returncode)})"


class _Relay:
    """One relay: its spec, the order it was given and what it is doing about it.

    Every field below is guarded by ``_cond``. State changes happen only in the relay's own
    thread; orders from other threads set ``_want``/``_fresh``/``_kick`` and wake it.
    """

    def __init__(self, spec: RelaySpec, settings: _Settings) -> None:
        self._cfg = settings
        self._cond = threading.Condition()
        self._notify_lock = threading.Lock()
        self._delivered: tuple[RelayState, float] | None = None
        self.spec = spec
        self._want = False  # ordered to run
        self._fresh = False  # next attempt is a new start: counters and backoff reset
        self._kick = False  # end the current attempt or backoff wait now
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._state = RelayState.STOPPED
        self._since = time.time()
        self._live_since: float | None = None  # monotonic; set while LIVE
        self._last_advance: float | None = None  # monotonic; bytes last grew in this attempt
        self._last_picture: float | None = None  # monotonic; video last moved on, ditto
        self._went_live = False  # in this attempt
        self._failures = 0  # consecutive attempts that never went live
        self._backoff = settings.backoff_initial
        self._restarts = 0
        self._bytes_done = 0  # bytes of the attempts that ended
        self._bytes_now = 0  # bytes of the running attempt
        self._samples: deque[tuple[float, int, int | None]] = deque(maxlen=_RATE_WINDOW)
        self._reported: Progress | None = None
        self._last_error: str | None = None
        self._log: deque[str] = deque(maxlen=LOG_LINES_KEPT)
        self._log_total = 0  # lines ever logged, so a reader can tell which are new to it

    # --- orders (any thread) ----------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._want:
                return
            self._want = self._fresh = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"relay {self.spec.relay_id}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._want = False
            self._cond.notify_all()

    def restart(self) -> None:
        with self._cond:
            if self._want:
                self._fresh = self._kick = True
                self._cond.notify_all()
                return
        self.start()

    def set_spec(self, spec: RelaySpec) -> bool:
        """Take ``spec``; restart if running and it differs. True if it differed."""
        with self._cond:
            if spec == self.spec:
                return False
            self.spec = spec
            if self._want:
                self._fresh = self._kick = True
                self._cond.notify_all()
            return True

    def join(self, timeout: float) -> bool:
        with self._cond:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def kill(self) -> None:
        with self._cond:
            if self._proc is not None:
                self._proc.kill()

    # --- observation ------------------------------------------------------------------------

    def snapshot(self) -> RelaySnapshot:
        with self._cond:
            live = self._state is RelayState.LIVE
            bitrate, fps = self._rates() if live else (None, None)
            return RelaySnapshot(
                relay_id=self.spec.relay_id,
                state=self._state,
                bitrate_kbps=bitrate,
                fps=fps,
                bytes_sent=self._bytes_done + self._bytes_now,
                restarts=self._restarts,
                since=self._since,
                last_error=self._last_error,
                log=tuple(self._log),
                log_total=self._log_total,
                pid=self._proc.pid if self._proc is not None else None,
            )

    def _rates(self) -> tuple[float | None, float | None]:
        # ffmpeg's own bitrate/fps are averages since the process started, which hides a drop
        # after hours of streaming; measure over the last few reports when there are enough.
        if len(self._samples) >= 2 and self._samples[-1][0] - self._samples[0][0] >= 0.5:
            (t0, b0, f0), (t1, b1, f1) = self._samples[0], self._samples[-1]
            kbps = round((b1 - b0) * 8 / 1000 / (t1 - t0), 1)
            fps = round((f1 - f0) / (t1 - t0), 2) if f0 is not None and f1 is not None else None
            return kbps, fps
        if self._reported is None:
            return None, None
        return self._reported.bitrate_kbps, self._reported.fps

    def _notify(self) -> None:
        """Tell ``on_change`` about the current state if it differs from the last one told."""
        callback = self._cfg.on_change
        if callback is None:
            return
        # Serialised so reports reach the callback in order; the relay's lock is not held.
        with self._notify_lock:
            snapshot = self.snapshot()
            key = (snapshot.state, snapshot.since)
            if key == self._delivered:
                return
            self._delivered = key
            try:
                callback(snapshot)
            except Exception:
                logger.exception("relay %s: on_change callback failed", snapshot.relay_id)

    # --- the relay's thread -----------------------------------------------------------------

    def _set_state(self, state: RelayState) -> None:
        if state is self._state:
            return
        self._state = state
        self._since = time.time()
        self._live_since = time.monotonic() if state is RelayState.LIVE else None

    def _event(self, message: str) -> None:
        self._log.append(f"[supervisor] {message}")
        self._log_total += 1
        logger.info("relay %s: %s", self.spec.relay_id, message)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._want:
                    self._thread = None
                    self._set_state(RelayState.STOPPED)
                    break
                if self._fresh:
                    self._fresh = False
                    self._failures = 0
                    self._backoff = self._cfg.backoff_initial
                    self._set_state(RelayState.STARTING)
                self._kick = False
                spec = self.spec
            self._notify()
            failure = self._attempt(spec)
            self._notify()
            if failure is not None:
                self._back_off(failure)
        self._notify()

    def _back_off(self, failure: str) -> None:
        with self._cond:
            if not self._want or self._kick:
                return  # ordered away while it was failing: the order wins, no backoff
            if not self._went_live:
                self._failures += 1
            failed = self._failures >= self._cfg.failed_after
            base = self._cfg.backoff_max if failed else self._backoff
            self._backoff = min(self._backoff * 2, self._cfg.backoff_max)
            delay = base * random.uniform(1 - _JITTER, 1 + _JITTER)  # noqa: S311 - jitter only
            self._last_error = failure
            self._set_state(RelayState.FAILED if failed else RelayState.RECONNECTING)
            self._event(f"{failure}; restarting in {delay:.1f}s")
        self._notify()
        self._wait_to_retry(delay)

    def _wait_to_retry(self, delay: float) -> None:
        """Wait out the backoff, but retry as soon as a destination that was unreachable
        accepts connections again (a TCP connect a second), so a platform that comes back
        is live again within seconds, not after the longest backoff."""
        address = target_address(self.spec.target_url)
        deadline = time.monotonic() + delay
        was_down = False
        while True:
            with self._cond:
                remaining = deadline - time.monotonic()
                ordered = self._cond.wait_for(
                    lambda: not self._want or self._kick, timeout=max(0.0, min(1.0, remaining))
                )
                if ordered:
                    return
                if remaining <= 1.0:
                    self._restarts += 1
                    return
            if address is None:
                continue
            answers = _answers(address)
            if answers and was_down:
                with self._cond:
                    self._event("destination answers again: retrying now")
                    self._restarts += 1
                return
            was_down = was_down or not answers

    def _attempt(self, spec: RelaySpec) -> str | None:
        """Run ffmpeg once. The failure that ended it, or None if an order ended it."""
        secrets = relay_secrets(spec)
        # ffmpeg's own I/O timeout fires a little before the stall check, for a clearer error.
        rw_timeout = min(10.0, 0.8 * self._cfg.stall_timeout)
        command = build_relay_command(spec, ffmpeg=self._cfg.ffmpeg, rw_timeout_s=rw_timeout)
        with self._cond:
            self._bytes_now = 0
            self._samples.clear()
            self._reported = None
            self._last_advance = self._last_picture = None
            self._went_live = False
        try:
            # Spawned from this thread, which lives until the child is reaped: see the module
            # docstring about PR_SET_PDEATHSIG.
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                process_group=0,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except OSError as error:
            return redact(f"could not start ffmpeg: {error}", secrets)
        with self._cond:
            self._proc = proc
            self._event(f"started ffmpeg, pid {proc.pid}")
        run = _Run(proc, secrets)
        assert proc.stdout is not None and proc.stderr is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ, run.on_progress_line)
            selector.register(proc.stderr, selectors.EVENT_READ, run.on_stderr_line)
            while selector.get_map():
                lines = _read_lines(selector, run.pending)
                now = time.monotonic()
                with self._cond:
                    for handle, line in lines:
                        progress = handle(line)
                        if progress is not None:
                            self._on_progress(progress, now)
                    self._log.extend(run.new_log)
                    self._log_total += len(run.new_log)
                    run.new_log.clear()
                    self._check(run, now)
                self._notify()
        returncode = proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        with self._cond:
            self._bytes_done += self._bytes_now
            self._bytes_now = 0
            self._samples.clear()
            self._proc = None
            # Once asked to stop, an order ended it, even if a later order wants it running.
            if run.term_sent is not None or not self._want or self._kick:
                self._event(f"ffmpeg {_exit_text(returncode)} (ordered)")
                return None
            if self._state is RelayState.LIVE:
                self._set_state(RelayState.RECONNECTING)
            return run.outcome(returncode)

    def _check(self, run: _Run, now: float) -> None:
        """Carry out orders, catch a stall, keep the state honest. Called every tick."""
        quiet_for = now - (self._last_advance or run.started)
        if run.term_sent is None and (not self._want or self._kick):
            run.proc.terminate()
            run.term_sent = now
        elif run.term_sent is not None and now - run.term_sent > _TERM_GRACE:
            run.proc.kill()
        elif run.term_sent is not None and not run.term_repeated:
            # ffmpeg's first signal only asks its main loop to finish; a relay whose input is
            # quiet (the publisher left) sits in a blocking read until the second one
            # interrupts it. Then it still writes the end of the stream: the platform gets a
            # clean unpublish at once instead of a silent connection and a SIGKILL.
            run.proc.terminate()
            run.term_repeated = True
        elif run.stalled is None and quiet_for > self._cfg.stall_timeout:
            # Nothing to flush on a stalled relay: no point asking nicely.
            run.stalled = f"stalled: no data for {quiet_for:.0f}s, killed"
            run.proc.kill()
        frozen_for = now - (self._last_picture or run.started)
        if self._state is RelayState.LIVE and frozen_for > self._cfg.live_window:
            self._set_state(RelayState.RECONNECTING)
        if self._live_since is not None and now - self._live_since >= self._cfg.healthy_reset:
            self._backoff = self._cfg.backoff_initial

    def _on_progress(self, progress: Progress, now: float) -> None:
        previous, self._reported = self._reported, progress
        self._samples.append((now, progress.total_size, progress.frame))
        if progress.total_size > self._bytes_now:
            self._bytes_now = progress.total_size
            self._last_advance = now
            # Live is what a viewer sees: bytes arriving and, in them, video frames with
            # timestamps moving on (not audio alone, not a picture frozen on one timestamp).
            if previous is not None and _picture_moved(previous, progress):
                self._last_picture = now
                if self._state is not RelayState.LIVE:
                    self._set_state(RelayState.LIVE)
                    self._went_live = True
                    self._failures = 0
                    self._last_error = None  # recovered: the old error is history (the log)


def _picture_moved(before: Progress, after: Progress) -> bool:
    return (
        after.frame is not None
        and before.frame is not None
        and after.frame > before.frame
        and after.out_time_us is not None
        and before.out_time_us is not None
        and after.out_time_us > before.out_time_us
    )


class Supervisor:
    """The relays of this node, each kept running (or stopped) as ordered.

    ``on_change`` is called with the relay's snapshot whenever its state changes, from the
    relay's own thread and with no lock held; it may be called from several relays' threads at
    once. Every method is thread-safe and returns without waiting for processes, except
    :meth:`shutdown`.
    """

    def __init__(
        self,
        *,
        ffmpeg: str = "ffmpeg",
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        healthy_reset: float = 60.0,
        live_window: float = 4.0,
        stall_timeout: float = 15.0,
        failed_after: int = 5,
        on_change: OnChange | None = None,
    ) -> None:
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        if failed_after < 1:
            raise ValueError("failed_after must be at least 1")
        self._settings = _Settings(
            ffmpeg=ffmpeg,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            healthy_reset=healthy_reset,
            live_window=live_window,
            stall_timeout=stall_timeout,
            failed_after=failed_after,
            on_change=on_change,
        )
        self._lock = threading.Lock()
        self._relays: dict[str, _Relay] = {}
        self._removed: list[_Relay] = []  # may still be stopping; shutdown() waits for them too
        self._closed = False

    def add(self, spec: RelaySpec) -> None:
        """Register a relay and start it. ValueError if the id is taken."""
        with self._lock:
            self._add(spec)

    def update(self, spec: RelaySpec) -> None:
        """Give a known relay a new spec; restarts it only if the spec differs and it runs.

        KeyError if the relay is unknown.
        """
        self._get(spec.relay_id, opening=True).set_spec(spec)

    def start(self, relay_id: str) -> None:
        self._get(relay_id, opening=True).start()

    def stop(self, relay_id: str) -> None:
        """Order the relay stopped; it stays registered and ends up STOPPED."""
        self._get(relay_id).stop()

    def restart(self, relay_id: str) -> None:
        """Start the relay afresh now (no backoff; does not count in ``restarts``)."""
        self._get(relay_id, opening=True).restart()

    def remove(self, relay_id: str) -> None:
        """Stop the relay and forget it."""
        with self._lock:
            self._remove(relay_id)

    def get_state(self, relay_id: str) -> RelaySnapshot:
        return self._get(relay_id).snapshot()

    def states(self) -> list[RelaySnapshot]:
        with self._lock:
            relays = list(self._relays.values())
        return [relay.snapshot() for relay in relays]

    def specs(self) -> dict[str, RelaySpec]:
        with self._lock:
            return {relay_id: relay.spec for relay_id, relay in self._relays.items()}

    def reconcile(
        self, desired: Iterable[RelaySpec], *, scope: Callable[[str], bool] | None = None
    ) -> None:
        """Make the relays match ``desired``: add, update (and start) or remove.

        Only relays for which ``scope(relay_id)`` holds are removed when not desired, so one
        stream's relays can be reconciled without touching another's.
        """
        wanted: dict[str, RelaySpec] = {}
        for spec in desired:
            if spec.relay_id in wanted:
                raise ValueError(f"relay id {spec.relay_id!r} given twice")
            wanted[spec.relay_id] = spec
        with self._lock:
            for relay_id in list(self._relays):
                if relay_id not in wanted and (scope is None or scope(relay_id)):
                    self._remove(relay_id)
            for relay_id, spec in wanted.items():
                relay = self._relays.get(relay_id)
                if relay is None:
                    self._add(spec)
                else:
                    relay.set_spec(spec)
                    relay.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every relay and wait for its process: SIGTERM, then SIGKILL at ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
            relays = [*self._relays.values(), *self._removed]
            self._removed.clear()
        for relay in relays:
            relay.stop()
        for relay in relays:
            if not relay.join(max(0.0, deadline - time.monotonic())):
                relay.kill()
                relay.join(2.0)

    def _get(self, relay_id: str, *, opening: bool = False) -> _Relay:
        with self._lock:
            if opening and self._closed:
                raise RuntimeError("supervisor is shut down")
            return self._relays[relay_id]

    def _add(self, spec: RelaySpec) -> None:
        if self._closed:
            raise RuntimeError("supervisor is shut down")
        if spec.relay_id in self._relays:
            raise ValueError(f"relay {spec.relay_id!r} already exists")
        relay = _Relay(spec, self._settings)
        self._relays[spec.relay_id] = relay
        relay.start()

    def _remove(self, relay_id: str) -> None:
        relay = self._relays.pop(relay_id)
        relay.stop()
        self._removed = [r for r in self._removed if not r.join(0)]
        self._removed.append(relay)
