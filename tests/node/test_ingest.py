"""The ingest node's nginx-rtmp, driven for real: nginx, ffmpeg publishers/players, loopback.

Every media test gets its own private nginx (tests.nginx.NginxIngest) on free ports and
a fake control plane (HookServer) that records each nginx-rtmp callback and answers with a
status chosen per ``call``. No Django: this is the node side of the hook contract, and the
tests pin down what nginx-rtmp 1.2.2 (Debian 12) actually sends and does, including the parts
the control plane has to defend against (see the "hazard" tests at the end).

Timings are printed as ``[ingest] ...`` lines; run with ``-s`` to see them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from agents.node.ingest import (
    IngestConfig,
    drop_publisher,
    live_publishers,
    nginx_command,
    publishers_from_stat,
    render_nginx_conf,
    write_nginx_conf,
)
from tests.media.harness import free_port
from tests.nginx import NginxIngest

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
NETCALL_TIMEOUT_S = 5  # netcall_timeout in deploy/nginx-rtmp.conf.template

# What nginx-rtmp 1.2.2 POSTs, in order (the stream's RTMP args, if any, are appended raw).
SESSION_FIELDS = ["app", "flashver", "swfurl", "tcurl", "pageurl", "addr", "clientid"]
PUBLISH_FIELDS = [*SESSION_FIELDS, "call", "name", "type"]
PUBLISH_DONE_FIELDS = [*SESSION_FIELDS, "call", "name"]


def _note(msg: str) -> None:
    print(f"[ingest] {msg}")


def wait_until(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> float:
    """Poll *pred* until true; return the seconds it took."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - start


# --- fake control plane -------------------------------------------------------------------


@dataclass(frozen=True)
class HookCall:
    event: str  # last path segment: publish / publish_done / update
    fields: list[tuple[str, str]]  # form fields in the order nginx sent them
    host: str
    at: float  # time.monotonic() on arrival

    @property
    def form(self) -> dict[str, str]:
        # First occurrence wins: that is nginx's own value; later duplicates come from the
        # publisher's RTMP args (see test_publish_args_are_appended_raw_to_the_hook_form).
        out: dict[str, str] = {}
        for key, value in self.fields:
            out.setdefault(key, value)
        return out

    @property
    def call(self) -> str:
        return self.form.get("call", "")

    @property
    def keys(self) -> list[str]:
        return [key for key, _ in self.fields]


class HookServer:
    """Records nginx-rtmp callbacks; answers per ``call`` (publish, update_publish, ...)."""

    def __init__(self) -> None:
        self.calls: list[HookCall] = []
        self.status: dict[str, int] = {}  # call or "call:name" -> HTTP status (default 200)
        self.delay: dict[str, float] = {}  # call or "call:name" -> seconds before answering
        self.location: dict[str, str] = {}  # call -> Location header for 3xx answers
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _hook_handler(self))
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/agents/hooks/NODE-TOKEN"

    def stop(self) -> None:
        """Stop answering: afterwards connections to the port are refused."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def record(self, call: HookCall) -> None:
        with self._lock:
            self.calls.append(call)

    def lookup(self, table: dict[str, float] | dict[str, int], call: HookCall) -> float | None:
        for key in (f"{call.call}:{call.form.get('name', '')}", call.call):
            if key in table:
                return table[key]
        return None

    def find(self, call: str, name: str | None = None) -> list[HookCall]:
        with self._lock:
            return [
                c
                for c in self.calls
                if c.call == call and (name is None or c.form.get("name") == name)
            ]

    def wait_for(self, call: str, name: str | None = None, timeout: float = 5.0) -> HookCall:
        wait_until(lambda: bool(self.find(call, name)), timeout, f"hook call={call} {name}")
        return self.find(call, name)[0]


def _hook_handler(hook: HookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0 and a close after each answer: nginx-rtmp reads the answer until EOF.
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            call = HookCall(
                event=self.path.rsplit("/", 1)[-1],
                fields=parse_qsl(body, keep_blank_values=True),
                host=self.headers.get("Host", ""),
                at=time.monotonic(),
            )
            hook.record(call)
            time.sleep(hook.lookup(hook.delay, call) or 0.0)
            self.send_response(int(hook.lookup(hook.status, call) or 200))
            if call.call in hook.location:
                self.send_header("Location", hook.location[call.call])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            pass

    return Handler


# --- media processes -----------------------------------------------------------------------

PUBLISHER_ARGS = [
    *("-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"),
    *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
    *("-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60"),
    *("-b:v", "1M", "-c:a", "aac", "-b:a", "96k"),
    *("-t", "60"),  # a stray publisher can never outlive the test run by much
    *("-f", "flv"),
]


class Media:
    """Starts ffmpeg/ffprobe processes and guarantees they are gone at teardown."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, argv: list[str], label: str) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"{label}-{len(self.procs)}.log").open("wb")
        with log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def publish(self, url: str) -> subprocess.Popen[bytes]:
        argv = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *PUBLISHER_ARGS, url]
        return self._spawn(argv, "publisher")

    def play(self, url: str, seconds: float) -> subprocess.Popen[bytes]:
        argv = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", url]
        return self._spawn([*argv, "-t", str(seconds), "-f", "null", "-"], "player")

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        index = self.procs.index(proc)
        (path,) = self.logdir.glob(f"*-{index}.log")
        return path.read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def exit_within(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    start = time.monotonic()
    rc = proc.wait(timeout=timeout)
    return rc, time.monotonic() - start


def probe_codecs(url: str, timeout: float = 15.0) -> tuple[int, list[str]]:
    """(exit code, ["h264,video", "aac,audio", ...]) as a fresh player sees the stream."""
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-show_entries", "stream=codec_name,codec_type"),
            *("-of", "csv=p=0", url),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.returncode, sorted(line for line in out.stdout.split() if line)


class SourceAddressProxy:
    """Loopback TCP forwarder whose upstream connections come *from* another address.

    Only loopback exists here, but all of 127/8 is local: connecting from 127.0.0.2 makes
    nginx see a client that is not 127.0.0.1, which is what ``allow play 127.0.0.1`` is about.
    """

    def __init__(self, upstream_port: int, source_ip: str = "127.0.0.2") -> None:
        self.upstream_port = upstream_port
        self.source_ip = source_ip
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._stopping = threading.Event()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(
                ("127.0.0.1", self.upstream_port), source_address=(self.source_ip, 0)
            )
            client.settimeout(None)
            self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stopping.set()
        self.listener.close()
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()


def rtmp_url(ingest: NginxIngest, key: str, port: int | None = None) -> str:
    return f"rtmp://127.0.0.1:{port or ingest.cfg.rtmp_port}/live/{key}"


def process_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group *pgid*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            found.append(int(entry.name))
    return found


# --- fixtures ------------------------------------------------------------------------------


def _require_media() -> None:
    missing = [b for b in ("nginx", "ffmpeg", "ffprobe") if shutil.which(b) is None]
    if missing or not RTMP_MODULE.exists():
        pytest.fail(f"needs nginx + libnginx-mod-rtmp + ffmpeg (missing: {missing or RTMP_MODULE})")


@pytest.fixture
def hook() -> Iterator[HookServer]:
    server = HookServer()
    yield server
    with contextlib.suppress(OSError):
        server.stop()


@pytest.fixture
def media(tmp_path: Path) -> Iterator[Media]:
    _require_media()
    logdir = tmp_path / "media"
    logdir.mkdir()
    m = Media(logdir)
    yield m
    m.close()


@pytest.fixture
def start_ingest(tmp_path: Path) -> Iterator[Callable[..., NginxIngest]]:
    _require_media()
    started: list[NginxIngest] = []

    def start(*, hook_base_url: str) -> NginxIngest:
        cfg = IngestConfig(
            prefix=tmp_path / f"nginx{len(started)}",
            rtmp_port=free_port(),
            rtmp_bind="127.0.0.1",
            http_port=free_port(),
            hook_base_url=hook_base_url,
        )
        ingest = NginxIngest(cfg, nginx=NGINX)
        ingest.start()
        started.append(ingest)
        return ingest

    yield start
    for ingest in started:
        ingest.stop()


@pytest.fixture
def ingest(start_ingest: Callable[..., NginxIngest], hook: HookServer) -> NginxIngest:
    return start_ingest(hook_base_url=hook.base_url)


def media_flowing(ingest: NginxIngest, key: str) -> bool:
    """True once nginx has received audio/video from *key*'s publisher (stream is active)."""
    with urllib.request.urlopen(f"{ingest.http_base}/stat", timeout=2) as resp:
        root = ET.fromstring(resp.read())  # noqa: S314 - our loopback nginx
    return any(
        stream.findtext("name") == key and stream.find("active") is not None
        for stream in root.iter("stream")
    )


def go_live(ingest: NginxIngest, media: Media, key: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start a publisher for *key* and wait until nginx lists it; (process, client id)."""
    proc = media.publish(rtmp_url(ingest, key))
    took = wait_until(lambda: key in live_publishers(ingest.http_base), 10, f"{key} live")
    _note(f"{key}: live {took:.2f}s after starting ffmpeg")
    return proc, live_publishers(ingest.http_base)[key]


# --- config rendering (no processes) -------------------------------------------------------

SAMPLE = IngestConfig(
    prefix=Path("/srv/rig/node"),
    rtmp_port=1935,
    rtmp_bind="0.0.0.0",  # noqa: S104
    http_port=8089,
    hook_base_url="http://10.0.0.5:8000/agents/hooks/TOKEN/",
)


def test_render_fills_every_placeholder_and_required_directive() -> None:
    conf = render_nginx_conf(SAMPLE)
    assert "$" not in conf  # string.Template left nothing behind
    expected = [
        "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;",
        "daemon off;",
        "worker_processes 1;",
        "pid       /srv/rig/node/nginx.pid;",
        "lock_file /srv/rig/node/nginx.lock;",
        "error_log /srv/rig/node/logs/error.log notice;",
        "listen 0.0.0.0:1935;",
        "chunk_size 4096;",
        "ping 10s;",
        "ping_timeout 5s;",
        "live on;",
        "record off;",
        "wait_video on;",
        "wait_key on;",
        "drop_idle_publisher 10s;",
        "notify_method post;",
        "on_publish      http://10.0.0.5:8000/agents/hooks/TOKEN/publish;",
        "on_publish_done http://10.0.0.5:8000/agents/hooks/TOKEN/publish_done;",
        "allow play 127.0.0.1;",
        "deny play all;",
        "allow publish all;",
        "listen 127.0.0.1:8089;",
        "rtmp_stat all;",
        "rtmp_control all;",
        "access_log off;",
    ]
    for line in expected:
        assert line in conf, line
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert re.search(rf"^\s*{kind}_temp_path\s+/srv/rig/node/tmp/{kind};$", conf, re.M), kind
    # Both access logs (http's and nginx-rtmp's own) must be off, or nginx opens Debian's
    # /var/log/nginx/access.log; nothing of the system nginx's may leak in.
    assert len(re.findall(r"^\s*access_log off;$", conf, re.M)) == 2
    directives = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    assert not re.search(r"/var/|/run/|/etc/nginx", directives)


@pytest.mark.parametrize(
    "bad",
    ["https://cp.example/agents/hooks/T", "127.0.0.1:8000/hooks", "http://h/x;evil", "http://h/$x"],
)
def test_render_rejects_hook_urls_nginx_rtmp_cannot_use(bad: str) -> None:
    with pytest.raises(ValueError, match="hook_base_url"):
        render_nginx_conf(IngestConfig(prefix=Path("/tmp/x"), hook_base_url=bad))


def test_nginx_command_runs_in_the_private_prefix(tmp_path: Path) -> None:
    cfg = IngestConfig(prefix=tmp_path)
    assert nginx_command(cfg, nginx="/usr/sbin/nginx") == [
        "/usr/sbin/nginx",
        "-p",
        f"{tmp_path.resolve()}/",
        "-c",
        f"{tmp_path.resolve()}/nginx.conf",
    ]


STAT_WITH_PLAYER = b"""<?xml version="1.0" encoding="utf-8" ?>
<rtmp><server><application><name>live</name><live>
<stream><name>KEY1</name><time>2653</time>
<client><id>3</id><address>127.0.0.1</address><publishing/><active/></client>
<client><id>9</id><address>127.0.0.1</address><active/></client>
<publishing/><active/></stream>
<stream><name>WAITING</name><client><id>12</id><address>127.0.0.1</address></client></stream>
<nclients>3</nclients></live></application>
<application><name>other</name><live><stream><name>X</name>
<client><id>4</id><publishing/></client></stream></live></application>
</server></rtmp>"""


def test_publishers_from_stat_lists_only_publishers_of_the_app() -> None:
    assert publishers_from_stat(STAT_WITH_PLAYER) == {"KEY1": 3}
    assert publishers_from_stat(STAT_WITH_PLAYER, app="other") == {"X": 4}


# --- real nginx + ffmpeg -------------------------------------------------------------------


@pytest.mark.media
def test_written_conf_is_private_and_accepted_by_nginx(tmp_path: Path) -> None:
    _require_media()
    cfg = IngestConfig(prefix=tmp_path / "n", hook_base_url="http://127.0.0.1:9/agents/hooks/T")
    conf = write_nginx_conf(cfg)
    assert conf == cfg.prefix.resolve() / "nginx.conf"
    assert conf.stat().st_mode & 0o777 == 0o600  # carries the node token
    test = subprocess.run(
        [*nginx_command(cfg, nginx=NGINX), "-t"], capture_output=True, text=True, check=False
    )
    assert test.returncode == 0, test.stderr
    # "modules/..." would resolve against the -p prefix, hence the absolute load_module path.
    relative = conf.read_text().replace("/usr/lib/nginx/modules/", "modules/")
    conf.write_text(relative)
    test = subprocess.run(
        [*nginx_command(cfg, nginx=NGINX), "-t"], capture_output=True, text=True, check=False
    )
    assert test.returncode != 0 and "ngx_rtmp_module.so" in test.stderr


@pytest.mark.media
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root")
def test_config_needs_no_system_nginx_files() -> None:
    """nginx -t as an unprivileged user: it opens every log/temp path the config names (or
    defaults to), so any leftover Debian default (/var/log/nginx, /var/lib/nginx, /run)
    would fail with EACCES."""
    _require_media()
    prefix = Path(tempfile.mkdtemp(prefix="rig-ingest-"))  # pytest's tmp_path is 0700 root
    try:
        prefix.chmod(0o755)
        cfg = IngestConfig(prefix=prefix / "n", hook_base_url="http://127.0.0.1:9/agents/h/T")
        write_nginx_conf(cfg)
        for path in [prefix, *prefix.rglob("*")]:
            os.chown(path, 65534, 65534)  # nobody
        test = subprocess.run(
            ["runuser", "-u", "nobody", "--", *nginx_command(cfg, nginx=NGINX), "-t"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert test.returncode == 0, test.stderr
        assert "/var/" not in test.stderr and "/run/" not in test.stderr
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


@pytest.mark.media
def test_accepted_publish_is_playable_listed_and_reported(
    ingest: NginxIngest, hook: HookServer, media: Media
) -> None:
    publisher, client_id = go_live(ingest, media, "KEY1")

    publish = hook.wait_for("publish", "KEY1")
    _note(f"publish form: {publish.fields} Host: {publish.host!r}")
    assert publish.event == "publish"
    assert publish.keys == PUBLISH_FIELDS
    assert publish.form["app"] == "live"
    assert publish.form["name"] == "KEY1"
    assert publish.form["type"] == "live"
    assert publish.form["addr"] == "127.0.0.1"
    assert publish.form["clientid"] == str(client_id)  # same id as /stat and /control use
    assert publish.form["tcurl"] == f"rtmp://127.0.0.1:{ingest.cfg.rtmp_port}/live"
    assert publish.form["flashver"].startswith("FMLE/3.0")
    assert publish.form["swfurl"] == publish.form["pageurl"] == ""
    assert publish.host == "127.0.0.1"  # no port in Host: mind Django's ALLOWED_HOSTS

    # A fresh local player (what a relay does) gets both tracks.
    rc, codecs = probe_codecs(rtmp_url(ingest, "KEY1"))
    assert rc == 0 and codecs == ["aac,audio", "h264,video"], codecs

    publisher.terminate()  # ffmpeg closes the RTMP stream cleanly on SIGTERM
    publisher.wait(timeout=5)
    done = hook.wait_for("publish_done", "KEY1")
    _note(f"publish_done form: {done.fields}")
    assert done.event == "publish_done"
    assert done.keys == PUBLISH_DONE_FIELDS
    assert done.form["clientid"] == str(client_id)
    assert "KEY1" not in live_publishers(ingest.http_base)
    assert not hook.find("play") and not hook.find("play_done")  # not configured


@pytest.mark.media
@pytest.mark.parametrize("status", [403, 404, 409])
def test_publish_refused_when_hook_says_no(
    ingest: NginxIngest, hook: HookServer, media: Media, status: int
) -> None:
    hook.status["publish"] = status
    rc, took = exit_within(media.publish(rtmp_url(ingest, "NOPE")), timeout=5)
    _note(f"hook {status}: publisher exited rc={rc} after {took:.2f}s")
    assert rc != 0 and took < 3
    assert hook.find("publish", "NOPE")
    assert live_publishers(ingest.http_base) == {}
    time.sleep(0.2)
    assert not hook.find("publish_done")  # a refused publish never "ends"


@pytest.mark.media
def test_publish_refused_when_hook_unreachable(
    start_ingest: Callable[..., NginxIngest], media: Media
) -> None:
    closed = free_port()  # nothing listens there: connection refused
    ingest = start_ingest(hook_base_url=f"http://127.0.0.1:{closed}/agents/hooks/T")
    rc, took = exit_within(media.publish(rtmp_url(ingest, "KEY1")), timeout=5)
    _note(f"hook down: publisher exited rc={rc} after {took:.2f}s (fails closed)")
    assert rc != 0 and took < 3
    assert live_publishers(ingest.http_base) == {}


@pytest.mark.media
def test_slow_hook_is_waited_for_up_to_netcall_timeout(
    start_ingest: Callable[..., NginxIngest], hook: HookServer, media: Media
) -> None:
    ingest = start_ingest(hook_base_url=hook.base_url)
    hook.delay["publish:SLOW3"] = 3.0
    hook.delay["publish:SLOW7"] = NETCALL_TIMEOUT_S + 2.0
    started = time.monotonic()
    slow = media.publish(rtmp_url(ingest, "SLOW3"))
    too_slow = media.publish(rtmp_url(ingest, "SLOW7"))

    live_after = wait_until(lambda: "SLOW3" in live_publishers(ingest.http_base), 8, "SLOW3")
    _note(f"hook answering after 3s: publish accepted {live_after:.2f}s after start")
    assert 2.8 < live_after < 4.5

    rc = too_slow.wait(timeout=NETCALL_TIMEOUT_S + 3)
    refused_after = time.monotonic() - started
    _note(f"hook answering after 7s: refused after {refused_after:.2f}s (netcall_timeout 5s)")
    assert rc != 0
    assert NETCALL_TIMEOUT_S - 0.5 < refused_after < NETCALL_TIMEOUT_S + 1.5
    assert slow.poll() is None and "SLOW7" not in live_publishers(ingest.http_base)


@pytest.mark.media
def test_drop_publisher_disconnects_and_reports(
    ingest: NginxIngest, hook: HookServer, media: Media
) -> None:
    publisher, client_id = go_live(ingest, media, "KEY1")
    start = time.monotonic()
    assert drop_publisher(ingest.http_base, "KEY1") is True
    answered = time.monotonic() - start
    unlisted = wait_until(lambda: "KEY1" not in live_publishers(ingest.http_base), 1, "unlisted")
    rc, _ = exit_within(publisher, timeout=2)
    exited = time.monotonic() - start
    done = hook.wait_for("publish_done", "KEY1", timeout=1)
    _note(
        f"control drop: answered {answered * 1000:.0f}ms, unlisted {unlisted * 1000:.0f}ms, "
        f"publisher exited {exited * 1000:.0f}ms, publish_done {(done.at - start) * 1000:.0f}ms"
    )
    assert rc != 0 and exited < 1.0
    assert done.form["clientid"] == str(client_id)
    assert drop_publisher(ingest.http_base, "KEY1") is False
    assert drop_publisher(ingest.http_base, "NEVER-SEEN") is False


@pytest.mark.media
def test_stalled_publisher_is_dropped_by_drop_idle_publisher(
    ingest: NginxIngest, hook: HookServer, media: Media
) -> None:
    """An encoder that stops sending (here: SIGSTOP, TCP stays open) frees its key after
    drop_idle_publisher (10s), with on_publish_done, so OBS can reconnect."""
    publisher, client_id = go_live(ingest, media, "KEY1")
    # The idle timer only starts with the first audio/video packet (the stream turning
    # "active"); a publisher that never sends media is only caught by ping (~15s).
    wait_until(lambda: media_flowing(ingest, "KEY1"), 10, "KEY1 active")
    publisher.send_signal(signal.SIGSTOP)
    gone = wait_until(lambda: "KEY1" not in live_publishers(ingest.http_base), 17, "idle drop")
    done = hook.wait_for("publish_done", "KEY1", timeout=2)
    _note(f"stalled publisher dropped {gone:.2f}s after it stopped sending")
    assert 8.0 < gone < 12.0
    assert done.form["clientid"] == str(client_id)


@pytest.mark.media
def test_play_only_from_127_0_0_1_publish_from_anywhere(
    ingest: NginxIngest, hook: HookServer, media: Media
) -> None:
    """Playing from 127.0.0.1 (the relays) works: see the accepted-publish test. A real remote
    address cannot be tested on a loopback-only box; 127.0.0.2 stands in for one."""
    go_live(ingest, media, "KEY1")
    proxy = SourceAddressProxy(ingest.cfg.rtmp_port)
    try:
        start = time.monotonic()
        rc, codecs = probe_codecs(rtmp_url(ingest, "KEY1", port=proxy.port), timeout=10)
        _note(f"play from 127.0.0.2: ffprobe rc={rc} after {time.monotonic() - start:.2f}s")
        assert rc != 0 and codecs == []

        remote, _ = go_live_via(proxy.port, ingest, media, "REMOTE")
        assert hook.wait_for("publish", "REMOTE").form["addr"] == "127.0.0.2"
        assert remote.poll() is None
    finally:
        proxy.close()


def go_live_via(
    port: int, ingest: NginxIngest, media: Media, key: str
) -> tuple[subprocess.Popen[bytes], int]:
    proc = media.publish(rtmp_url(ingest, key, port=port))
    wait_until(lambda: key in live_publishers(ingest.http_base), 10, f"{key} live")
    return proc, live_publishers(ingest.http_base)[key]


@pytest.mark.media
def test_second_publisher_on_a_live_name_is_refused_by_nginx(
    ingest: NginxIngest, hook: HookServer, media: Media
) -> None:
    first, first_id = go_live(ingest, media, "KEY1")
    second = media.publish(rtmp_url(ingest, "KEY1"))
    rc, took = exit_within(second, timeout=5)
    _note(f"second publisher: rc={rc} after {took:.2f}s: {media.log_of(second).strip()!r}")
    assert rc != 0 and "Already publishing" in media.log_of(second)
    assert first.poll() is None
    assert live_publishers(ingest.http_base) == {"KEY1": first_id}

    # The hook was asked (and allowed it) before nginx refused; then nginx sends a
    # publish_done for the *refused* client while the first one is still live.
    publishes = hook.find("publish", "KEY1")
    assert len(publishes) == 2
    second_id = publishes[1].form["clientid"]
    assert second_id != str(first_id)
    done = hook.wait_for("publish_done", "KEY1", timeout=2)
    assert done.form["clientid"] == second_id


@pytest.mark.media
def test_stop_leaves_no_nginx_process(
    start_ingest: Callable[..., NginxIngest], hook: HookServer, media: Media
) -> None:
    ingest = start_ingest(hook_base_url=hook.base_url)
    publisher, _ = go_live(ingest, media, "KEY1")
    assert ingest.proc is not None
    master = ingest.proc.pid
    assert len(process_group(master)) == 2  # master + one worker
    start = time.monotonic()
    ingest.stop()
    _note(f"stop with a live publisher: {time.monotonic() - start:.2f}s")
    # SIGKILLed processes leave /proc (or turn zombie) a moment after stop() returns
    wait_until(lambda: process_group(master) == [], 2, "nginx gone")
    assert ingest.proc is None
    assert exit_within(publisher, timeout=5)[0] != 0
    time.sleep(0.3)
    assert not hook.find("publish_done")  # fast shutdown never reports the end

    # Even if the master dies uncleanly, stop() takes the orphaned worker down too.
    crashed = start_ingest(hook_base_url=hook.base_url)
    assert crashed.proc is not None
    master = crashed.proc.pid
    os.kill(master, signal.SIGKILL)
    crashed.proc.wait()
    assert len(process_group(master)) == 1  # the worker lives on
    crashed.stop()
    wait_until(lambda: process_group(master) == [], 2, "orphaned worker gone")
    crashed.stop()  # idempotent


@pytest.mark.media
def test_start_reports_a_port_clash(tmp_path: Path) -> None:
    _require_media()
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        port = squatter.getsockname()[1]
        cfg = IngestConfig(
            prefix=tmp_path / "clash",
            rtmp_port=port,
            rtmp_bind="127.0.0.1",
            http_port=free_port(),
            hook_base_url="http://127.0.0.1:9/agents/hooks/T",
        )
        ingest = NginxIngest(cfg, nginx=NGINX)
        try:
            # nginx retries a busy port for ~2.5s, while the squatter accepts our probes:
            # start() must not mistake that for readiness.
            with pytest.raises(RuntimeError, match="Address already in use"):
                ingest.start(timeout=5)
            assert ingest.proc is None
        finally:
            ingest.stop()


# --- hazards the control plane must handle (documented behaviour of nginx-rtmp) -----------


@pytest.mark.media
def test_publish_args_are_appended_raw_to_the_hook_form(
    ingest: NginxIngest, hook: HookServer, media: Media
) -> None:
    """RTMP args ("key?a=b") are pasted into the form unescaped, after nginx's fields, so a
    publisher can add a second ``name``. Django's QueryDict.get() returns the LAST value:
    the hook must use the first value (or reject duplicates), or an attacker holding key A
    can publish as stream B by sending "B?name=A"."""
    media.publish(rtmp_url(ingest, "VICTIM?name=ATTACKER&call=forged"))
    wait_until(lambda: "VICTIM" in live_publishers(ingest.http_base), 10, "VICTIM live")
    publish = hook.wait_for("publish")
    assert publish.keys == [*PUBLISH_FIELDS, "name", "call"]
    assert [v for k, v in publish.fields if k == "name"] == ["VICTIM", "ATTACKER"]
    assert [v for k, v in publish.fields if k == "call"] == ["publish", "forged"]


@pytest.mark.media
def test_redirect_answer_to_publish_accepts_and_renames(
    ingest: NginxIngest, hook: HookServer, media: Media
) -> None:
    """Any 3xx answer to on_publish ACCEPTS the publish, renamed to the Location header (an
    rtmp:// Location would even make nginx push the stream there). The hook must never
    redirect, e.g. no APPEND_SLASH-style 301 in Django."""
    hook.status["publish"] = 302
    hook.location["publish"] = "RENAMED"
    proc = media.publish(rtmp_url(ingest, "KEY1"))
    wait_until(lambda: "RENAMED" in live_publishers(ingest.http_base), 10, "RENAMED live")
    assert "KEY1" not in live_publishers(ingest.http_base)
    assert proc.poll() is None


def test_no_on_update_so_a_control_plane_outage_spares_live_streams() -> None:
    """Measured: a failed on_update drops the session whatever notify_update_strict says,
    so the node config has none; the agent vouches for publishers and drops revoked keys."""
    directives = [line.strip() for line in render_nginx_conf(SAMPLE).splitlines()]
    assert not [d for d in directives if d.startswith(("on_update", "notify_update"))]
