"""The node agent: makes this node's relays match the control plane's desired state.

Reconciles at start, whenever a worker nudges it (POST /reconcile), and on a short poll as a
safety net; reports relay state back; drops publishers whose key is no longer live here.
"""

import contextlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agents.node import ingest
from agents.node.client import ControlPlane, ControlPlaneError
from agents.node.protocol import LAST_ERROR_CHARS, agent_secret, attach_new_log
from agents.node.recorder import Recorders, recording_path
from agents.node.relay import RelaySnapshot, RelaySpec
from agents.node.snapshots import Snapshots
from agents.node.supervisor import Supervisor

logger = logging.getLogger("rig.agent")


def node_env(name: str, default: str) -> str:
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        return Path(file_path).read_text().strip()
    return os.environ.get(name, default)


@dataclass(frozen=True)
class AgentConfig:
    control_url: str
    token: str
    rtmp_port: int = 1935
    stat_url: str = "http://127.0.0.1:8089"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8091
    poll_interval: float = 5.0
    report_interval: float = 2.0
    watch_interval: float = 0.5
    ffmpeg: str = "ffmpeg"
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    private_ok: bool = False  # relays may reach loopback and private networks (dev, tests)
    recordings_dir: Path = Path(".run/recordings")

    @classmethod
    def from_env(cls) -> "AgentConfig":
        host, _, port = node_env("RIG_AGENT_LISTEN", "127.0.0.1:8091").rpartition(":")
        return cls(
            control_url=node_env("RIG_CONTROL_URL", "http://127.0.0.1:8000"),
            token=node_env("RIG_NODE_TOKEN", ""),
            rtmp_port=int(node_env("RIG_RTMP_PORT", "1935")),
            stat_url=f"http://127.0.0.1:{int(node_env('RIG_NGINX_HTTP_PORT', '8089'))}",
            listen_host=host or "127.0.0.1",
            listen_port=int(port),
            poll_interval=float(node_env("RIG_AGENT_POLL_S", "5")),
            report_interval=float(node_env("RIG_AGENT_REPORT_S", "2")),
            watch_interval=float(node_env("RIG_AGENT_WATCH_S", "0.5")),
            ffmpeg=node_env("RIG_FFMPEG", "ffmpeg"),
            backoff_initial=float(node_env("RIG_RELAY_BACKOFF_INITIAL_S", "1")),
            backoff_max=float(node_env("RIG_RELAY_BACKOFF_MAX_S", "30")),
            private_ok=node_env("RIG_ALLOW_PRIVATE_DESTINATIONS", "0").lower() in ("1", "true"),
            recordings_dir=Path(node_env("RIG_RECORDINGS_DIR", ".run/recordings")),
        )


def desired_relays(
    streams: list[dict[str, Any]],
    publishers: dict[str, str],
    *,
    seen: set[tuple[str, str]],
    rtmp_port: int,
) -> tuple[list[RelaySpec], dict[str, str]]:
    """The relays this node should run, and {stream id: key} of the streams they serve.

    A relay is bound to the publish session it serves (``clientId``, nginx's id of the
    admitted publisher), which is part of its spec: a new session restarts it, at the new
    session's first keyframe, instead of letting it forward the new timestamps into the old
    connection (the platform would see a frozen picture). It runs while that publisher is
    nginx's publisher of the key, and before nginx lists it (``seen`` holds the sessions it
    has listed), so it is connected and waiting when the first keyframe comes; never once
    the publisher has gone, or while another one publishes the key."""
    specs: list[RelaySpec] = []
    keys: dict[str, str] = {}
    for stream in streams:
        key, session = stream["streamKey"], str(stream.get("clientId", ""))
        current = publishers.get(key)
        if current is None and (key, session) in seen:
            continue  # its publisher has gone: the session is over, whatever the hooks say
        if current is not None and session not in ("", current):
            continue  # another publisher: not the session the control plane admitted
        keys[stream["streamID"]] = key
        specs.extend(
            RelaySpec(
                relay_id=f"{stream['streamID']}:{destination['id']}",
                stream_id=stream["streamID"],
                destination_id=int(destination["id"]),
                source_url=ingest.local_stream_url(rtmp_port, key),
                target_url=destination["rtmpUrl"],
                mute=bool(destination.get("isMuted", False)),
                generation=int(destination.get("restartSeq", 0)),
                session=session,
                transcode=_profile(destination.get("transcode")),
            )
            for destination in stream["destinations"]
            if destination.get("isActive")
        )
    return specs, keys


def _profile(transcode: dict[str, Any] | None) -> tuple[int, int, int, int] | None:
    if not transcode:
        return None
    return (
        int(transcode["height"]),
        int(transcode["fps"]),
        int(transcode["videoBitrateKbps"]),
        int(transcode["audioBitrateKbps"]),
    )


def desired_pulls(pulls: list[dict[str, Any]], *, rtmp_port: int) -> list[RelaySpec]:
    """The pulls this node should run: each plays the stream's remote URL and publishes it
    into this node's ingest under the stream's key, with the token that tells the control
    plane's publish hook it is the stream's own pull and not a pushed publisher."""
    return [
        RelaySpec(
            relay_id=f"pull:{pull['streamID']}",
            stream_id=pull["streamID"],
            source_url=pull["url"],
            target_url=ingest.pull_publish_url(rtmp_port, pull["streamKey"], pull["token"]),
            generation=int(pull.get("restartSeq", 0)),
            pull=True,
        )
        for pull in pulls
    ]


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) bytes a Range header asks of a file of ``size`` bytes: the whole file
    without one; None when it cannot be served (one range only: `bytes=a-b`, `a-`, `-n`)."""
    if header is None:
        return (0, size - 1) if size else (0, -1)
    unit, _, spec = header.partition("=")
    first_text, dash, last_text = spec.strip().partition("-")
    if unit.strip() != "bytes" or not dash or "," in spec:
        return None
    try:
        if first_text == "":  # the last n bytes
            n = int(last_text)
            first, last = max(size - n, 0), size - 1
        else:
            first = int(first_text)
            last = min(int(last_text), size - 1) if last_text else size - 1
    except ValueError:
        return None
    if first < 0 or first > last or first >= size:
        return None
    return first, last


def publishers_to_drop(streams: list[dict[str, Any]], publishers: dict[str, str]) -> list[str]:
    """Keys whose publisher on this node is not a live session's: revoked, ended, or replaced
    by a newer session (which can only connect once this one is gone)."""
    admitted = {stream["streamKey"]: str(stream.get("clientId", "")) for stream in streams}
    return sorted(
        key
        for key, client in publishers.items()
        if key not in admitted or admitted[key] not in ("", client)
    )


class Agent:
    def __init__(self, config: AgentConfig, control: ControlPlane | None = None) -> None:
        self.config = config
        self.control = control or ControlPlane(config.control_url, config.token)
        self.supervisor = Supervisor(
            ffmpeg=config.ffmpeg,
            backoff_initial=config.backoff_initial,
            backoff_max=config.backoff_max,
            on_change=self._relay_changed,
            private_ok=config.private_ok,
        )
        self.snapshots = Snapshots(ffmpeg=config.ffmpeg, rtmp_port=config.rtmp_port)
        self.recorders = Recorders(
            directory=config.recordings_dir, ffmpeg=config.ffmpeg, rtmp_port=config.rtmp_port
        )
        self._keys: dict[str, str] = {}  # stream id -> stream key, from the last reconcile
        self._pull_keys: dict[str, str] = {}  # the same, for the streams this node pulls
        self._served: dict[str, str] = {}  # nginx's publishers the last reconcile acted on
        self._seen: set[tuple[str, str]] = set()  # (key, client id) nginx has listed
        self._log_sent: dict[str, int] = {}  # relay id -> its log lines the control plane has
        self._wake = threading.Event()
        self._report_now = threading.Event()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # --- reconciliation ---------------------------------------------------------------------

    def nudge(self) -> None:
        self._wake.set()

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
        specs, self._keys = desired_relays(
            streams, publishers, seen=self._seen, rtmp_port=self.config.rtmp_port
        )
        self._served = publishers
        self._pull_keys = {pull["streamID"]: pull["streamKey"] for pull in pulls}
        self.supervisor.reconcile([*specs, *desired_pulls(pulls, rtmp_port=self.config.rtmp_port)])
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
            try:
                self.reconcile()
            except ControlPlaneError as error:
                # Keep what runs: a control-plane blip must not take streams down.
                logger.warning("reconcile skipped: %s", error)
            except Exception:  # never let the loop die: the next poll tries again
                logger.exception("reconcile failed")
            self._wake.wait(self.config.poll_interval)

    # --- reporting --------------------------------------------------------------------------

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
        for snapshot in self.supervisor.states():
            stream_id = snapshot.stream_id
            relay = snapshot.as_dict()
            entry: dict[str, Any]
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

    # --- nudge listener ---------------------------------------------------------------------

    def _nudge_secret(self) -> str:
        return agent_secret(self.config.token)

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 4096))
                if self.path.rstrip("/") != "/reconcile":
                    return self._answer(404, {"message": "Not found", "errorCode": 1000})
                if not self._authorized():
                    return self._answer(401, {"message": "Invalid credentials", "errorCode": 1003})
                agent.nudge()
                return self._answer(202, {"message": "Reconciling", "payload": None})

            def _authorized(self) -> bool:
                given = self.headers.get("Authorization", "").removeprefix("Bearer ")
                return hmac.compare_digest(given.encode(), agent._nudge_secret().encode())

            def do_DELETE(self) -> None:
                """The control plane deletes a recording's file (retention, or its user)."""
                if not self._authorized():
                    return self._answer(401, {"message": "Invalid credentials", "errorCode": 1003})
                recording_id = self.path.removeprefix("/recordings/")
                if recording_path(agent.recorders.directory, recording_id) is None:
                    return self._answer(404, {"message": "Not found", "errorCode": 1000})
                if not agent.recorders.delete(recording_id):
                    return self._answer(409, {"message": "Still recording", "errorCode": 1013})
                return self._answer(200, {"message": "Recording deleted", "payload": None})

            def do_GET(self) -> None:
                if self.path.startswith("/snapshot/"):
                    return self._snapshot(self.path.removeprefix("/snapshot/"))
                if self.path.startswith("/recordings/"):
                    return self._recording(self.path.removeprefix("/recordings/"))
                if self.path.rstrip("/") != "/healthz":
                    return self._answer(404, {"message": "Not found", "errorCode": 1000})
                relays = len(agent.supervisor.states())
                return self._answer(200, {"message": "OK", "payload": {"relays": relays}})

            def _snapshot(self, key: str) -> None:
                """The control plane asks for the picture of a stream live here."""
                if not self._authorized():
                    return self._answer(401, {"message": "Invalid credentials", "errorCode": 1003})
                if key not in set(agent._keys.values()):
                    return self._answer(404, {"message": "Not found", "errorCode": 1000})
                jpeg = agent.snapshots.get(key)
                if jpeg is None:
                    return self._answer(504, {"message": "No picture", "errorCode": 1012})
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(jpeg)))
                self.end_headers()
                self.wfile.write(jpeg)
                return None

            def _recording(self, recording_id: str) -> None:
                """A recording's file for the control plane, whole or one byte range."""
                if not self._authorized():
                    return self._answer(401, {"message": "Invalid credentials", "errorCode": 1003})
                path = recording_path(agent.recorders.directory, recording_id)
                if path is None or not path.is_file():
                    return self._answer(404, {"message": "Not found", "errorCode": 1000})
                with path.open("rb") as file:
                    size = os.fstat(file.fileno()).st_size
                    wanted = byte_range(self.headers.get("Range"), size)
                    if wanted is None:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return None
                    first, last = wanted
                    partial = self.headers.get("Range") is not None
                    self.send_response(206 if partial else 200)
                    self.send_header("Content-Type", "video/mp4")
                    self.send_header("Accept-Ranges", "bytes")
                    self.send_header("Content-Length", str(last - first + 1))
                    if partial:
                        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                    self.end_headers()
                    file.seek(first)
                    left = last - first + 1
                    while left > 0 and (chunk := file.read(min(left, 256 * 1024))):
                        self.wfile.write(chunk)
                        left -= len(chunk)
                return None

            def log_message(self, format: str, *args: Any) -> None:
                return  # request lines are noise here; nothing secret is in them anyway

        return Handler

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        handler = self._make_handler()
        self._server = ThreadingHTTPServer(
            (self.config.listen_host, self.config.listen_port), handler
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
