"""Runs and supervises the relays of one ingest node: one ffmpeg process per destination, or,
with ``fanout``, one leg per RTMP(S) destination of its stream's fan-out (agents.node.legs).

Each relay is an object with its spec, an order (run or stop) and an observable state, in the
manner of datarhei Core's restream package. Its lifecycle runs in its own long-lived thread,
which runs one ffmpeg attempt after another (:class:`agents.node.process.Attempt`: spawn,
read, stop, outcome), turns what each reports into the relay's state and figures, and on exit
or stall retries with exponential backoff. Callers (the agent's poll loop, its HTTP nudge
handler) only give orders and read snapshots, from any thread. The thread that spawns an
attempt lives until it is reaped, so no ffmpeg outlives the agent (see agents.node.process).

Standard library only: it runs on nodes that have no Django.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from agents.node.legs import FanoutProcesses, fans_out
from agents.node.lifecycle import OnChange, RelayRunner, RunnerSettings
from agents.node.relay import RelaySnapshot, RelaySpec

__all__ = ["Supervisor"]


class Supervisor:
    """The relays of this node, each kept running (or stopped) as ordered.

    ``on_change`` is called with the relay's snapshot whenever its state changes, from the
    relay's own thread and with no lock held; it may be called from several relays' threads at
    once. Every method is thread-safe and returns without waiting for processes, except
    :meth:`shutdown`, and :meth:`reconcile` when a stream's new session replaces the fan-out of
    its last one (up to a second each; see agents.node.legs).
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
        failed_after: int = 8,
        on_change: OnChange | None = None,
        private_ok: bool = False,
        fanout: bool = False,
    ) -> None:
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        if failed_after < 1:
            raise ValueError("failed_after must be at least 1")
        self._settings = RunnerSettings(
            ffmpeg=ffmpeg,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            healthy_reset=healthy_reset,
            live_window=live_window,
            stall_timeout=stall_timeout,
            failed_after=failed_after,
            on_change=on_change,
            private_ok=private_ok,
            fanouts=FanoutProcesses(silent_s=stall_timeout) if fanout else None,
        )
        self._lock = threading.Lock()
        self._relays: dict[str, RelayRunner] = {}
        self._removed: list[
            RelayRunner
        ] = []  # may still be stopping; shutdown() waits for them too
        self._closed = False

    def states(self) -> list[RelaySnapshot]:
        with self._lock:
            relays = list(self._relays.values())
        return [relay.snapshot() for relay in relays]

    def players(self, source_url: str) -> int:
        """How many players nginx lists on ``source_url`` once its relays run: one per ffmpeg
        relay, one for all the legs of the stream's fan-out (the agent's publish hook waits
        for them before it admits the publisher)."""
        with self._lock:
            specs = [r.spec for r in self._relays.values() if r.spec.source_url == source_url]
        shared = self._settings.fanouts is not None
        return len({"fan-out" if shared and fans_out(spec) else spec.relay_id for spec in specs})

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
        if self._settings.fanouts is not None:  # the lock not held: it waits for processes
            self._settings.fanouts.retire(
                {(s.source_url, s.session) for s in wanted.values() if fans_out(s)}
            )

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
        if self._settings.fanouts is not None:
            self._settings.fanouts.shutdown(max(0.0, deadline - time.monotonic()))

    def _add(self, spec: RelaySpec) -> None:
        if self._closed:
            raise RuntimeError("supervisor is shut down")
        if spec.relay_id in self._relays:
            raise ValueError(f"relay {spec.relay_id!r} already exists")
        relay = RelayRunner(spec, self._settings)
        self._relays[spec.relay_id] = relay
        relay.start()

    def _remove(self, relay_id: str) -> None:
        relay = self._relays.pop(relay_id)
        relay.stop()
        self._removed = [r for r in self._removed if not r.join(0)]
        self._removed.append(relay)
