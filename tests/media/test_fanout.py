"""The one-process fan-out (agents.node.fanout) against real servers: nginx-rtmp as the ingest
and as the destinations, ffmpeg as the publisher and the viewers, a TLS endpoint for RTMPS.
What a viewer at each destination decodes is what is asserted; `youtube` (tests/media/conftest)
is the destinations' nginx-rtmp."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.media.harness import (
    INGEST,
    Platform,
    Proxy,
    free_port,
    publish,
    stop,
    tls_server_context,
    viewer_frames,
)

pytestmark = [pytest.mark.media, pytest.mark.timeout(120)]


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(tmp_path, "live", list(INGEST)).start()
    publisher = publish(f"{platform.base_url}/src", tmp_path / "publisher.log")
    yield platform
    stop(publisher)
    platform.stop()


def fanout(source: str, *targets: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agents.node.fanout", source, *targets],
        cwd=ROOT,
        env=env,
    )


def _decodes(url: str, out: Path) -> bool:
    frames = viewer_frames(url, out)
    return frames.get("video", 0) > 30 and frames.get("audio", 0) > 30


def test_every_destination_decodes_audio_and_video(
    ingest: Platform, youtube: Platform, tmp_path: Path
) -> None:
    process = fanout(f"{ingest.base_url}/src", f"{youtube.base_url}/a", f"{youtube.base_url}/b")
    try:
        assert _decodes(f"{youtube.base_url}/a", tmp_path / "a.flv")
        assert _decodes(f"{youtube.base_url}/b", tmp_path / "b.flv")
    finally:
        stop(process)


def test_a_refusing_destination_leaves_the_others_live(
    ingest: Platform, youtube: Platform, tmp_path: Path
) -> None:
    nobody = f"rtmp://127.0.0.1:{free_port()}/app/key"  # nothing listens there
    wrong_app = f"rtmp://127.0.0.1:{youtube.rtmp_port}/nosuchapp/key"  # nginx refuses it
    hangs_up = Proxy(free_port(), free_port())  # accepts, then closes: nothing behind it
    process = fanout(
        f"{ingest.base_url}/src",
        nobody,
        wrong_app,
        f"rtmp://127.0.0.1:{hangs_up.port}/app/key",
        f"{youtube.base_url}/ok",
    )
    try:
        assert _decodes(f"{youtube.base_url}/ok", tmp_path / "ok.flv")
        assert process.poll() is None
        assert hangs_up.connections >= 2  # the leg keeps trying, a second apart
    finally:
        stop(process)
        hangs_up.close()


def test_a_destination_that_stops_reading_holds_nobody_back(
    ingest: Platform, youtube: Platform, tmp_path: Path
) -> None:
    proxy = Proxy(free_port(), youtube.rtmp_port)
    hung = f"rtmp://127.0.0.1:{proxy.port}/yt/hung"
    process = fanout(f"{ingest.base_url}/src", hung, f"{youtube.base_url}/ok")
    try:
        assert _decodes(f"{youtube.base_url}/hung", tmp_path / "before.flv")
        proxy.stop_reading()  # the platform hangs: the connection stays open, nothing is read
        assert _decodes(f"{youtube.base_url}/ok", tmp_path / "ok.flv")
        assert process.poll() is None
    finally:
        stop(process)
        proxy.close()


def test_an_rtmps_destination_gets_the_stream_over_verified_tls(
    ingest: Platform, youtube: Platform, tmp_path: Path
) -> None:
    context = tls_server_context(tmp_path)
    proxy = Proxy(free_port(), youtube.rtmp_port, tls=context)
    env = {"SSL_CERT_FILE": str(tmp_path / "cert.pem"), "PATH": "/usr/bin:/bin"}
    process = fanout(f"{ingest.base_url}/src", f"rtmps://localhost:{proxy.port}/yt/tls", env=env)
    try:
        assert _decodes(f"{youtube.base_url}/tls", tmp_path / "tls.flv")
        assert proxy.connections >= 1
    finally:
        stop(process)
        proxy.close()


def test_ffmpeg_as_the_destination_server_takes_the_stream(
    ingest: Platform, tmp_path: Path
) -> None:
    port, out = free_port(), tmp_path / "served.flv"
    server = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-listen", "1",
         "-i", f"rtmp://127.0.0.1:{port}/app/key", "-t", "4", "-c", "copy", "-y", str(out)],
    )  # fmt: skip
    process = fanout(f"{ingest.base_url}/src", f"rtmp://127.0.0.1:{port}/app/key")
    try:
        server.wait(30)
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
             "stream=codec_type,nb_read_frames", "-of", "csv=p=0", str(out)],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        frames = dict(line.split(",") for line in probe.stdout.split())
        assert int(frames["video"]) > 60 and int(frames["audio"]) > 60
    finally:
        stop(server)
        stop(process)
