"""The node agent: makes this node's relays match the control plane's desired state.

Reconciles at start, whenever a worker nudges it (POST /reconcile), and on a short poll as a
safety net; reports relay state back; drops publishers whose key is no longer live here.
"""

import contextlib
import logging
import os
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from http.server import ThreadingHTTPServer
from typing import Any

from agents.node import ingest
from agents.node.client import ControlPlane, ControlPlaneError
from agents.node.config import AgentConfig
from agents.node.desired import ENCODER, desired_pulls, desired_relays, publishers_to_drop
from agents.node.http import make_handler
from agents.node.protocol import LAST_ERROR_CHARS, attach_new_log
from agents.node.recorder import Recorders
from agents.node.relay import RelaySnapshot, RelaySpec
from agents.node.snapshots import Snapshots
from agents.node.supervisor import Supervisor

logger = logging.getLogger("rig.agent")

_ADMIT_TIMEOUT_S = 3.0  # asking the control plane, within nginx's 5-s hook timeout
_PRESTART_S = 1.0  # then starting the session's relays, before nginx admits the publisher


def _first(form: bytes, field: str) -> str:
    """The first value of ``field`` in nginx's hook form (the publisher's own args follow,
    unescaped, and may repeat it)."""
    values = urllib.parse.parse_qs(form.decode("utf-8", "replace")).get(field)
    return values[0] if values else ""


def _failing_encoders(snapshots: list[RelaySnapshot], specs: list[RelaySpec]) -> dict[str, str]:
    """{relay id: "encoder: <its error>"} for the destinations fed by a shared encoder that is
    not live and has an error (their own error would only say that no data came)."""
    errors = {
        snap.relay_id: snap.last_error
        for snap in snapshots
        if snap.relay_id.startswith(ENCODER) and snap.state != "live" and snap.last_error
    }
    encoder_at = {spec.target_url: spec.relay_id for spec in specs if spec.relay_id in errors}
    return {
        spec.relay_id: f"encoder: {errors[encoder_at[spec.source_url]]}"
        for spec in specs
        if spec.source_url in encoder_at
    }


class Agent:
    def __init__(self, config: AgentConfig, control: ControlPlane | None = None) -> None:
        self.config = config
        self.control = control or ControlPlane(config.control_url, config.token)
        self.supervisor = Supervisor(
            ffmpeg=config.ffmpeg,
            backoff_initial=config.backoff_initial,
            backoff_max=config.backoff_max,
            failed_after=config.give_up_after,
            on_change=self._relay_changed,
            private_ok=config.private_ok,
            fanout=config.fanout,
        )
        self.snapshots = Snapshots(ffmpeg=config.ffmpeg, rtmp_port=config.rtmp_port)
        self.recorders = Recorders(
            directory=config.recordings_dir, ffmpeg=config.ffmpeg, rtmp_port=config.rtmp_port
        )
        self._keys: dict[str, str] = {}  # stream id -> stream key, from the last reconcile
        self._specs: list[RelaySpec] = []  # the streams' relays, ditto
        self._pull_keys: dict[str, str] = {}  # the same, for the streams this node pulls
        self._served: dict[str, str] = {}  # nginx's publishers the last reconcile acted on
        self._seen: set[tuple[str, str]] = set()  # (key, client id) nginx has listed
        self._log_sent: dict[str, int] = {}  # relay id -> its log lines the control plane has
        self._reconcile_span = (0.0, 0.0)  # (monotonic) when the loop's last reconcile began, ended
        self._wake = threading.Event()
        self._report_now = threading.Event()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # --- reconciliation ---------------------------------------------------------------------

    def nudge(self) -> None:
        self._wake.set()

    def admit_publish(self, form: bytes) -> int:
        """nginx's on_publish, through the agent: the control plane decides; once it has
        admitted the session, its relays (and recording) start at once, as players waiting on
        the name, and only then is nginx told yes. nginx-rtmp keeps no GOP: a relay that joins
        after the publisher waits for its next keyframe (2 s with OBS's usual setting), one
        that is already there gets the stream from its first frame. Both waits are bounded by
        the clock (3 s to ask, 1 s for the relays), within nginx's 5-s hook timeout: a slow
        start only costs that keyframe. nginx gets 200 or a refusal, never a 3xx (that would
        accept the publisher and rename the stream)."""
        admitted = time.monotonic()
        answer: list[int] = []
        asking = threading.Thread(
            target=lambda: answer.append(self.control.admit_publish(form, _ADMIT_TIMEOUT_S)),
            name="admit",
            daemon=True,
        )
        asking.start()
        asking.join(_ADMIT_TIMEOUT_S)  # urllib's timeout bounds each step, not the whole call
        status = answer[0] if answer else 504
        if not 200 <= status < 300:
            return status if status >= 400 else 403
        name = _first(form, "name")
        if name:
            self._await_players(name, after=admitted, deadline=time.monotonic() + _PRESTART_S)
        return 200

    def _await_players(self, name: str, *, after: float, deadline: float) -> None:
        """Have the reconcile loop run now, then wait until the relays it wants on ``name``
        play it (or the deadline)."""
        self.nudge()
        source = ingest.local_stream_url(self.config.rtmp_port, name)
        while time.monotonic() < deadline:
            began, ended = self._reconcile_span
            if began > after and ended >= began:  # a reconcile that knew of the session
                waiting = self.supervisor.players(source)
                with contextlib.suppress(OSError, ET.ParseError):
                    if ingest.players(self.config.stat_url, name) >= waiting:
                        return
            time.sleep(0.02)

    def reconcile(self) -> None:
        # Read nginx first: a key it lists was committed live before it got there, so the
        # control plane's answer (read after) includes it unless it has since been revoked.
        publishers = self._publishers()
        pulls = self.control.pulls()
        streams = self.control.live_streams()
        if set(publishers) - {stream["streamKey"] for stream in streams}:
            # nginx has publishers the control plane does not list: revoked, or sessions it
            # ended while this node was cut off. Report them first (it takes the latter back),
            # then ask again, so a node coming back does not drop streams it may keep.
            self._report(sorted(publishers))
            streams = self.control.live_streams()
        live = {(stream["streamKey"], str(stream.get("clientId", ""))) for stream in streams}
        self._seen = (self._seen & live) | set(publishers.items())
        self._specs, self._keys = desired_relays(
            streams, publishers, seen=self._seen, rtmp_port=self.config.rtmp_port
        )
        self._served = publishers
        self._pull_keys = {pull["streamID"]: pull["streamKey"] for pull in pulls}
        self.supervisor.reconcile(
            [*self._specs, *desired_pulls(pulls, rtmp_port=self.config.rtmp_port)]
        )
        self.snapshots.keep_only(set(self._keys.values()))
        # Record what is live here and asked to be: a new session is a new recording.
        self.recorders.reconcile(
            {
                (stream["streamKey"], str(stream.get("clientId", "")))
                for stream in streams
                if stream.get("record") and stream["streamID"] in self._keys
            }
        )
        for name in publishers_to_drop(streams, publishers):
            logger.info("dropping a publisher whose session is no longer live here")
            try:
                ingest.drop_publisher(self.config.stat_url, name)
            except (OSError, RuntimeError) as error:  # retried on the next reconcile
                logger.warning("could not drop a revoked publisher: %s", error)
        self._report_now.set()

    def _publishers(self) -> dict[str, str]:
        """What nginx receives now: {stream key: client id}. Empty when nginx does not answer:
        a dead ingest receives nothing, and its sessions must end rather than linger."""
        try:
            return {
                key: str(client)
                for key, client in ingest.live_publishers(self.config.stat_url).items()
            }
        except OSError:
            return {}

    def _reconcile_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            began = time.monotonic()
            self._reconcile_span = (began, self._reconcile_span[1])
            try:
                self.reconcile()
            except ControlPlaneError as error:
                # Keep what runs: a control-plane blip must not take streams down.
                logger.warning("reconcile skipped: %s", error)
            except Exception:  # never let the loop die: the next poll tries again
                logger.exception("reconcile failed")
            self._reconcile_span = (began, time.monotonic())
            self._wake.wait(self.config.poll_interval)

    # --- reporting --------------------------------------------------------------------------

    def live_keys(self) -> set[str]:
        """The keys of the streams whose relays run here (the last reconcile's)."""
        return set(self._keys.values())

    def _relay_changed(self, snapshot: RelaySnapshot) -> None:
        self._report_now.set()

    def status_report(self, publishers: list[str] | None = None) -> tuple[dict[str, Any], Any]:
        """The heartbeat: relay figures, nginx's publishers (None: unknown) and the load, with
        the log lines the control plane has not had yet as far as the protocol's budget
        allows; and the log cursor to keep once the control plane took it."""
        by_stream: dict[str, list[dict[str, Any]]] = {}
        pulls: list[dict[str, Any]] = []
        logs: list[tuple[dict[str, Any], tuple[str, ...], str, int]] = []
        keys, pull_keys = self._keys, self._pull_keys
        snapshots = self.supervisor.states()
        failing = _failing_encoders(snapshots, self._specs)
        for snapshot in snapshots:
            stream_id = snapshot.stream_id
            relay = snapshot.as_dict()
            if relay["state"] != "live" and snapshot.relay_id in failing:
                relay["lastError"] = failing[snapshot.relay_id]  # what it waits for
            entry: dict[str, Any]
            if snapshot.relay_id.startswith(ENCODER):
                continue  # not a destination: its trouble shows on the ones it feeds
            if snapshot.relay_id.startswith("pull:"):
                if stream_id not in pull_keys:
                    continue
                entry = {"streamKey": pull_keys[stream_id]}
                pulls.append(entry)
            elif stream_id in keys:
                entry = {"destinationId": snapshot.destination_id}
                by_stream.setdefault(stream_id, []).append(entry)
            else:
                continue
            entry |= {
                "state": relay["state"],
                "bitrateKbps": relay["bitrateKbps"],
                "fps": relay["fps"],
                "bytesSent": relay["bytesSent"],
                "restarts": relay["restarts"],
                "since": relay["since"],
                "lastError": relay["lastError"] and relay["lastError"][:LAST_ERROR_CHARS],
            }
            sent = self._log_sent.get(snapshot.relay_id, 0)
            if sent > snapshot.log_total:  # a new relay under an old id
                sent = 0
            fresh = min(snapshot.log_total - sent, len(snapshot.log))
            first = len(snapshot.log) - fresh
            logs.append(
                (entry, snapshot.log[first:], snapshot.relay_id, snapshot.log_total - fresh)
            )
        body: dict[str, Any] = {
            "streams": [
                {"streamKey": keys[stream_id], "relays": relays}
                for stream_id, relays in by_stream.items()
            ],
            "pulls": pulls,
            "recordings": self.recorders.reports(),
            "load": self.load(),
        }
        if publishers is not None:
            body["publishers"] = publishers
        taken = attach_new_log(body, [(entry, lines) for entry, lines, _, _ in logs])
        cursor = {
            relay_id: start + n for (_, _, relay_id, start), n in zip(logs, taken, strict=True)
        }
        return body, cursor

    def _report(self, publishers: list[str] | None) -> None:
        body, cursor = self.status_report(publishers)
        self.control.report(body)
        self._log_sent = cursor
        self.recorders.taken(body["recordings"])

    def load(self) -> dict[str, Any]:
        """The heartbeat's load figures: relays this node runs, and the 1-minute load average."""
        return {"relays": len(self.supervisor.states()), "loadAvg1": round(os.getloadavg()[0], 2)}

    def _report_loop(self) -> None:
        while not self._stopping.is_set():
            self._report_now.wait(self.config.report_interval)
            time.sleep(0.2)  # coalesce a burst of state changes into one report
            self._report_now.clear()
            try:
                self._report(sorted(self._publishers()))
            except ControlPlaneError as error:
                logger.warning("status report failed: %s", error)
            except Exception:  # never let the loop die: the next period tries again
                logger.exception("status report failed")

    def _watch_loop(self) -> None:
        """A publisher that comes, goes or is replaced (a new client id: a new session) makes
        the relays follow at once, without waiting for a nudge or the poll."""
        while not self._stopping.wait(self.config.watch_interval):
            if self._publishers() != self._served:
                self.nudge()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._server = ThreadingHTTPServer(
            (self.config.listen_host, self.config.listen_port), make_handler(self)
        )
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="nudge", daemon=True),
            threading.Thread(target=self._reconcile_loop, name="reconcile", daemon=True),
            threading.Thread(target=self._report_loop, name="report", daemon=True),
            threading.Thread(target=self._watch_loop, name="watch", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        logger.info(
            "agent up: control %s, nudges on %s:%s",
            self.config.control_url,
            self.config.listen_host,
            self.config.listen_port,
        )

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._report_now.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        self.supervisor.shutdown()
        self.recorders.shutdown()
        with contextlib.suppress(ControlPlaneError):
            self._report(None)
