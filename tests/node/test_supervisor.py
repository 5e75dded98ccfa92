"""Tests for agents.node.supervisor against real ffmpeg relays on loopback.

A private nginx-rtmp (its own prefix, pid, logs and a free port) has two applications: ``live``,
where an ffmpeg test pattern is published as the source, and ``dest``, which the relays push to
and ffprobe plays back from. Destinations that must come and go, or speak TLS, sit behind a
small in-process TCP/TLS proxy in front of ``dest``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from agents.node.relay import RelaySnapshot, RelaySpec, RelayState
from agents.node.supervisor import Supervisor
from tests.media.harness import INGEST, Platform, Proxy, alive, free_port, tls_server_context

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
FFPROBE = shutil.which("ffprobe") or "ffprobe"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
REPO = Path(__file__).resolve().parents[2]

# Small numbers so that every path (backoff, FAILED, stall) is reached within seconds.
FAST = {
    "backoff_initial": 0.3,
    "backoff_max": 1.0,
    "live_window": 2.5,
    "stall_timeout": 5.0,
    "failed_after": 3,
    "private_ok": True,  # every test destination is on loopback
}

T = TypeVar("T")


# --- helpers -------------------------------------------------------------------------------


def add(sup: Supervisor, spec: RelaySpec) -> None:
    """Add (or update) one relay and leave the others alone."""
    sup.reconcile([spec], scope=lambda _: False)


def remove(sup: Supervisor, relay_id: str) -> None:
    sup.reconcile([], scope=lambda other: other == relay_id)


def snapshot(sup: Supervisor, relay_id: str) -> RelaySnapshot:
    return {snap.relay_id: snap for snap in sup.states()}[relay_id]


def relay_ids(sup: Supervisor) -> set[str]:
    return {snap.relay_id for snap in sup.states()}


def wait_until(what: str, check: Callable[[], T | None], timeout: float) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        time.sleep(0.05)


def wait_state(
    sup: Supervisor,
    relay_id: str,
    state: RelayState,
    timeout: float,
    also: Callable[[RelaySnapshot], bool] = lambda _: True,
) -> RelaySnapshot:
    def check() -> RelaySnapshot | None:
        snap = snapshot(sup, relay_id)
        return snap if snap.state is state and also(snap) else None

    try:
        return wait_until(f"{relay_id} {state.value}", check, timeout)
    except AssertionError as error:
        snap = snapshot(sup, relay_id)
        log = "\n".join(snap.log[-15:])
        raise AssertionError(f"{error}\nnow: {snap.as_dict()}\nlog:\n{log}") from None


def probe(url: str) -> dict[str, tuple[str, int]]:
    """Play ``url`` for ~2 s of media: codec type -> (codec name, frames decoded)."""
    result = subprocess.run(
        [
            FFPROBE,
            *("-v", "error", "-rw_timeout", "5000000", "-read_intervals", "%+2"),
            *("-count_frames", "-show_entries", "stream=codec_type,codec_name,nb_read_frames"),
            *("-of", "json", url),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    streams = json.loads(result.stdout)["streams"]
    return {s["codec_type"]: (s["codec_name"], int(s.get("nb_read_frames", 0))) for s in streams}


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Recorder:
    """An ``on_change`` callback that keeps every snapshot it is given."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.snapshots: list[RelaySnapshot] = []

    def __call__(self, snapshot: RelaySnapshot) -> None:
        with self._lock:
            self.snapshots.append(snapshot)

    def states(self, relay_id: str) -> list[RelayState]:
        with self._lock:
            return [s.state for s in self.snapshots if s.relay_id == relay_id]


# --- fixtures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ingest:
    """The relays' source (`live`, with a test pattern published) and their destinations."""

    live: Platform
    sink: Platform

    @property
    def source(self) -> str:
        return f"{self.live.base_url}/src"

    @property
    def dest_port(self) -> int:
        return self.sink.rtmp_port

    def dest(self, key: str) -> str:
        return f"{self.sink.base_url}/{key}"


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    """Private nginx-rtmps: a test pattern (video + audio) on ``live/src``, and a sink."""
    if not (shutil.which(FFMPEG) and shutil.which(FFPROBE) and Path(NGINX).exists()):
        pytest.fail("needs ffmpeg, ffprobe and nginx: `make test` installs them")
    if not RTMP_MODULE.exists():
        pytest.fail("needs the nginx RTMP module: `make test` installs it")
    prefix = tmp_path_factory.mktemp("nginx")
    live, sink = Platform(prefix, "live", INGEST), Platform(prefix, "dest")
    publisher: subprocess.Popen[bytes] | None = None
    try:
        live.start()
        sink.start()
        ingest = Ingest(live, sink)
        with (prefix / "publisher.log").open("wb") as log:
            publisher = subprocess.Popen(
                [
                    FFMPEG,
                    *("-hide_banner", "-nostdin", "-loglevel", "error", "-re"),
                    *("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"),
                    *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
                    *("-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"),
                    # A one-second GOP keeps probing and keyframe waits short in the tests.
                    *("-g", "30", "-b:v", "1M", "-c:a", "aac", "-b:a", "96k"),
                    *("-f", "flv", ingest.source),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

        def publishing() -> bool:
            assert publisher is not None and publisher.poll() is None, "publisher died"
            try:
                return set(probe(ingest.source)) == {"video", "audio"}
            except AssertionError:
                return False

        wait_until("the test pattern to be live", publishing, 20)
        yield ingest
    finally:
        if publisher is not None:
            stop_process(publisher)
        live.stop()
        sink.stop()


def supervisors(fanout: bool) -> Iterator[Callable[..., Supervisor]]:
    """Supervisors with FAST settings, all shut down at the end whatever happened."""
    made: list[Supervisor] = []

    def make(**settings: object) -> Supervisor:
        sup = Supervisor(ffmpeg=FFMPEG, **{**FAST, "fanout": fanout, **settings})  # type: ignore[arg-type]
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.shutdown(timeout=3)


@pytest.fixture(params=[False, True], ids=["ffmpeg", "fanout"])
def make_supervisor(request: pytest.FixtureRequest) -> Iterator[Callable[..., Supervisor]]:
    """Either kind of relay: an ffmpeg each, or legs of the stream's fan-out (the agent's)."""
    yield from supervisors(request.param)


@pytest.fixture
def make_relay_supervisor() -> Iterator[Callable[..., Supervisor]]:
    """ffmpeg relays only: what a relay's own process does (killed, stopped, replaced)."""
    yield from supervisors(False)


@pytest.fixture
def make_fanout_supervisor() -> Iterator[Callable[..., Supervisor]]:
    yield from supervisors(True)


@pytest.fixture
def tls_context(tmp_path: Path) -> ssl.SSLContext:
    return tls_server_context(tmp_path)


# --- without media -------------------------------------------------------------------------


def test_bad_settings_and_twice_desired_relays() -> None:
    with pytest.raises(ValueError):
        Supervisor(backoff_initial=0)
    with pytest.raises(ValueError):
        Supervisor(backoff_initial=5, backoff_max=1)
    with pytest.raises(ValueError):
        Supervisor(failed_after=0)
    sup = Supervisor()
    with pytest.raises(ValueError):
        spec = RelaySpec("x", "rtmp://127.0.0.1:1/live/x", "rtmp://127.0.0.1:1/a/b")
        sup.reconcile([spec, spec])
    assert sup.states() == []
    sup.shutdown()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
def test_a_destination_that_now_points_inward_is_never_connected(host: str) -> None:
    """DNS rebinding: a Custom destination's name was public when it was saved and resolves
    to a private address now. The node does not connect (no port-scan oracle either)."""
    connections: list[object] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.1)
        port = server.getsockname()[1]
        sup = Supervisor(ffmpeg=FFMPEG, **{**FAST, "private_ok": False})  # type: ignore[arg-type]
        try:
            add(sup, RelaySpec("s:d", "rtmp://127.0.0.1:1/live/x", f"rtmp://{host}:{port}/a/k"))
            snap = wait_state(sup, "s:d", RelayState.FAILED, 10)
            for _ in range(25):  # 2.5 s: the destination probe would have knocked by now
                with contextlib.suppress(TimeoutError):
                    connections.append(server.accept())
        finally:
            sup.shutdown(timeout=3)
    assert connections == []
    assert snap.last_error == "destination now resolves to a private address: not connecting"
    assert snap.pid is None


@pytest.mark.media
def test_a_platform_that_keeps_refusing_is_given_up_until_ordered(
    ingest: Ingest, make_supervisor: Callable[..., Supervisor]
) -> None:
    """A destination that accepts the connection and drops the stream (a wrong key, say) is
    retried ``failed_after`` times; then the relay is FAILED and leaves the platform alone,
    until an order (here: a new spec, as a changed destination or a new session gives)."""
    connections: list[float] = []
    with socket.create_server(("127.0.0.1", 0)) as server:

        def refuse() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:  # the destination probe only connects; an attempt sends its handshake
                    conn.settimeout(2)
                    with contextlib.suppress(OSError):
                        if conn.recv(1):
                            connections.append(time.monotonic())

        threading.Thread(target=refuse, daemon=True).start()
        sup = make_supervisor()
        target = f"rtmp://127.0.0.1:{server.getsockname()[1]}/app/wrong-key"
        add(sup, RelaySpec("s:d", ingest.source, target))
        failed = wait_state(sup, "s:d", RelayState.FAILED, 20)
        assert "gave up after 3 attempts in a row" in failed.log[-1]
        assert len(connections) == 3 and failed.last_error
        time.sleep(3)  # three times the longest backoff
        assert len(connections) == 3
        assert snapshot(sup, "s:d").state is RelayState.FAILED
        add(sup, RelaySpec("s:d", ingest.source, target, generation=1))
        wait_until("a new attempt", lambda: len(connections) > 3, 10)
        sup.shutdown(timeout=3)


@pytest.mark.media
def test_a_shared_encoder_runs_on_a_node_that_refuses_private_addresses(
    ingest: Ingest, make_supervisor: Callable[..., Supervisor]
) -> None:
    """An encoder's both ends are on the node itself (its ingest): no address check applies,
    and it retries for as long as it is wanted instead of giving up."""
    sup = make_supervisor(private_ok=False)
    profile = (360, 15, 600, 96)
    encoder = RelaySpec(
        "encode:s:360", ingest.source, ingest.dest("enc"), transcode=profile, local=True,
        gives_up=False,
    )  # fmt: skip
    add(sup, encoder)
    wait_state(sup, "encode:s:360", RelayState.LIVE, 20)
    # Fed by it, a relay whose input is gone keeps retrying past failed_after.
    port = free_port()
    add(
        sup,
        RelaySpec("s:d", f"rtmp://127.0.0.1:{port}/encoded/x", ingest.dest("d"), gives_up=False),
    )
    time.sleep(5)  # at least five attempts with FAST's backoff (failed_after: 3)
    assert snapshot(sup, "s:d").state is RelayState.RECONNECTING
    assert snapshot(sup, "s:d").restarts >= 3


def test_missing_ffmpeg_is_retried_and_reported(tmp_path: Path) -> None:
    recorder = Recorder()
    sup = Supervisor(ffmpeg=str(tmp_path / "no-ffmpeg"), on_change=recorder, **FAST)  # type: ignore[arg-type]
    spec = RelaySpec("s:d", "rtmp://127.0.0.1:1/live/x", "rtmp://127.0.0.1:1/app/SeCrEt")
    try:
        add(sup, spec)
        snap = wait_state(sup, "s:d", RelayState.FAILED, 10)
        assert snap.last_error is not None and "could not start ffmpeg" in snap.last_error
        assert snap.restarts >= 2 and snap.pid is None
        # told after the state is set (by the relay's thread): it may trail the snapshot
        wait_until("FAILED to be told", lambda: RelayState.FAILED in recorder.states("s:d"), 2)
        assert recorder.states("s:d")[:3] == [
            RelayState.STARTING,
            RelayState.RECONNECTING,
            RelayState.FAILED,
        ]
        assert "SeCrEt" not in repr(snap)
    finally:
        sup.shutdown()
    assert snapshot(sup, "s:d").state is RelayState.STOPPED
    assert recorder.states("s:d")[-1] is RelayState.STOPPED
    with pytest.raises(RuntimeError):
        add(sup, RelaySpec("other", spec.source_url, spec.target_url))


# --- real relays ---------------------------------------------------------------------------


@pytest.mark.media
def test_relay_goes_live_and_destination_gets_video_and_audio(
    ingest: Ingest, make_supervisor: Callable[..., Supervisor]
) -> None:
    recorder = Recorder()
    sup = make_supervisor(on_change=recorder)
    add(sup, RelaySpec("s1:yt", ingest.source, ingest.dest("live-key-1")))
    snap = wait_state(sup, "s1:yt", RelayState.LIVE, 15)
    assert snap.pid is not None and alive(snap.pid)
    assert recorder.states("s1:yt") == [RelayState.STARTING, RelayState.LIVE]

    streams = probe(ingest.dest("live-key-1"))
    assert streams["video"][0] == "h264" and streams["video"][1] > 10
    assert streams["audio"][0] == "aac" and streams["audio"][1] > 10

    snap = wait_state(sup, "s1:yt", RelayState.LIVE, 8, also=lambda s: s.fps is not None)
    assert snap.bitrate_kbps is not None and 300 < snap.bitrate_kbps < 5000
    assert snap.fps is not None and 20 < snap.fps < 40  # the source's 30, not the start's burst
    assert snap.restarts == 0 and snap.last_error is None


@pytest.mark.media
def test_killed_relay_restarts_without_disturbing_another(
    ingest: Ingest, make_relay_supervisor: Callable[..., Supervisor]
) -> None:
    recorder = Recorder()
    sup = make_relay_supervisor(on_change=recorder)
    add(sup, RelaySpec("s1:a", ingest.source, ingest.dest("kill-a")))
    add(sup, RelaySpec("s1:b", ingest.source, ingest.dest("kill-b")))
    victim = wait_state(sup, "s1:a", RelayState.LIVE, 15)
    before = wait_state(sup, "s1:b", RelayState.LIVE, 15)
    assert victim.pid is not None

    killed_at = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    back = wait_state(
        sup, "s1:a", RelayState.LIVE, 10, also=lambda s: s.restarts == 1 and s.pid != victim.pid
    )
    recovery = time.monotonic() - killed_at
    assert recovery < 8, f"took {recovery:.1f}s"
    assert back.last_error is None  # recovered: the error is history, kept in the log
    assert any("SIGKILL; restarting in" in line for line in back.log)

    after = snapshot(sup, "s1:b")
    assert after.state is RelayState.LIVE and after.pid == before.pid and after.restarts == 0
    assert after.bytes_sent > before.bytes_sent
    assert recorder.states("s1:b") == [RelayState.STARTING, RelayState.LIVE]
    states_a = recorder.states("s1:a")
    assert states_a[-2:] == [RelayState.RECONNECTING, RelayState.LIVE]


@pytest.mark.media
def test_destination_down_fails_then_recovers_by_itself(
    ingest: Ingest,
    make_supervisor: Callable[..., Supervisor],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agents.node.lifecycle")
    recorder = Recorder()
    sup = make_supervisor(on_change=recorder, failed_after=2)
    key = "sk_live_0123456789abcdef"
    port = free_port()  # nothing listens here until the proxy below
    target = f"rtmp://127.0.0.1:{port}/dest/{key}?auth=tok3n"
    add(sup, RelaySpec("s1:down", ingest.source, target))

    wait_state(sup, "s1:down", RelayState.RECONNECTING, 15)
    failed = wait_state(sup, "s1:down", RelayState.FAILED, 20)
    assert failed.last_error is not None and "Connection refused" in failed.last_error

    proxy = Proxy(port, ingest.dest_port)
    try:
        live = wait_state(sup, "s1:down", RelayState.LIVE, 15)
        assert proxy.connections >= 1
        assert set(probe(ingest.dest(key))) == {"video", "audio"}
        states = recorder.states("s1:down")  # before the proxy goes (a leg sees that at once)
    finally:
        proxy.close()

    assert states[0] is RelayState.STARTING and states[-1] is RelayState.LIVE
    assert RelayState.RECONNECTING in states and RelayState.FAILED in states
    texts = [json.dumps(s.as_dict()) + "\n".join(s.log) for s in [*recorder.snapshots, live]]
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        for secret in (key, "tok3n", target):
            assert secret not in text
    assert any("/dest/***" in line for line in live.log)  # redacted, still useful


@pytest.mark.media
def test_a_destination_that_comes_back_is_retried_at_once_not_after_the_backoff(
    ingest: Ingest, make_supervisor: Callable[..., Supervisor]
) -> None:
    sup = make_supervisor(backoff_initial=60, backoff_max=60)
    port = free_port()  # nothing listens here until the proxy below
    add(sup, RelaySpec("s1:back", ingest.source, f"rtmp://127.0.0.1:{port}/dest/back"))
    waiting = wait_state(sup, "s1:back", RelayState.RECONNECTING, 15)
    assert "restarting in" in waiting.log[-1]  # a minute's backoff ahead of it
    time.sleep(1.5)  # the probe has seen the destination down
    proxy = Proxy(port, ingest.dest_port)
    try:
        back = wait_state(sup, "s1:back", RelayState.LIVE, 15)  # well within the minute
        assert any("destination answers again" in line for line in back.log)
        assert set(probe(ingest.dest("back"))) == {"video", "audio"}
    finally:
        proxy.close()


@pytest.mark.media
def test_muted_destination_gets_no_audio(
    ingest: Ingest, make_supervisor: Callable[..., Supervisor]
) -> None:
    sup = make_supervisor()
    add(sup, RelaySpec("s1:mute", ingest.source, ingest.dest("muted"), mute=True))
    wait_state(sup, "s1:mute", RelayState.LIVE, 15)
    streams = probe(ingest.dest("muted"))
    assert set(streams) == {"video"} and streams["video"][1] > 10


@pytest.mark.media
def test_rtmps_target(
    ingest: Ingest,
    make_supervisor: Callable[..., Supervisor],
    tls_context: ssl.SSLContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through a TLS endpoint whose certificate the node trusts (as a platform's is)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
    port = free_port()
    proxy = Proxy(port, ingest.dest_port, tls=tls_context)
    try:
        sup = make_supervisor()
        add(sup, RelaySpec("s1:tls", ingest.source, f"rtmps://localhost:{port}/dest/tls-key"))
        wait_state(sup, "s1:tls", RelayState.LIVE, 15)
        assert proxy.connections >= 1  # it really went through the TLS listener
        assert set(probe(ingest.dest("tls-key"))) == {"video", "audio"}
    finally:
        proxy.close()


@pytest.mark.media
def test_a_fanout_leg_refuses_a_certificate_it_cannot_verify(
    ingest: Ingest, make_fanout_supervisor: Callable[..., Supervisor], tls_context: ssl.SSLContext
) -> None:
    """The stream key goes only to the server the URL names: a self-signed certificate (a
    man in the middle, or a Custom server's own) is refused, and said so."""
    port = free_port()
    proxy = Proxy(port, ingest.dest_port, tls=tls_context)
    try:
        sup = make_fanout_supervisor()
        add(sup, RelaySpec("s1:tls", ingest.source, f"rtmps://localhost:{port}/dest/tls-key"))
        failed = wait_state(sup, "s1:tls", RelayState.FAILED, 15)
        assert "certificate verify failed" in (failed.last_error or "")
        assert "tls-key" not in (failed.last_error or "")
    finally:
        proxy.close()


@pytest.mark.media
def test_stalled_relay_degrades_then_is_restarted(
    ingest: Ingest, make_relay_supervisor: Callable[..., Supervisor]
) -> None:
    sup = make_relay_supervisor(live_window=1.5, stall_timeout=3.0)
    add(sup, RelaySpec("s1:stall", ingest.source, ingest.dest("stall")))
    snap = wait_state(sup, "s1:stall", RelayState.LIVE, 15)
    assert snap.pid is not None
    os.kill(snap.pid, signal.SIGSTOP)  # alive but silent: only the supervisor can notice
    try:
        degraded = wait_state(sup, "s1:stall", RelayState.RECONNECTING, 5)
        assert degraded.pid == snap.pid  # degraded before the process was killed
        back = wait_state(
            sup, "s1:stall", RelayState.LIVE, 15, also=lambda s: s.pid not in (None, snap.pid)
        )
    finally:
        if alive(snap.pid):
            os.kill(snap.pid, signal.SIGCONT)
    assert back.restarts == 1
    assert any(line.startswith("[supervisor] stalled") for line in back.log)
    assert not alive(snap.pid)


@pytest.mark.media
def test_update_and_reconcile(
    ingest: Ingest, make_relay_supervisor: Callable[..., Supervisor]
) -> None:
    sup = make_relay_supervisor()
    a = RelaySpec("s1:a", ingest.source, ingest.dest("upd-a"))
    b = RelaySpec("s1:b", ingest.source, ingest.dest("upd-b"))
    c = RelaySpec("s2:c", ingest.source, ingest.dest("upd-c"))
    sup.reconcile([a, b, c])
    pids: dict[str, int] = {}
    for relay_id in ("s1:a", "s1:b", "s2:c"):
        pid = wait_state(sup, relay_id, RelayState.LIVE, 15).pid
        assert pid is not None
        pids[relay_id] = pid

    add(sup, RelaySpec("s1:a", ingest.source, ingest.dest("upd-a")))  # equal: no restart
    time.sleep(0.5)  # a restart would have begun within one tick (0.2 s)
    assert snapshot(sup, "s1:a").pid == pids["s1:a"]
    assert snapshot(sup, "s1:a").state is RelayState.LIVE

    a2 = RelaySpec("s1:a", ingest.source, ingest.dest("upd-a2"))
    add(sup, a2)
    new_a = wait_state(sup, "s1:a", RelayState.LIVE, 15, also=lambda s: s.pid != pids["s1:a"])
    assert new_a.restarts == 0  # ordered, not a failure
    assert not alive(pids["s1:a"])
    assert snapshot(sup, "s1:b").pid == pids["s1:b"]
    assert snapshot(sup, "s2:c").pid == pids["s2:c"]

    d = RelaySpec("s1:d", ingest.source, ingest.dest("upd-d"))
    sup.reconcile([a2, d], scope=lambda relay_id: relay_id.startswith("s1:"))
    assert relay_ids(sup) == {"s1:a", "s1:d", "s2:c"}  # s2:c out of scope: kept
    wait_until("s1:b's ffmpeg to exit", lambda: not alive(pids["s1:b"]), 10)
    wait_state(sup, "s1:d", RelayState.LIVE, 15)
    assert snapshot(sup, "s1:a").pid == new_a.pid
    assert snapshot(sup, "s2:c").pid == pids["s2:c"]

    sup.reconcile([a2, d])  # no scope: everything not desired goes
    assert relay_ids(sup) == {"s1:a", "s1:d"}
    wait_until("s2:c's ffmpeg to exit", lambda: not alive(pids["s2:c"]), 10)
    assert snapshot(sup, "s1:d").state is RelayState.LIVE


@pytest.mark.media
def test_shutdown_leaves_no_ffmpeg_running(
    ingest: Ingest, make_relay_supervisor: Callable[..., Supervisor]
) -> None:
    sup = make_relay_supervisor()
    add(sup, RelaySpec("s1:x", ingest.source, ingest.dest("bye-x")))
    add(sup, RelaySpec("s1:y", ingest.source, ingest.dest("bye-y")))
    add(sup, RelaySpec("s1:z", ingest.source, "rtmp://127.0.0.1:1/dest/nowhere"))
    pids = [wait_state(sup, r, RelayState.LIVE, 15).pid for r in ("s1:x", "s1:y")]
    pids.append(wait_until("z's pid", lambda: snapshot(sup, "s1:z").pid, 10))
    remove(sup, "s1:y")  # removed relays are shut down too, even if still stopping
    started = time.monotonic()
    sup.shutdown(timeout=5)
    assert time.monotonic() - started < 6
    for pid in pids:
        assert pid is not None and not alive(pid)
    assert all(s.state is RelayState.STOPPED and s.pid is None for s in sup.states())


@pytest.mark.media
def test_legs_of_a_session_share_one_fanout_and_one_killed_spares_other_sessions(
    ingest: Ingest, make_fanout_supervisor: Callable[..., Supervisor]
) -> None:
    """One fan-out process per publish session: its legs come back together when it dies (a
    crash), another session's leg never notices."""
    recorder = Recorder()
    sup = make_fanout_supervisor(on_change=recorder)
    sup.reconcile(
        [
            RelaySpec("s1:a", ingest.source, ingest.dest("fan-a"), session="1"),
            RelaySpec("s1:b", ingest.source, ingest.dest("fan-b"), session="1"),
            RelaySpec("s2:c", ingest.source, ingest.dest("fan-c"), session="2"),
        ]
    )
    a, b, c = (wait_state(sup, r, RelayState.LIVE, 15) for r in ("s1:a", "s1:b", "s2:c"))
    assert a.pid is not None and a.pid == b.pid and c.pid not in (None, a.pid)
    command_line = Path(f"/proc/{a.pid}/cmdline").read_bytes()  # what `ps` shows every user
    assert b"fan-a" not in command_line and b"/live/src" not in command_line
    for key in ("fan-a", "fan-b", "fan-c"):
        assert set(probe(ingest.dest(key))) == {"video", "audio"}
    c_client = ingest.sink.publishers()["fan-c"][0]

    os.kill(a.pid, signal.SIGKILL)
    for relay_id in ("s1:a", "s1:b"):
        back = wait_state(
            sup, relay_id, RelayState.LIVE, 10, also=lambda s: s.pid not in (None, a.pid)
        )
        assert back.restarts == 1 and back.last_error is None
    after = snapshot(sup, "s2:c")
    assert after.state is RelayState.LIVE and after.pid == c.pid and after.restarts == 0
    assert recorder.states("s2:c") == [RelayState.STARTING, RelayState.LIVE]
    assert ingest.sink.publishers()["fan-c"][0] == c_client  # the same connection throughout


@pytest.mark.media
def test_a_leg_changed_muted_or_removed_leaves_the_others_connections_alone(
    ingest: Ingest, make_fanout_supervisor: Callable[..., Supervisor]
) -> None:
    sup = make_fanout_supervisor()
    a = RelaySpec("s1:a", ingest.source, ingest.dest("leg-a"))
    b = RelaySpec("s1:b", ingest.source, ingest.dest("leg-b"))
    sup.reconcile([a, b])
    first = wait_state(sup, "s1:a", RelayState.LIVE, 15)
    wait_state(sup, "s1:b", RelayState.LIVE, 15)
    b_client = ingest.sink.publishers()["leg-b"][0]

    add(sup, RelaySpec("s1:a", ingest.source, ingest.dest("leg-a2")))  # a changed destination
    wait_until("a at its new destination", lambda: "leg-a2" in ingest.sink.publishers(), 15)
    moved = wait_state(sup, "s1:a", RelayState.LIVE, 15)
    assert moved.restarts == 0 and moved.pid == first.pid  # ordered; the same fan-out
    assert set(probe(ingest.dest("leg-a2"))) == {"video", "audio"}

    unmuted = ingest.sink.publishers()["leg-a2"][0]
    add(sup, RelaySpec("s1:a", ingest.source, ingest.dest("leg-a2"), mute=True))
    muted = lambda: ingest.sink.publishers().get("leg-a2", (unmuted,))[0] != unmuted  # noqa: E731
    wait_until("a to reconnect muted", muted, 15)
    wait_state(sup, "s1:a", RelayState.LIVE, 15)
    streams = probe(ingest.dest("leg-a2"))
    assert set(streams) == {"video"} and streams["video"][1] > 10

    remove(sup, "s1:a")
    wait_until("a to unpublish", lambda: "leg-a2" not in ingest.sink.publishers(), 10)
    assert ingest.sink.publishers()["leg-b"][0] == b_client
    assert snapshot(sup, "s1:b").restarts == 0
    assert set(probe(ingest.dest("leg-b"))) == {"video", "audio"}

    remove(sup, "s1:b")  # the session's last leg: its process ends a few seconds later
    pid = first.pid
    assert pid is not None
    wait_until("the idle fan-out to exit", lambda: not alive(pid), 15)


@pytest.mark.media
def test_a_stopped_fanout_is_killed_and_its_legs_start_again(
    ingest: Ingest, make_fanout_supervisor: Callable[..., Supervisor]
) -> None:
    sup = make_fanout_supervisor(stall_timeout=3.0)  # a leg reports every second
    add(sup, RelaySpec("s1:stall", ingest.source, ingest.dest("fan-stall")))
    pid = wait_state(sup, "s1:stall", RelayState.LIVE, 15).pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # alive but silent: only the agent can notice
    try:
        wait_state(sup, "s1:stall", RelayState.RECONNECTING, 5)
        back = wait_state(
            sup, "s1:stall", RelayState.LIVE, 15, also=lambda s: s.pid not in (None, pid)
        )
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGCONT)
    assert back.restarts >= 1
    wait_until("the stopped fan-out to be gone", lambda: not alive(pid), 5)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.media
def test_shutdown_leaves_no_fanout_running(
    ingest: Ingest, make_fanout_supervisor: Callable[..., Supervisor]
) -> None:
    sup = make_fanout_supervisor()
    add(sup, RelaySpec("s1:x", ingest.source, ingest.dest("fan-bye-x")))
    add(sup, RelaySpec("s1:y", ingest.source, "rtmp://127.0.0.1:1/dest/nowhere"))
    pid = wait_state(sup, "s1:x", RelayState.LIVE, 15).pid
    assert pid is not None
    assert not children(pid)  # it plays the stream itself: no reader process
    started = time.monotonic()
    sup.shutdown(timeout=5)
    assert time.monotonic() - started < 6
    wait_until("the fan-out to exit", lambda: not alive(pid), 2)
    assert all(s.state is RelayState.STOPPED and s.pid is None for s in sup.states())


@pytest.mark.media
@pytest.mark.parametrize("fanout", [False, True], ids=["ffmpeg", "fanout"])
def test_children_die_with_the_agent(fanout: bool) -> None:
    """The agent dies without shutdown(): PR_SET_PDEATHSIG must take its ffmpeg (or fan-out)
    down.

    The source and the destination accept the connection and never answer, so the relay sits
    quietly in its RTMP handshakes: nothing but the death signal would end it within the 10 s
    read timeout (it writes nothing, so it cannot die of a broken pipe either). A destination
    that refused would end a fan-out leg's attempt at once, and its pid with it, between polls.
    """
    with (
        socket.create_server(("127.0.0.1", 0)) as silent,
        socket.create_server(("127.0.0.1", 0)) as deaf,
    ):
        source = f"rtmp://127.0.0.1:{silent.getsockname()[1]}/live/src"
        destination = f"rtmp://127.0.0.1:{deaf.getsockname()[1]}/dest/orphan"
        script = f"""
import os, time
from pathlib import Path
from agents.node.relay import RelaySpec
from agents.node.supervisor import Supervisor
from tests.node.test_supervisor import add, children, snapshot
sup = Supervisor(ffmpeg={FFMPEG!r}, private_ok=True, fanout={fanout!r})
add(sup, RelaySpec("s:d", {source!r}, {destination!r}))
deadline = time.monotonic() + 10
while snapshot(sup, "s:d").pid is None and time.monotonic() < deadline:
    time.sleep(0.05)
pid = snapshot(sup, "s:d").pid
time.sleep(0.3)  # let it get into its handshake
print(pid, *children(pid), flush=True)
os._exit(0)
"""
        agent = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        pids = [int(pid) for pid in agent.stdout.split()]
        assert len(pids) == 1, agent.stdout  # a fan-out has no child: it plays the stream
        try:
            wait_until(f"orphans {pids} to die", lambda: not any(map(alive, pids)), 2)
        finally:
            for pid in pids:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
