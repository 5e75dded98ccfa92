"""Real processes for the media tests: stand-in platforms, publishers, viewers, process lookup."""

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agents.node.ingest import IngestConfig, local_stream_url

PLATFORM_CONF = """
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
{user}
daemon off;
master_process off;
pid {prefix}/nginx.pid;
lock_file {prefix}/nginx.lock;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
rtmp {{
    access_log off;
    server {{
        listen 127.0.0.1:{rtmp_port};
        chunk_size 4096;
        application {app} {{
            live on;
            record off;
{directives}
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{http_port};
        location /stat {{ rtmp_stat all; }}
        location /control {{ rtmp_control all; }}
    }}
}}
"""


# Ports for the tests' servers come from below the kernel's ephemeral range (32768-60999 here):
# a port the kernel hands out for bind(0) may meanwhile become the local end of some outgoing
# connection (one CI run saw nginx fail with "Address already in use" that way); these never.
_PORTS = range(20000, 32768)
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never handed out before in this process."""
    for _ in range(1000):
        port = random.choice(_PORTS)  # noqa: S311 - a port, not a secret
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll until predicate() is truthy; return its value, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


# A stand-in for the node's ingest application plays as deploy/nginx-rtmp.conf.template does:
# nothing before a video keyframe (the relays' short probe relies on it).
INGEST = ["wait_video on;", "wait_key on;"]


class Platform:
    """A stand-in for YouTube or Twitch: an nginx-rtmp application that accepts publishers.

    Extra application directives (e.g. `push rtmp://...;`) make it a bare ingest for bench/."""

    def __init__(self, root: Path, app: str, directives: list[str] | None = None) -> None:
        self.app = app
        self.directives = directives or []
        self.prefix = root / f"platform-{app}-{free_port()}"
        self.rtmp_port = free_port()
        self.http_port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{self.app}"

    def start(self) -> "Platform":
        self.prefix.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            PLATFORM_CONF.format(
                user="user root;" if os.geteuid() == 0 else "",
                prefix=self.prefix,
                rtmp_port=self.rtmp_port,
                http_port=self.http_port,
                app=self.app,
                directives="\n".join(f"            {line}" for line in self.directives),
            )
        )
        self.process = subprocess.Popen(
            ["nginx", "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "e.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: _port_open(self.rtmp_port), 10, 0.05)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def publishers(self) -> dict[str, tuple[int, int]]:
        """Publishing stream name -> (nginx client id, bytes received so far)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/stat", timeout=2
            ) as response:
                root = ET.fromstring(response.read())  # noqa: S314 - our own nginx
        except OSError:
            return {}
        found = {}
        for stream in root.iter("stream"):
            for client in stream.iter("client"):
                if client.find("publishing") is not None:
                    found[stream.findtext("name", "")] = (
                        int(client.findtext("id", "0")),
                        int(stream.findtext("bytes_in", "0")),
                    )
        return found


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# How publish() sends: RTMP (as OBS), MPEG-TS (an SRT caller or listener), HLS files.
MUXERS = {
    "flv": ["-f", "flv"],
    "mpegts": ["-f", "mpegts"],
    "hls": ["-f", "hls", "-hls_time", "1", "-hls_list_size", "6", "-hls_flags", "delete_segments"],
}


def publish(
    url: str, log: Path, video_bitrate: str = "800k", muxer: str = "flv"
) -> subprocess.Popen:
    """OBS stand-in: a test pattern with sound, H.264/AAC, 2-s GOP, in real time (a constant
    bitrate when ``video_bitrate`` is given in full, as OBS's CBR would send it)."""
    cbr = ["-minrate", video_bitrate, "-maxrate", video_bitrate, "-bufsize", video_bitrate]
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30" if video_bitrate != "800k"
         else "testsrc2=size=640x360:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60",
         "-b:v", video_bitrate, *(cbr if video_bitrate != "800k" else []),
         "-c:a", "aac", "-b:a", "96k", *MUXERS[muxer], url],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )  # fmt: skip


def viewer_frames(url: str, out: Path, seconds: float = 4.5) -> dict[str, int]:
    """What a viewer at the destination decodes in a few seconds: frames per media type.

    Longer than two GOPs (2 s here): stream copy starts video at the next keyframe."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-rw_timeout",
         "8000000", "-i", url, "-t", str(seconds), "-map", "0", "-c", "copy", "-f", "flv",
         str(out)],
        timeout=30, check=False, capture_output=True,
    )  # fmt: skip
    if not out.exists():
        return {}
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_type,nb_read_frames", "-of", "csv=p=0", str(out)],
        timeout=30, check=False, capture_output=True, text=True,
    )  # fmt: skip
    frames: dict[str, int] = {}
    for line in probe.stdout.split():
        kind, _, count = line.partition(",")
        if count.isdigit():
            frames[kind] = frames.get(kind, 0) + int(count)
    return frames


def video_timestamps(url: str, out: Path, seconds: float = 4.5) -> list[float]:
    """The timestamps of the video a viewer at the destination receives in a few seconds: a
    picture that moves has many distinct, advancing ones; a frozen one repeats the same."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-rw_timeout",
         "8000000", "-i", url, "-t", str(seconds), "-map", "0:v", "-c", "copy", "-f", "flv",
         str(out)],
        timeout=30, check=False, capture_output=True,
    )  # fmt: skip
    if not out.exists():
        return []
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=dts_time",
         "-of", "csv=p=0", str(out)],
        timeout=30, check=False, capture_output=True, text=True,
    )  # fmt: skip
    return [float(line) for line in probe.stdout.split() if line.replace(".", "", 1).isdigit()]


def video_size(url: str, out: Path) -> tuple[int, int, float]:
    """What a viewer at the destination sees: width, height and frame rate of the video."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-rw_timeout",
         "8000000", "-i", url, "-t", "4", "-map", "0:v", "-c", "copy", "-f", "flv", str(out)],
        timeout=30, check=False, capture_output=True,
    )  # fmt: skip
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
         "stream=width,height,avg_frame_rate", "-of", "csv=p=0", str(out)],
        timeout=30, check=False, capture_output=True, text=True,
    )  # fmt: skip
    width, height, rate = probe.stdout.strip().split(",")
    num, _, den = rate.partition("/")
    return int(width), int(height), float(num) / float(den or 1)


def picture_moves(url: str, out: Path) -> bool:
    """A viewer sees live video: 2 s or more of distinct, advancing video timestamps."""
    stamps = video_timestamps(url, out)
    return len(set(stamps)) > 45 and max(stamps) - min(stamps) >= 2.0


def _argvs() -> Iterator[tuple[int, list[bytes]]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[-1] == b"":
            argv.pop()
        yield int(entry.name), argv


def ffmpeg_pids(fragment: str, *more: str) -> list[int]:
    """ffmpeg processes whose command line contains every fragment (URL parts, ports)."""
    wanted = [f.encode() for f in (fragment, *more)]
    return [
        pid
        for pid, argv in _argvs()
        if argv and argv[0].endswith(b"ffmpeg") and all(f in b"\0".join(argv) for f in wanted)
    ]


def relay_pids(stream_key: str, ingest: IngestConfig) -> list[int]:
    """The processes relaying a stream of this ingest to its destinations, whatever their kind:
    ffmpeg relays (``-i SOURCE ... TARGET``) or the stream's fan-out, a player that nginx lists
    under the stream (its flashVer names its pid: no key is on its command line, and it has no
    child). Not recorders or snapshots."""
    source = local_stream_url(ingest.rtmp_port, stream_key).encode()
    found = []
    for pid, argv in _argvs():
        ffmpeg = bool(argv) and argv[0].endswith(b"ffmpeg") and source in b"\0".join(argv)
        if ffmpeg and argv[-1].startswith((b"rtmp", b"srt://")) and source not in argv[-1]:
            found.append(pid)
    with contextlib.suppress(OSError, ET.ParseError):
        stat = f"http://127.0.0.1:{ingest.http_port}/stat"
        with urllib.request.urlopen(stat, timeout=2) as response:
            root = ET.fromstring(response.read())  # noqa: S314 - our own nginx
        for stream in root.iterfind("server/application/live/stream"):
            if stream.findtext("name") == stream_key:
                for flashver in stream.iterfind("client/flashver"):
                    if match := re.search(r"rig fan-out pid (\d+)", flashver.text or ""):
                        found.append(int(match[1]))
    return found


def alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie (killed, not reaped by whoever inherited it) is dead.

    A process that exits between the open and the read of its stat file makes the read
    fail with ESRCH (ProcessLookupError): it is dead too.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def stop(process: subprocess.Popen | None, timeout: float = 5) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tls_server_context(directory: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate (an RTMPS endpoint's)."""
    if not shutil.which("openssl"):
        raise AssertionError("needs openssl to make a certificate: `make test` installs it")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class Proxy:
    """Forwards connections on 127.0.0.1:``port`` to ``upstream``; terminates TLS if asked.
    ``stop_reading()`` makes it a destination that keeps the connection open and reads nothing
    more from the client (a hung platform): the client's writes fill the buffers and block.

    asyncio rather than threads because an ``ssl.SSLSocket`` must not be read and written from
    two threads at once.
    """

    def __init__(self, port: int, upstream: int, tls: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.connections = 0
        self._upstream = upstream
        self._loop = asyncio.new_event_loop()
        self._reading = asyncio.Event()
        self._loop.call_soon(self._reading.set)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", port, ssl=tls)
        )
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)

        async def pump(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, gate: asyncio.Event | None
        ) -> None:
            try:
                while True:
                    if gate is not None:
                        await gate.wait()
                    data = await src.read(65536)
                    if not data:
                        break
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        # Swallowed on close: Python 3.11's start_server callback calls exception() on a
        # cancelled handler and logs a CancelledError traceback.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                pump(reader, up_writer, self._reading),
                pump(up_reader, writer, None),
                return_exceptions=True,
            )

    def stop_reading(self) -> None:
        self._loop.call_soon_threadsafe(self._reading.clear)

    def resume_reading(self) -> None:
        self._loop.call_soon_threadsafe(self._reading.set)

    def close(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


class Camera:
    """An RTSP camera (tests/media/rtsp_camera.py: GStreamer's RTSP server, a moving test
    pattern), run by Debian's python3; stop and start it again on the same port."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.log = root / f"camera-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def url(self, credentials: str = "") -> str:
        login = f"{credentials}@" if credentials else ""
        return f"rtsp://{login}127.0.0.1:{self.port}/cam"

    def start(self) -> "Camera":
        script = Path(__file__).with_name("rtsp_camera.py")
        self.process = subprocess.Popen(
            ["/usr/bin/python3", str(script), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )
        wait_until(lambda: _port_open(self.port), 10, 0.05)
        return self

    def stop(self) -> None:
        stop(self.process)
        self.process = None
