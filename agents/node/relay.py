"""One restream relay, described as data: what to run and how to read what it reports.

A relay is one ``ffmpeg -c copy`` process that plays the ingest's local RTMP stream and pushes
it to one destination (FLV to YouTube, Twitch, any rtmp:// or rtmps:// URL; MPEG-TS to an
srt:// one). One process per destination keeps a failing destination from disturbing the others.

This module is pure: it builds the command line (:func:`build_relay_command`), parses ffmpeg's
``-progress`` output (:class:`ProgressParser`), keeps destination secrets out of text
(:func:`redact`, :func:`relay_secrets`) and defines the observable state of a relay
(:class:`RelayState`, :class:`RelaySnapshot`). :mod:`agents.node.supervisor` runs the processes.

Standard library only: it runs on nodes that have no Django.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agents.node.protocol import RelayState
from agents.node.rtmp import SEND_BUFFER_BYTES

__all__ = [
    "Progress",
    "ProgressParser",
    "RelaySnapshot",
    "RelaySpec",
    "RelayState",
    "build_relay_command",
    "redact",
    "relay_secrets",
]

REDACTED = "***"


@dataclass(frozen=True)
class RelaySpec:
    """What one relay does. ``target_url`` carries the destination's stream key: a secret."""

    relay_id: str
    source_url: str
    target_url: str
    mute: bool = False
    # The user's restart counter: a new value is a new spec, so the relay starts afresh.
    generation: int = 0
    # The publish session it serves (nginx's client id of the publisher): a new session is a
    # new spec, so the relay starts afresh, at the new session's first keyframe.
    session: str = ""
    # Whose relay it is, for reports: the stream and the destination (0: not a stream's).
    stream_id: str = ""
    destination_id: int = 0
    # A pull: the source is the stream's remote pullUrl (a camera, a server) and the target
    # this node's own ingest, so the pulled stream is published like OBS would.
    pull: bool = False
    # A transcode profile: (height, fps, video kb/s, audio kb/s); a stream's shared encoder.
    transcode: tuple[int, int, int, int] | None = None
    # Both ends on this node (an encoder): no address check, nothing to probe.
    local: bool = False
    # Whether rig gives up after failed_after attempts in a row. Not for a relay whose input
    # may fail and come back by itself (an encoder, and what copies from one): it retries.
    gives_up: bool = True

    @property
    def remote_url(self) -> str:
        """The URL outside this node: what the SSRF guard checks and the probe knocks on
        (none for a local relay)."""
        if self.local:
            return ""
        return self.source_url if self.pull else self.target_url

    def __repr__(self) -> str:
        # Specs end up in tracebacks and debug logs; never print the key there.
        secrets = relay_secrets(self)
        target = redact(self.target_url, secrets)
        source = redact(self.source_url, secrets)
        return (
            f"RelaySpec(relay_id={self.relay_id!r}, source_url={source!r}, "
            f"target_url={target!r}, mute={self.mute!r}, generation={self.generation!r}, "
            f"session={self.session!r}, stream_id={self.stream_id!r}, "
            f"destination_id={self.destination_id!r}, pull={self.pull!r}, "
            f"transcode={self.transcode!r})"
        )


def build_relay_command(
    spec: RelaySpec, *, ffmpeg: str = "ffmpeg", rw_timeout_s: float = 10.0
) -> list[str]:
    """The argv of the relay process for ``spec``.

    Checked against ffmpeg 5.1 for rtmp://, rtmps:// and srt:// targets. Progress goes to stdout
    (``-progress pipe:1``, a block every half second); warnings and errors go to stderr, each line
    tagged ``[warning]``/``[error]`` so the supervisor can pick the meaningful one.
    """
    rw_timeout = str(int(rw_timeout_s * 1_000_000))
    maps = ["-map", "0:v?"] if spec.mute else ["-map", "0:v?", "-map", "0:a?"]
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "level+warning",
        # Without it a source that goes quiet (publisher gone, nginx keeps the player
        # attached) would hang the input forever.
        *_input_timeout(spec.source_url, rw_timeout),
        *_probe(spec),
        "-i",
        spec.source_url,
        *maps,
        *_codecs(spec),
        *_container(spec.target_url),
        # Output side too: a destination that accepts TCP but stops reading would otherwise
        # block the write forever.
        "-rw_timeout",
        rw_timeout,
        # A bounded send buffer (the kernel's autotuning grows it to 4 MiB): when a destination
        # stops reading, the write blocks within a second or two of video instead of a minute,
        # so the relay stops reporting progress and leaves LIVE. 256 KiB still carries 10 Mb/s
        # over a 200 ms round trip.
        "-send_buffer_size",
        str(SEND_BUFFER_BYTES),
        "-progress",
        "pipe:1",
        "-stats_period",
        "0.5",
        spec.target_url,
    ]


def _codecs(spec: RelaySpec) -> list[str]:
    """Copy, as a rule. A pull's audio is made AAC (cameras send G.711 and the like, which
    platforms refuse; it costs little). A transcoded destination gets H.264 at its profile's
    height, frame rate and bitrate, a keyframe every 2 s, and AAC."""
    if spec.transcode is not None:
        height, fps, video_kbps, audio_kbps = spec.transcode
        return [
            "-vf", f"scale=-2:{height}", "-r", str(fps),
            "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
            "-pix_fmt", "yuv420p", "-b:v", f"{video_kbps}k", "-maxrate", f"{video_kbps}k",
            "-bufsize", f"{2 * video_kbps}k", "-g", str(2 * fps), "-keyint_min", str(2 * fps),
            "-sc_threshold", "0", "-c:a", "aac", "-b:a", f"{audio_kbps}k",
        ]  # fmt: skip
    if spec.pull:
        return ["-c:v", "copy", "-c:a", "aac", "-b:a", "128k"]
    return ["-c", "copy"]


def _probe(spec: RelaySpec) -> list[str]:
    """Half a second of probing for a stream of this node's ingest, not ffmpeg's 5 s (which
    costs 1.8 s of every start, measured): the ingest sends a player nothing before a video
    keyframe, audio included (wait_video, wait_key), so both streams show at once. A short
    probe on a source that sends audio first would miss the video: pulls keep the default."""
    return [] if spec.pull else ["-analyzeduration", "500000"]


def _input_timeout(source_url: str, rw_timeout: str) -> list[str]:
    """RTSP has its own socket timeout (and refuses -rw_timeout) and goes over TCP, which
    passes every firewall and loses nothing; every other input takes -rw_timeout."""
    if source_url.startswith(("rtsp://", "rtsps://")):
        return ["-rtsp_transport", "tcp", "-timeout", rw_timeout]
    return ["-rw_timeout", rw_timeout]


def _container(target_url: str) -> list[str]:
    """SRT carries MPEG-TS; RTMP(S) carries FLV, which must not try to rewrite its header at
    the end (the target is not seekable)."""
    if target_url.startswith("srt://"):
        return ["-f", "mpegts"]
    return ["-f", "flv", "-flvflags", "no_duration_filesize"]


def relay_secrets(spec: RelaySpec) -> tuple[str, ...]:
    """The parts of the relay's URLs that must never be shown: the rig stream key in the source,
    and the target's key, query and credentials.

    The stream key is the last path segment (``rtmp://host/app/KEY``). Hiding the parts rather
    than the whole URL keeps logs useful (``rtmp://host/app/***``) while the full URL, which
    contains the key, can no longer appear either.
    """
    if spec.pull:
        return _pull_secrets(spec)
    parts = urllib.parse.urlsplit(spec.target_url)
    # The rig stream key, in the source URL: ffmpeg's input errors quote it (from an encoder,
    # the name is the key and the profile: both, and the key alone).
    name = spec.source_url.rsplit("/", 1)[-1]
    found: list[str] = [name, name.rsplit("_", 3)[0]] if "/encoded/" in spec.source_url else [name]
    key = parts.path.rsplit("/", 1)[-1]
    found += [key, urllib.parse.unquote(key)]
    if parts.query:
        found += [parts.query, urllib.parse.unquote(parts.query)]
        found += [value for _, value in urllib.parse.parse_qsl(parts.query)]
    if parts.password:
        found += [parts.password, urllib.parse.unquote(parts.password)]
    if not key and not parts.query:
        # Nothing we recognise as a key: hide the whole URL rather than guess.
        found.append(spec.target_url)
    return tuple(dict.fromkeys(s for s in found if s))


def _pull_secrets(spec: RelaySpec) -> tuple[str, ...]:
    """A pull's secrets: the source's credentials and query (a camera's password, a signed
    URL's token) and, in the local target, the rig stream key and the pull's token."""
    source = urllib.parse.urlsplit(spec.source_url)
    target = urllib.parse.urlsplit(spec.target_url)
    found = [target.path.rsplit("/", 1)[-1], target.query]
    found += [value for _, value in urllib.parse.parse_qsl(target.query)]
    for secret in (source.username, source.password, source.query):
        if secret:
            found += [secret, urllib.parse.unquote(secret)]
    found += [value for _, value in urllib.parse.parse_qsl(source.query)]
    return tuple(dict.fromkeys(s for s in found if s))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``***``."""
    # Longest first, so a secret that contains a shorter one is still hidden whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True)
class Progress:
    """One block of ffmpeg ``-progress`` output. ``None`` where ffmpeg said ``N/A``.

    ``bitrate_kbps`` and ``fps`` are ffmpeg's own figures: averages since the process started.
    ``total_size`` is the bytes written to the target by this process (0 while unknown).
    """

    total_size: int = 0
    bitrate_kbps: float | None = None
    fps: float | None = None
    out_time_us: int | None = None
    frame: int | None = None
    ended: bool = False  # the block ended with ``progress=end``: the process is finishing

    def picture_moved_since(self, before: Progress) -> bool:
        """More video frames, with later timestamps, than in ``before``: a moving picture."""
        return (
            self.frame is not None
            and before.frame is not None
            and self.frame > before.frame
            and self.out_time_us is not None
            and before.out_time_us is not None
            and self.out_time_us > before.out_time_us
        )


def _float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


class ProgressParser:
    """Incremental parser for ``-progress`` output: feed lines, get a :class:`Progress` per block.

    ffmpeg writes ``key=value`` lines and ends each block with ``progress=continue`` (or
    ``progress=end`` for the last one). A block that is not finished yet yields nothing.
    """

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def feed(self, line: str) -> Progress | None:
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        key, value = key.strip(), value.strip()
        if key != "progress":
            self._fields[key] = value
            return None
        fields, self._fields = self._fields, {}
        bitrate = fields.get("bitrate", "N/A")
        return Progress(
            total_size=max(_int(fields.get("total_size", "")) or 0, 0),
            bitrate_kbps=_float(bitrate.removesuffix("kbits/s").strip()),
            fps=_float(fields.get("fps", "")),
            out_time_us=_int(fields.get("out_time_us", "")),
            frame=_int(fields.get("frame", "")),
            ended=value == "end",
        )


@dataclass(frozen=True)
class RelaySnapshot:
    """What a relay looks like at one moment. All text in it is already redacted.

    ``bytes_sent`` counts every byte pushed since the relay was added, across restarts.
    ``bitrate_kbps``/``fps`` are measured over the last few seconds and are ``None`` unless LIVE.
    ``restarts`` counts automatic restarts (exit or stall), not ordered ones.
    """

    relay_id: str
    state: RelayState
    bitrate_kbps: float | None
    fps: float | None
    bytes_sent: int
    restarts: int
    since: float
    last_error: str | None
    log: tuple[str, ...]
    pid: int | None
    log_total: int = 0  # lines ever logged: the last ``log_total - n`` of ``log`` are new to n
    stream_id: str = ""  # the spec's
    destination_id: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form for reporting; ``log`` is left out (read the field)."""
        return {
            "relayId": self.relay_id,
            "state": self.state.value,
            "bitrateKbps": self.bitrate_kbps,
            "fps": self.fps,
            "bytesSent": self.bytes_sent,
            "restarts": self.restarts,
            "since": self.since,
            "lastError": self.last_error,
            "pid": self.pid,
        }
