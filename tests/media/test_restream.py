"""OBS pushes once; rig restreams live to every active destination, each leg isolated.

Everything here is real: nginx-rtmp ingest and platforms, ffmpeg publisher, relays and viewers,
the API over HTTP, Celery on Redis, and the agent as its own process. Assertions are what a
viewer at each destination would see."""

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.node.ingest import drop_publisher
from tests.media.conftest import RigNode, create_stream, detail_of, relay_states
from tests.media.harness import (
    Platform,
    ffmpeg_pids,
    free_port,
    kill,
    relay_pids,
    stop,
    video_size,
    viewer_frames,
    wait_until,
)

pytestmark = [pytest.mark.media, pytest.mark.timeout(240)]


def _sees_audio_and_video(platform: Platform, key: str, out: Path) -> bool:
    frames = viewer_frames(f"{platform.base_url}/{key}", out)
    return frames.get("video", 0) > 10 and frames.get("audio", 0) > 10


def test_publish_fans_out_to_both_and_ends_cleanly(
    rig: RigNode, streamer: APIClient, youtube: Platform, twitch: Platform, live_stream, tmp_path
) -> None:
    stream, publisher = live_stream
    assert _sees_audio_and_video(youtube, "ytkey", tmp_path / "yt.flv")
    assert _sees_audio_and_video(twitch, "twkey", tmp_path / "tw.flv")
    wait_until(
        lambda: relay_states(streamer, stream["id"]) == {"YouTube": "live", "Twitch": "live"}, 15
    )

    def measured() -> dict[str, Any] | None:
        detail = detail_of(streamer, stream["id"])
        relays = detail["provisionStatus"]["destinations"]
        ok = all((r["bitrateKbps"] or 0) > 100 and (r["fps"] or 0) > 20 for r in relays)
        return detail if ok else None

    detail = wait_until(measured, 15)
    assert detail["isStreaming"] is True
    status = detail["provisionStatus"]
    assert status["state"] == "live"
    assert status["node"] == "e2e"
    for relay in status["destinations"]:
        assert relay["bytesSent"] > 0
        assert "key" not in (relay["lastError"] or "")

    publisher.terminate()  # the streamer stops
    publisher.wait(10)
    ended = time.monotonic()
    wait_until(lambda: not relay_pids(stream["streamKey"], rig.ingest.cfg), 10)
    stopped_after = time.monotonic() - ended
    detail = wait_until(
        lambda: (d := detail_of(streamer, stream["id"]))["isStreaming"] is False and d, 10
    )
    assert detail["provisionStatus"]["state"] == "stopped"
    assert detail["provisionStatus"]["reason"] == "publisher disconnected"
    # Ended at once (a relay on a quiet input needs its second signal), not SIGKILLed at 3 s.
    assert stopped_after < 2.5, f"relays outlived the stream by {stopped_after:.1f}s"


def test_refused_publishers_and_the_live_one_keeps_going(
    rig: RigNode, streamer: APIClient, youtube: Platform, live_stream, tmp_path
) -> None:
    stream, publisher = live_stream
    rotated = create_stream(streamer)
    streamer.post(f"/streams/{rotated['id']}/changeKey")
    inactive = create_stream(streamer)
    streamer.patch(f"/streams/{inactive['id']}", {"isActive": False}, format="json")

    refused = {
        "unknown key": rig.publish("no-such-key"),
        "rotated key": rig.publish(rotated["streamKey"]),
        "deactivated": rig.publish(inactive["streamKey"]),
        "second publisher": rig.publish(stream["streamKey"]),
    }
    for name, process in refused.items():
        assert process.wait(20) != 0, f"{name} was let in"
    assert publisher.poll() is None  # the live publisher was never disturbed
    for other in (rotated, inactive):
        assert detail_of(streamer, other["id"])["isStreaming"] is False
    assert _sees_audio_and_video(youtube, "ytkey", tmp_path / "yt.flv")


def test_a_dropped_leg_comes_back_and_the_other_never_stops(
    rig: RigNode, streamer: APIClient, youtube: Platform, twitch: Platform, live_stream, tmp_path
) -> None:
    """Twitch drops rig's connection (a platform's server restarting): that leg is back within
    seconds and YouTube's connection never notices. Then the stream's relay process dies (a
    crash): every leg is back within seconds."""
    stream, _ = live_stream
    yt_client, yt_bytes = youtube.publishers()["ytkey"]
    tw_client, _ = twitch.publishers()["twkey"]
    assert drop_publisher(f"http://127.0.0.1:{twitch.http_port}", "twkey", app=twitch.app)
    dropped = time.monotonic()
    wait_until(lambda: twitch.publishers().get("twkey", (tw_client,))[0] != tw_client, 10, 0.1)
    back_after = time.monotonic() - dropped
    print(f"\n[leg dropped by the platform] the platform had it back after {back_after:.1f}s")
    assert _sees_audio_and_video(twitch, "twkey", tmp_path / "tw.flv")
    assert back_after < 5, f"leg back after {back_after:.1f}s"
    client, bytes_now = youtube.publishers()["ytkey"]
    assert client == yt_client and bytes_now > yt_bytes  # YouTube's leg never reconnected

    def all_live() -> list[dict[str, Any]] | None:
        relays = detail_of(streamer, stream["id"])["provisionStatus"]["destinations"]
        return relays if all(r["state"] == "live" for r in relays) else None

    relays = wait_until(all_live, 15)
    assert {r["service"]: r["restarts"] for r in relays} == {"YouTube": 0, "Twitch": 1}

    [pid] = relay_pids(
        stream["streamKey"], rig.ingest.cfg
    )  # the stream's fan-out: one process for both legs
    clients = {"yt": client, "tw": twitch.publishers()["twkey"][0]}
    kill(pid)
    killed = time.monotonic()
    wait_until(lambda: youtube.publishers().get("ytkey", (client,))[0] != clients["yt"], 10, 0.1)
    wait_until(lambda: twitch.publishers().get("twkey", (client,))[0] != clients["tw"], 10, 0.1)
    back_after = time.monotonic() - killed
    print(f"[relay process killed] both platforms had it back after {back_after:.1f}s")
    assert back_after < 5, f"legs back after {back_after:.1f}s"
    assert _sees_audio_and_video(youtube, "ytkey", tmp_path / "yt.flv")
    assert _sees_audio_and_video(twitch, "twkey", tmp_path / "tw-after.flv")
    assert relay_pids(stream["streamKey"], rig.ingest.cfg) != [pid]


def test_destination_down_then_back_reconnects_by_itself(
    rig: RigNode, streamer: APIClient, youtube: Platform, twitch: Platform, live_stream, tmp_path
) -> None:
    stream, _ = live_stream
    yt_client, _ = youtube.publishers()["ytkey"]
    twitch.stop()  # Twitch ingest goes away for a while
    wait_until(lambda: relay_states(streamer, stream["id"]).get("Twitch") != "live", 20)
    detail = detail_of(streamer, stream["id"])
    assert detail["provisionStatus"]["state"] == "degraded"
    time.sleep(4)
    twitch.start()
    wait_until(lambda: "twkey" in twitch.publishers(), 20)
    assert _sees_audio_and_video(twitch, "twkey", tmp_path / "tw.flv")
    assert youtube.publishers()["ytkey"][0] == yt_client  # YouTube never noticed
    twitch_status = next(
        d
        for d in detail_of(streamer, stream["id"])["provisionStatus"]["destinations"]
        if d["service"] == "Twitch"
    )
    assert "twkey" not in (twitch_status["lastError"] or "")


def test_add_and_disable_destination_mid_stream(
    rig: RigNode, streamer: APIClient, youtube: Platform, twitch: Platform, tmp_path
) -> None:
    stream = create_stream(streamer, YouTube="ytkey")
    rig.publish(stream["streamKey"])
    wait_until(lambda: "ytkey" in youtube.publishers(), 20)
    yt_client, _ = youtube.publishers()["ytkey"]

    added_at = time.monotonic()
    response = streamer.post(
        f"/streams/{stream['id']}/destination",
        {"service": "Twitch", "streamKey": "addedkey"},
        format="json",
    )
    destination_id = response.json()["payload"]["id"]
    wait_until(lambda: "addedkey" in twitch.publishers(), 10, 0.05)
    print(f"added destination receiving after {time.monotonic() - added_at:.2f}s")
    assert _sees_audio_and_video(twitch, "addedkey", tmp_path / "added.flv")

    streamer.patch(
        f"/streams/{stream['id']}/destinations/{destination_id}",
        {"isActive": False},
        format="json",
    )
    wait_until(lambda: "addedkey" not in twitch.publishers(), 10, 0.05)
    assert youtube.publishers()["ytkey"][0] == yt_client  # untouched throughout
    assert relay_states(streamer, stream["id"])["Twitch"] == "disabled"


REVOCATIONS = {
    "changeKey": lambda c, sid: c.post(f"/streams/{sid}/changeKey"),
    "deactivate": lambda c, sid: c.patch(f"/streams/{sid}", {"isActive": False}, format="json"),
    "delete": lambda c, sid: c.delete(f"/streams/{sid}"),
}


@pytest.mark.parametrize("action", list(REVOCATIONS))
def test_revoking_a_live_stream_drops_the_publisher(
    rig: RigNode, streamer: APIClient, live_stream, action: str
) -> None:
    stream, publisher = live_stream
    revoked_at = time.monotonic()
    assert REVOCATIONS[action](streamer, stream["id"]).status_code == 200
    publisher.wait(10)  # documented bound: the agent's next poll (5 s); the nudge is sooner
    print(f"{action}: publisher dropped {time.monotonic() - revoked_at:.2f}s later")
    wait_until(lambda: not relay_pids(stream["streamKey"], rig.ingest.cfg), 10)
    if action != "delete":
        detail = detail_of(streamer, stream["id"])
        assert detail["isStreaming"] is False
        reason = {"changeKey": "stream key changed", "deactivate": "stream deactivated"}[action]
        assert detail["provisionStatus"]["reason"] == reason


def test_agent_restart_resumes_relays_and_leaves_no_orphans(
    rig: RigNode, streamer: APIClient, youtube: Platform, twitch: Platform, live_stream, tmp_path
) -> None:
    stream, _ = live_stream
    rig.stop_agent(signal.SIGTERM)
    assert not relay_pids(stream["streamKey"], rig.ingest.cfg)  # no orphan after a stop
    rig.start_agent()
    wait_until(lambda: {"ytkey"} <= set(youtube.publishers()), 20)
    wait_until(lambda: {"twkey"} <= set(twitch.publishers()), 20)
    assert _sees_audio_and_video(youtube, "ytkey", tmp_path / "yt.flv")
    rig.stop_agent(signal.SIGKILL)  # even a hard kill takes its relays with it
    wait_until(lambda: not relay_pids(stream["streamKey"], rig.ingest.cfg), 5)


def test_custom_srt_destination_gets_the_stream_beside_rtmp(
    rig: RigNode, streamer: APIClient, youtube: Platform, tmp_path
) -> None:
    """An SRT server (a listener, as SRT ingests are) receives MPEG-TS with the key as its
    streamid; the RTMP destination beside it is untouched."""
    port = free_port()
    out = tmp_path / "srt.ts"
    # The listener takes one caller and records 6 s of it.
    listener = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
         "-i", f"srt://127.0.0.1:{port}?mode=listener", "-t", "6", "-map", "0", "-c", "copy",
         "-f", "mpegts", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        stream = create_stream(streamer, YouTube="ytkey")
        response = streamer.post(
            f"/streams/{stream['id']}/destination",
            {
                "service": "Custom",
                "streamKey": "srt-secret",
                "serverUrl": f"srt://127.0.0.1:{port}",
            },
            format="json",
        )
        assert response.status_code == 200, response.content
        rig.publish(stream["streamKey"])
        wait_until(
            lambda: relay_states(streamer, stream["id"]) == {"YouTube": "live", "Custom": "live"},
            30,
        )
        listener.wait(40)
    finally:
        stop(listener)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_type,codec_name,nb_read_frames", "-of", "csv=p=0", str(out)],
        timeout=30, check=False, capture_output=True, text=True,
    )  # fmt: skip
    kinds = {line.split(",")[1]: line for line in probe.stdout.split()}
    assert set(kinds) == {"video", "audio"}, probe.stdout
    assert kinds["video"].startswith("h264,") and int(kinds["video"].split(",")[2]) > 60
    assert _sees_audio_and_video(youtube, "ytkey", tmp_path / "yt.flv")
    # The key never shows in what the user and the webhooks see.
    relays = streamer.get(f"/streams/{stream['id']}/relays").json()["payload"]
    assert "srt-secret" not in str(relays)


def test_a_transcoded_destination_gets_its_profile_and_the_copy_is_untouched(
    rig: RigNode, streamer: APIClient, youtube: Platform, twitch: Platform, tmp_path
) -> None:
    """OBS sends 720p30; Twitch's destination and a Custom one ask for 360p at 15 fps and
    share one encoder; YouTube's copies."""
    stream = create_stream(streamer, YouTube="ytkey")
    profile = {"height": 360, "fps": 15, "videoBitrateKbps": 600, "audioBitrateKbps": 96}
    server = f"rtmp://127.0.0.1:{twitch.rtmp_port}/{twitch.app}"
    for destination in (
        {"service": "Twitch", "streamKey": "twkey"},
        {"service": "Custom", "streamKey": "otherkey", "serverUrl": server},
    ):
        response = streamer.post(
            f"/streams/{stream['id']}/destination",
            {**destination, "transcode": profile},
            format="json",
        )
        assert response.status_code == 200, response.content
    rig.publish(stream["streamKey"], video_bitrate="2500k")  # 1280x720
    wait_until(lambda: {"ytkey"} <= set(youtube.publishers()), 20)
    wait_until(lambda: {"twkey", "otherkey"} <= set(twitch.publishers()), 20)
    encoders = ffmpeg_pids("libx264", f"/encoded/{stream['streamKey']}")
    assert len(encoders) == 1, f"{len(encoders)} encoders for one profile"
    yt_client, _ = youtube.publishers()["ytkey"]
    width, height, rate = video_size(f"{youtube.base_url}/ytkey", tmp_path / "yt.flv")
    assert (width, height) == (1280, 720) and rate > 25
    width, height, rate = video_size(f"{twitch.base_url}/twkey", tmp_path / "tw.flv")
    print(f"transcoded destination sees {width}x{height} at {rate:.1f} fps")
    assert (width, height) == (640, 360) and 13 <= rate <= 16
    assert _sees_audio_and_video(twitch, "twkey", tmp_path / "tw-av.flv")
    assert video_size(f"{twitch.base_url}/otherkey", tmp_path / "other.flv")[:2] == (640, 360)
    everyone = {"YouTube": "live", "Twitch": "live", "Custom": "live"}
    wait_until(lambda: relay_states(streamer, stream["id"]) == everyone, 15)
    assert youtube.publishers()["ytkey"][0] == yt_client  # the copy never restarted
