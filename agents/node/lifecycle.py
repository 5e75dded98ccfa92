"""One relay's lifecycle: the order it was given (run, stop, restart, a new spec), one ffmpeg
attempt after another (:class:`agents.node.process.Attempt`), backoff between them, and the
state and figures it shows. :class:`agents.node.supervisor.Supervisor` holds a node's relays.

Standard library only: it runs on nodes that have no Django.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agents.node.addresses import private_now
from agents.node.legs import FanoutProcesses, LegAttempt, fans_out
from agents.node.process import Attempt, answers, probe_address, target_address
from agents.node.protocol import LOG_LINES_KEPT
from agents.node.relay import (
    Progress,
    RelaySnapshot,
    RelaySpec,
    RelayState,
    build_relay_command,
    redact,
    relay_secrets,
)

__all__ = ["OnChange", "RelayRunner", "RunnerSettings"]

logger = logging.getLogger(__name__)

# Progress reports that bitrate/fps are measured over: ffmpeg's come twice a second, a leg's once.
_RATE_WINDOW = 5
_CATCH_UP_S = 2.5  # after going live, a connection may still be catching up on the ingest's GOP
_JITTER = 0.2
_REFUSED = "now resolves to a private address: not connecting"
_NOT_READING = "destination stopped reading: it made no room for {:.0f}s"

OnChange = Callable[[RelaySnapshot], None]


@dataclass(frozen=True)
class RunnerSettings:
    ffmpeg: str
    backoff_initial: float
    backoff_max: float
    healthy_reset: float
    live_window: float
    stall_timeout: float
    failed_after: int
    on_change: OnChange | None
    private_ok: bool  # destinations on loopback and private networks may be reached
    # The node's fan-out processes: a relay that can be a leg of its stream's fan-out
    # (agents.node.legs.fans_out) is one; None: every relay is its own ffmpeg.
    fanouts: FanoutProcesses | None = None


class RelayRunner:
    """One relay: its spec, the order it was given and what it is doing about it.

    Every field below is guarded by ``_cond``. State changes happen only in the relay's own
    thread; orders from other threads set ``_want``/``_fresh``/``_kick`` and wake it.
    """

    def __init__(self, spec: RelaySpec, settings: RunnerSettings) -> None:
        self._cfg = settings
        self._cond = threading.Condition()
        self._notify_lock = threading.Lock()
        self._delivered: tuple[RelayState, float] | None = None
        self.spec = spec
        self._want = False  # ordered to run
        self._fresh = False  # next attempt is a new start: counters and backoff reset
        self._kick = False  # end the current attempt or backoff wait now
        self._thread: threading.Thread | None = None
        self._attempt_now: Attempt | LegAttempt | None = None
        self._state = RelayState.STOPPED
        self._since = time.time()
        self._live_since: float | None = None  # monotonic; set while LIVE
        self._last_advance: float | None = None  # monotonic; bytes last grew in this attempt
        self._last_picture: float | None = None  # monotonic; video last moved on, ditto
        self._went_live = False  # in this attempt
        self._not_reading = 0.0  # seconds the destination has taken bytes without reading
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
            self._wake()

    def restart(self) -> None:
        with self._cond:
            if self._want:
                self._fresh = self._kick = True
                self._wake()
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
                self._wake()
            return True

    def _wake(self) -> None:
        """An order: the relay's thread sees it now, waiting out a backoff or reading its
        attempt (with the lock held)."""
        self._cond.notify_all()
        if self._attempt_now is not None:
            self._attempt_now.wake()

    def join(self, timeout: float) -> bool:
        with self._cond:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def kill(self) -> None:
        with self._cond:
            if self._attempt_now is not None:
                self._attempt_now.kill()

    # --- observation ------------------------------------------------------------------------

    def snapshot(self) -> RelaySnapshot:
        with self._cond:
            live = self._state is RelayState.LIVE
            bitrate, fps = self._rates() if live else (None, None)
            return RelaySnapshot(
                relay_id=self.spec.relay_id,
                stream_id=self.spec.stream_id,
                destination_id=self.spec.destination_id,
                state=self._state,
                bitrate_kbps=bitrate,
                fps=fps,
                bytes_sent=self._bytes_done + self._bytes_now,
                restarts=self._restarts,
                since=self._since,
                last_error=self._last_error,
                log=tuple(self._log),
                log_total=self._log_total,
                pid=self._attempt_now.pid if self._attempt_now is not None else None,
            )

    def _rates(self) -> tuple[float | None, float | None]:
        """Bitrate and fps over the last few progress reports (ffmpeg's own figures are
        averages since the process started, which hide a drop after hours). Not in the first
        seconds of a connection: the relay then catches up on the ingest's buffered GOP, and
        a rate measured over that burst (twice the real fps) is no news to anyone."""
        settled = (self._live_since or 0.0) + _CATCH_UP_S
        samples = [sample for sample in self._samples if sample[0] >= settled]
        if len(samples) < 2 or samples[-1][0] - samples[0][0] < 0.5:
            return None, None
        (t0, b0, f0), (t1, b1, f1) = samples[0], samples[-1]
        kbps = round((b1 - b0) * 8 / 1000 / (t1 - t0), 1)
        fps = round((f1 - f0) / (t1 - t0), 2) if f0 is not None and f1 is not None else None
        return kbps, fps

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
        """After a failed attempt: retry after the backoff (RECONNECTING), or give up (FAILED)
        once ``failed_after`` attempts in a row never went live (unless its spec retries for
        ever). A relay given up on waits for an order (restart, a new spec: a changed
        destination, a new session) or for an unreachable destination to answer again; it no
        longer knocks on a platform that keeps refusing the stream, nor on an address it may
        not reach."""
        refused = failure.endswith(_REFUSED)
        # Asked before the failure is told: a destination that answers after that was down.
        address = self._probe_address() if not refused else None
        was_down = address is not None and not answers(address)
        with self._cond:
            if not self._want or self._kick:
                return  # ordered away while it was failing: the order wins, no backoff
            if not self._went_live:
                self._failures += 1
            self._last_error = failure
            if self.spec.gives_up and self._failures >= self._cfg.failed_after:
                self._set_state(RelayState.FAILED)
                self._event(
                    f"{failure}; gave up after {self._failures} attempts in a row: "
                    + ("waiting for an order" if refused else "retrying when it answers again")
                )
                delay = None
            else:
                delay = self._backoff * random.uniform(1 - _JITTER, 1 + _JITTER)  # noqa: S311
                self._backoff = min(self._backoff * 2, self._cfg.backoff_max)
                self._set_state(RelayState.RECONNECTING)
                self._event(f"{failure}; restarting in {delay:.1f}s")
        self._notify()
        self._wait_to_retry(delay, address=address, was_down=was_down)

    def _probe_address(self) -> tuple[str, int] | None:
        """Where to knock to learn the destination is back; never an address the relay may not
        reach (a name that now resolves inward)."""
        address = probe_address(self.spec.remote_url)
        if address is not None and not self._cfg.private_ok and private_now(*address):
            return None
        return address

    def _wait_to_retry(
        self, delay: float | None, *, address: tuple[str, int] | None, was_down: bool
    ) -> None:
        """Wait out the backoff (None: until ordered), but retry as soon as a destination that
        was unreachable (``was_down``) accepts connections at ``address`` again (a TCP connect a
        second), so a platform that comes back is live again within seconds, not after the
        longest backoff."""
        if delay is None and not was_down:
            address = None  # given up on a platform that answers: only an order retries
        deadline = None if delay is None else time.monotonic() + delay
        while True:
            with self._cond:
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                ordered = self._cond.wait_for(
                    lambda: not self._want or self._kick, timeout=max(0.0, min(1.0, remaining))
                )
                if ordered:
                    return
                if deadline is not None and remaining <= 1.0:
                    self._restarts += 1
                    return
            if address is None:
                continue
            reachable = answers(address)
            if reachable and was_down:
                with self._cond:
                    self._event("destination answers again: retrying now")
                    self._restarts += 1
                    self._failures = 0  # back: it gets the whole retry budget again
                    self._set_state(RelayState.RECONNECTING)
                self._notify()
                return
            was_down = was_down or not reachable

    def _attempt(self, spec: RelaySpec) -> str | None:
        """Run ffmpeg once (or connect once as a leg of the stream's fan-out). The failure that
        ended it, or None if an order ended it."""
        secrets = relay_secrets(spec)
        address = target_address(spec.remote_url)
        if not self._cfg.private_ok and address is not None and private_now(*address):
            # Checked when the destination (or pullUrl) was saved; checked again here because
            # its name may resolve inward now (DNS rebinding). No connection is tried.
            where = "source" if spec.pull else "destination"
            return f"{where} {_REFUSED}"
        # ffmpeg's own I/O timeout fires a little before the stall check, for a clearer error.
        rw_timeout = min(10.0, 0.8 * self._cfg.stall_timeout)
        command = build_relay_command(spec, ffmpeg=self._cfg.ffmpeg, rw_timeout_s=rw_timeout)
        with self._cond:
            self._bytes_now = 0
            self._samples.clear()
            self._reported = None
            self._last_advance = self._last_picture = None
            self._went_live = False
            self._not_reading = 0.0
        fanouts = self._cfg.fanouts
        attempt: Attempt | LegAttempt
        try:  # this thread lives until it is reaped
            if fanouts is not None and fans_out(spec):
                attempt = LegAttempt(fanouts, spec, secrets)
            else:
                attempt = Attempt(command, secrets)
        except OSError as error:
            return redact(f"could not start ffmpeg: {error}", secrets)
        started = time.monotonic()
        with self._cond:
            self._attempt_now = attempt
            self._event(attempt.started())
        while (arrived := attempt.read()) is not None:
            progress, log = arrived
            now = time.monotonic()
            not_reading = attempt.not_reading_for(now)
            with self._cond:
                self._not_reading = not_reading
                for block in progress:
                    self._on_progress(block, now)
                self._log.extend(log)
                self._log_total += len(log)
                self._check(attempt, started, now)
            self._notify()
        returncode = attempt.wait()
        with self._cond:
            self._bytes_done += self._bytes_now
            self._bytes_now = 0
            self._samples.clear()
            self._attempt_now = None
            # Once asked to stop, an order ended it, even if a later order wants it running.
            if attempt.stopping or not self._want or self._kick:
                self._event(f"{attempt.ended(returncode)} (ordered)")
                return None
            if self._state is RelayState.LIVE:
                self._set_state(RelayState.RECONNECTING)
            return attempt.outcome(returncode)

    def _check(self, attempt: Attempt | LegAttempt, started: float, now: float) -> None:
        """Carry out orders, catch a stall, keep the state honest. Called every tick."""
        quiet_for = now - (self._last_advance or started)
        if attempt.stopping or not self._want or self._kick:
            attempt.stop(now)
        elif quiet_for > self._cfg.stall_timeout:
            attempt.kill_stalled(f"stalled: no data for {quiet_for:.0f}s, killed")
        elif self._not_reading > self._cfg.stall_timeout:
            attempt.kill_stalled(_NOT_READING.format(self._not_reading) + ", killed")
        frozen_for = now - (self._last_picture or started)
        if self._state is RelayState.LIVE and frozen_for > self._cfg.live_window:
            self._set_state(RelayState.RECONNECTING)
        elif self._state is RelayState.LIVE and self._peer_stuck():
            # Its picture still "moves" into buffers the destination no longer empties.
            self._last_error = _NOT_READING.format(self._not_reading)
            self._event(self._last_error)
            self._set_state(RelayState.RECONNECTING)
        if self._live_since is not None and now - self._live_since >= self._cfg.healthy_reset:
            self._backoff = self._cfg.backoff_initial

    def _peer_stuck(self) -> bool:
        return self._not_reading > self._cfg.live_window

    def _on_progress(self, progress: Progress, now: float) -> None:
        previous, self._reported = self._reported, progress
        self._samples.append((now, progress.total_size, progress.frame))
        if progress.total_size > self._bytes_now:
            self._bytes_now = progress.total_size
            self._last_advance = now
            # Live is what a viewer sees: bytes arriving and, in them, video frames with
            # timestamps moving on (not audio alone, not a picture frozen on one timestamp).
            if previous is not None and progress.picture_moved_since(previous):
                self._last_picture = now
                if self._state is not RelayState.LIVE and not self._peer_stuck():
                    self._set_state(RelayState.LIVE)
                    self._went_live = True
                    self._failures = 0
                    self._last_error = None  # recovered: the old error is history (the log)
