"""The agent's own HTTP listener: the control plane's nudges, snapshots and recording files.

Every route but /healthz takes the agent secret (agents.node.protocol.agent_secret) as a
bearer token; answers use the rig envelope.
"""

from __future__ import annotations

import hmac
import json
import os
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from agents.node.protocol import agent_secret
from agents.node.recorder import recording_path

if TYPE_CHECKING:
    from agents.node.agent import Agent


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


_FORM_BYTES = 16384  # nginx's hook form: its fields and the publisher's own args


def make_handler(agent: Agent) -> type[BaseHTTPRequestHandler]:
    secret = agent_secret(agent.config.token)

    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # seconds a client may take to send its request: none holds a thread

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            try:
                length = max(0, min(int(self.headers.get("Content-Length") or 0), _FORM_BYTES))
            except ValueError:
                length = 0
            if self.path == "/hooks/publish":
                if not self._from_this_host():
                    return self._answer(404, {"message": "Not found", "errorCode": 1000})
                return self._publish_hook(self.rfile.read(length))
            self.rfile.read(length)
            if self.path.rstrip("/") != "/reconcile":
                return self._answer(404, {"message": "Not found", "errorCode": 1000})
            if not self._authorized():
                return self._answer(401, {"message": "Invalid credentials", "errorCode": 1003})
            agent.nudge()
            return self._answer(202, {"message": "Reconciling", "payload": None})

        def _from_this_host(self) -> bool:
            """Only the node's own nginx calls the hook: from loopback, or from the address
            the agent listens on (its own)."""
            bound = self.server.server_address  # the listening socket's own address
            own = ("127.0.0.1", "::1", str(bound[0] if isinstance(bound, tuple) else bound))
            return str(self.client_address[0]) in own

        def _publish_hook(self, form: bytes) -> None:
            """nginx's on_publish (Agent.admit_publish): a bare status, as nginx-rtmp reads
            nothing else."""
            self.send_response(agent.admit_publish(form))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None

        def _authorized(self) -> bool:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
            return hmac.compare_digest(given.encode(), secret.encode())

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
            if key not in agent.live_keys():
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
