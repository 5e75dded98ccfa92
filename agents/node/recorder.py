"""Recordings of the streams live on this node (WCS's recorder): one ffmpeg per recorded stream
plays it from the local ingest, like one more viewer, and writes fragmented MP4
(``<dir>/<recording id>.mp4``), playable while it grows. The relays never notice it.

A recording lasts as long as its publish session and the control plane's ``record`` flag; a
new session starts a new recording. If ffmpeg fails, a new recording starts after a pause,
except when the disk is full: then the session's recording stays ``failed`` with the reason,
and restreaming goes on untouched. Finished recordings are reported until the control plane
has taken a report with them; the files stay until it asks for their deletion.

Standard library only: it runs on nodes that have no Django.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.node import ingest
from agents.node.process import Attempt, exit_text

__all__ = ["RECORDING_ID", "Recorders", "recording_path"]

RECORDING_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
RETRY_S = 5.0  # after a failure that is not a full disk, a new recording after this pause
_DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded", re.IGNORECASE)


def recording_path(directory: Path, recording_id: str) -> Path | None:
    """Where a recording's file is, or None for anything that is not a recording id."""
    if not RECORDING_ID.fullmatch(recording_id):
        return None
    return directory / f"{recording_id}.mp4"


def record_command(ffmpeg: str, source: str, path: Path) -> list[str]:
    """Copy the stream into fragmented MP4: a fragment per keyframe, the header first, so the
    file plays while it grows and holds everything up to the last fragment if ffmpeg dies."""
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+warning",
        "-rw_timeout", "10000000", "-i", source,
        "-map", "0:v?", "-map", "0:a?", "-c", "copy",
        "-f", "mp4", "-movflags", "+frag_keyframe+empty_moov+default_base_moof",
        "-progress", "pipe:1", "-stats_period", "1", str(path),
    ]  # fmt: skip


@dataclass
class Recording:
    id: str
    stream_key: str
    path: Path
    started: float  # epoch seconds
    ended: float | None = None
    duration_s: float = 0.0
    state: str = "recording"  # recording, done, failed
    error: str = ""

    def as_report(self) -> dict[str, Any]:
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        return {
            "id": self.id,
            "streamKey": self.stream_key,
            "startedAt": self.started,
            "endedAt": self.ended,
            "durationS": round(self.duration_s, 2),
            "bytes": size,
            "state": self.state,
            "error": self.error or None,
        }


@dataclass
class _Wanted:
    stream_key: str
    session: str
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class Recorders:
    """The node's recorders, keyed by (stream key, session): :meth:`reconcile` starts and stops
    them, :meth:`reports` says what they recorded."""

    def __init__(self, *, directory: Path, ffmpeg: str, rtmp_port: int) -> None:
        self.directory = directory
        self._ffmpeg = ffmpeg
        self._rtmp_port = rtmp_port
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], _Wanted] = {}
        self._recordings: dict[str, Recording] = {}

    def reconcile(self, wanted: set[tuple[str, str]]) -> None:
        """Record exactly the (stream key, session) pairs in ``wanted``."""
        with self._lock:
            for pair in [pair for pair in self._running if pair not in wanted]:
                self._running.pop(pair).stop.set()
            for key, session in wanted - set(self._running):
                job = _Wanted(key, session)
                job.thread = threading.Thread(
                    target=self._run, args=(job,), name=f"record {key[:4]}", daemon=True
                )
                self._running[(key, session)] = job
                job.thread.start()

    def reports(self) -> list[dict[str, Any]]:
        with self._lock:
            recordings = list(self._recordings.values())
        return [recording.as_report() for recording in recordings]

    def taken(self, reported: list[dict[str, Any]]) -> None:
        """The control plane has these: finished ones need not be reported again."""
        with self._lock:
            for report in reported:
                if report["state"] != "recording":
                    self._recordings.pop(report["id"], None)

    def delete(self, recording_id: str) -> bool:
        """Delete a finished recording's file (False: it is still being written)."""
        path = recording_path(self.directory, recording_id)
        if path is None:
            return False
        with self._lock:
            current = self._recordings.get(recording_id)
            if current is not None and current.state == "recording":
                return False
            self._recordings.pop(recording_id, None)
        path.unlink(missing_ok=True)
        return True

    def shutdown(self) -> None:
        self.reconcile(set())
        with self._lock:
            threads = [job.thread for job in self._running.values() if job.thread]
        for thread in threads:
            thread.join(5)

    # --- one recorded session ---------------------------------------------------------------

    def _run(self, job: _Wanted) -> None:
        """Record until stopped; a failure starts a new recording after RETRY_S, a full disk
        ends recording for the session."""
        while not job.stop.is_set():
            recording = self._record_once(job)
            if recording.state == "done" or _DISK_FULL.search(recording.error):
                return
            job.stop.wait(RETRY_S)

    def _record_once(self, job: _Wanted) -> Recording:
        self.directory.mkdir(parents=True, exist_ok=True)
        recording_id = str(uuid.uuid4())
        path = self.directory / f"{recording_id}.mp4"
        recording = Recording(recording_id, job.stream_key, path, started=time.time())
        with self._lock:
            self._recordings[recording_id] = recording
        source = ingest.local_stream_url(self._rtmp_port, job.stream_key)
        try:
            # Its errors reach the user: never the key, nor where this node keeps its files.
            secrets = (job.stream_key, str(self.directory))
            attempt = Attempt(record_command(self._ffmpeg, source, path), secrets)
        except OSError as error:
            return self._finish(recording, "failed", f"cannot start ffmpeg: {error}")
        while (got := attempt.read()) is not None:
            progress, _ = got
            for block in progress:
                if block.out_time_us:
                    recording.duration_s = block.out_time_us / 1_000_000
            if job.stop.is_set():
                attempt.stop(time.monotonic())
        returncode = attempt.wait()
        if attempt.stopping or returncode == 0:  # stopped, or the publisher left
            return self._finish(recording, "done", "")
        why = attempt.outcome(returncode) or f"ffmpeg {exit_text(returncode)}"
        return self._finish(recording, "failed", why)

    def _finish(self, recording: Recording, state: str, error: str) -> Recording:
        with self._lock:
            recording.ended = time.time()
            recording.state = state
            recording.error = error
        return recording
