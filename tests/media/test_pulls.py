"""Pulled sources, end to end: rig pulls a camera (GStreamer's RTSP server) or an RTMP server
into its ingest and fans it out to every destination, as it does a push; viewers at the
destinations decode the frames."""

import functools
import threading
import time
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.media.conftest import RigNode, create_stream, detail_of, relay_states
from tests.media.harness import (
    Camera,
    Platform,
    Proxy,
    ffmpeg_pids,
    free_port,
    picture_moves,
    publish,
    stop,
    tls_server_context,
    viewer_frames,
    wait_until,
)

pytestmark = [pytest.mark.media, pytest.mark.timeout(240)]


def source_of(client: APIClient, stream_id: str) -> dict:
    response = client.get(f"/streams/{stream_id}/source")
    assert response.status_code == 200, response.content
    return response.json()["payload"]


def pull(client: APIClient, stream_id: str, url: str | None) -> dict:
    response = client.patch(f"/streams/{stream_id}", {"pullUrl": url}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["payload"]


def test_rtsp_camera_is_pulled_fanned_out_and_survives_a_camera_restart(
    rig: RigNode, streamer: APIClient, youtube: Platform, twitch: Platform, tmp_path: Path
) -> None:
    camera = Camera(tmp_path).start()
    try:
        stream = create_stream(streamer, YouTube="ytkey", Twitch="twkey")
        shown = pull(streamer, stream["id"], camera.url("viewer:s3cret"))["pullUrl"]
        assert shown == camera.url("viewer:***")
        started = time.monotonic()
        wait_until(lambda: {"ytkey"} <= set(youtube.publishers()), 30)
        wait_until(lambda: {"twkey"} <= set(twitch.publishers()), 30)
        print(f"camera at both destinations after {time.monotonic() - started:.1f}s")
        for platform, key in ((youtube, "ytkey"), (twitch, "twkey")):
            assert picture_moves(f"{platform.base_url}/{key}", tmp_path / f"{key}.flv")
        wait_until(
            lambda: relay_states(streamer, stream["id"]) == {"YouTube": "live", "Twitch": "live"},
            15,
        )
        source = wait_until(
            lambda: (s := source_of(streamer, stream["id"]))["state"] == "live" and s, 15
        )
        assert source["node"] == "e2e"
        assert (source["fps"] or 0) > 20 and (source["bitrateKbps"] or 0) > 50
        assert "s3cret" not in str(source) and stream["streamKey"] not in str(source)
        detail = detail_of(streamer, stream["id"])
        assert detail["isStreaming"] is True

        # The camera dies and comes back: the pull reconnects, the destinations recover.
        camera.stop()
        wait_until(lambda: source_of(streamer, stream["id"])["state"] != "live", 20)
        camera.start()
        back = time.monotonic()
        wait_until(lambda: source_of(streamer, stream["id"])["state"] == "live", 40)
        wait_until(
            lambda: relay_states(streamer, stream["id"]) == {"YouTube": "live", "Twitch": "live"},
            30,
        )
        print(f"camera back at the destinations after {time.monotonic() - back:.1f}s")
        assert picture_moves(f"{youtube.base_url}/ytkey", tmp_path / "yt-again.flv")
        source = source_of(streamer, stream["id"])
        assert source["restarts"] >= 1 and source["log"]
        assert not any("s3cret" in line for line in source["log"])
    finally:
        camera.stop()


def test_rtmp_source_is_pulled_and_pushing_to_its_key_is_refused(
    rig: RigNode, streamer: APIClient, youtube: Platform, tmp_path: Path
) -> None:
    server = Platform(tmp_path, "src").start()
    upstream = publish(f"{server.base_url}/cam", tmp_path / "upstream.log")
    try:
        wait_until(lambda: "cam" in server.publishers(), 15)
        stream = create_stream(streamer, YouTube="ytkey")
        pull(streamer, stream["id"], f"{server.base_url}/cam")
        wait_until(lambda: "ytkey" in youtube.publishers(), 30)
        frames = viewer_frames(f"{youtube.base_url}/ytkey", tmp_path / "yt.flv")
        assert frames.get("video", 0) > 60 and frames.get("audio", 0) > 60, frames

        # OBS on a pull-mode key: nginx refuses it (the hook says 1009), the pull goes on.
        pushed = rig.publish(stream["streamKey"])
        assert pushed.wait(15) != 0
        assert "ytkey" in youtube.publishers()

        # A restart reconnects to the source (a new pull: live again, since a new time).
        before = wait_until(
            lambda: (s := source_of(streamer, stream["id"]))["state"] == "live" and s, 15
        )
        restarted = streamer.post(f"/streams/{stream['id']}/source/restart")
        assert restarted.status_code == 200, restarted.content
        wait_until(
            lambda: (
                (s := source_of(streamer, stream["id"]))["state"] == "live"
                and s["since"] != before["since"]
            ),
            20,
        )
        wait_until(lambda: "ytkey" in youtube.publishers(), 20)

        # Back to push mode: the pull stops, the session ends, and OBS may publish.
        pull(streamer, stream["id"], None)
        wait_until(lambda: not ffmpeg_pids("?pull="), 15)
        wait_until(lambda: detail_of(streamer, stream["id"])["isStreaming"] is False, 15)
        rig.publish(stream["streamKey"])
        wait_until(lambda: detail_of(streamer, stream["id"])["isStreaming"] is True, 20)
        wait_until(lambda: "ytkey" in youtube.publishers(), 30)
    finally:
        stop(upstream)
        server.stop()


@pytest.mark.parametrize("kind", ["srt", "hls", "rtmps"])
def test_srt_hls_and_rtmps_sources_are_pulled(
    kind: str, rig: RigNode, streamer: APIClient, youtube: Platform, tmp_path: Path
) -> None:
    """An SRT sender waiting for a caller (as an encoder in listener mode does), an HLS
    playlist on an HTTP server (a CDN's, a camera's), an RTMPS server: each reaches the
    destination."""
    server: ThreadingHTTPServer | None = None
    closing: list[Callable[[], None]] = []
    if kind == "rtmps":
        origin = Platform(tmp_path, "src").start()
        closing.append(origin.stop)
        upstream = publish(f"{origin.base_url}/cam", tmp_path / "upstream.log")
        tls = Proxy(free_port(), origin.rtmp_port, tls=tls_server_context(tmp_path))
        closing.append(tls.close)
        url = f"rtmps://127.0.0.1:{tls.port}/src/cam"
    elif kind == "srt":
        port = free_port()
        url = f"srt://127.0.0.1:{port}"
        upstream = publish(f"{url}?mode=listener", tmp_path / "upstream.log", muxer="mpegts")
    else:
        files = tmp_path / "hls"
        files.mkdir()
        upstream = publish(str(files / "index.m3u8"), tmp_path / "upstream.log", muxer="hls")
        handler = functools.partial(SimpleHTTPRequestHandler, directory=str(files))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/index.m3u8"
        wait_until(lambda: (files / "index.m3u8").exists(), 15)
    try:
        stream = create_stream(streamer, YouTube="ytkey")
        pull(streamer, stream["id"], url)
        wait_until(lambda: "ytkey" in youtube.publishers(), 40)
        frames = viewer_frames(f"{youtube.base_url}/ytkey", tmp_path / "yt.flv")
        assert frames.get("video", 0) > 60 and frames.get("audio", 0) > 60, frames
        # Live, at the source's frame rate once the first burst has settled.
        wait_until(lambda: (source_of(streamer, stream["id"])["fps"] or 0) > 20, 20)
        assert source_of(streamer, stream["id"])["pullUrl"] == url
    finally:
        stop(upstream)
        if server is not None:
            server.shutdown()
            server.server_close()
        for close in closing:
            close()
