"""The current picture of a live stream on this node, as JPEG (WCS's stream snapshot).

Decoded from keyframes only (``-skip_frame nokey``: no P/B frame is ever decoded), only while
someone asks, at most one decoder per stream at a time: concurrent askers wait for the same
picture, and a picture is served again for ``max_age`` seconds. The decoder plays the stream
from the local ingest like one more viewer; the relays never notice.

Standard library only: it runs on nodes that have no Django.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field

from agents.node import ingest

__all__ = ["Snapshots"]

_JPEG_MAGIC = b"\xff\xd8"


@dataclass
class _Picture:
    lock: threading.Lock = field(default_factory=threading.Lock)
    jpeg: bytes | None = None
    taken: float = 0.0  # monotonic


class Snapshots:
    def __init__(
        self, *, ffmpeg: str, rtmp_port: int, max_age: float = 2.0, timeout: float = 6.0
    ) -> None:
        self._ffmpeg = ffmpeg
        self._rtmp_port = rtmp_port
        self._max_age = max_age
        self._timeout = timeout  # a 2-s GOP puts a keyframe within reach well before this
        self._lock = threading.Lock()
        self._pictures: dict[str, _Picture] = {}

    def get(self, key: str) -> bytes | None:
        """A JPEG of stream ``key`` at most ``max_age`` old, or None if no picture came."""
        with self._lock:
            picture = self._pictures.setdefault(key, _Picture())
        with picture.lock:
            if picture.jpeg is not None and time.monotonic() - picture.taken <= self._max_age:
                return picture.jpeg
            jpeg = self._decode(key)
            if jpeg is not None:
                picture.jpeg, picture.taken = jpeg, time.monotonic()
            return jpeg

    def keep_only(self, keys: set[str]) -> None:
        """Forget the pictures of streams that are no longer live here."""
        with self._lock:
            for key in list(self._pictures):
                if key not in keys:
                    del self._pictures[key]

    def _decode(self, key: str) -> bytes | None:
        source = ingest.local_stream_url(self._rtmp_port, key)
        command = [
            self._ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
            "-rw_timeout", str(int(self._timeout * 1_000_000)),
            # Video only is wanted, and the ingest sends no audio before video (wait_video):
            # a 2-s probe, not 5 s waiting for audio a camera never sends.
            "-analyzeduration", "2000000",
            "-skip_frame", "nokey", "-i", source,
            "-map", "0:v:0", "-frames:v", "1", "-vf", "scale='min(1280,iw)':-2",
            "-c:v", "mjpeg", "-q:v", "4", "-f", "image2pipe", "pipe:1",
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, timeout=self._timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        jpeg = done.stdout
        return jpeg if done.returncode == 0 and jpeg.startswith(_JPEG_MAGIC) else None
