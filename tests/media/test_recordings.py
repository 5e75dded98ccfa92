"""Recordings, end to end: the node records a live session as fragmented MP4 beside the relays;
the file downloads through the control plane (whole, or a byte range) and plays while it
grows; a full disk fails the recording and leaves restreaming untouched."""

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.media.conftest import RigNode, create_stream, relay_states
from tests.media.harness import Platform, picture_moves, stop, wait_until

pytestmark = [pytest.mark.media, pytest.mark.timeout(240)]


def recordings_of(client: APIClient, stream_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/streams/{stream_id}/recordings")
    assert response.status_code == 200, response.content
    return response.json()["payload"]


def download(client: APIClient, recording_id: str, out: Path, **headers: Any) -> Any:
    response: Any = client.get(f"/recordings/{recording_id}/download", **headers)
    if response.status_code in (200, 206):
        out.write_bytes(b"".join(response.streaming_content))
    return response


def duration(path: Path) -> float:
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
         str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return float(probe.stdout.strip() or 0)


def test_a_recorded_session_plays_while_it_grows_and_downloads_with_a_range(
    rig: RigNode, streamer: APIClient, youtube: Platform, tmp_path: Path
) -> None:
    stream = create_stream(streamer, YouTube="ytkey")
    response = streamer.patch(f"/streams/{stream['id']}", {"record": True}, format="json")
    assert response.json()["payload"]["record"] is True
    publisher = rig.publish(stream["streamKey"])
    started = time.monotonic()
    try:
        wait_until(lambda: "ytkey" in youtube.publishers(), 20)
        live = wait_until(lambda: recordings_of(streamer, stream["id"]), 15)
        assert live[0]["state"] == "recording" and live[0]["endedAt"] is None
        # Playable while it grows: what is written so far downloads and plays.
        time.sleep(8)
        growing = download(streamer, live[0]["id"], tmp_path / "growing.mp4")
        assert growing.status_code == 200
        assert duration(tmp_path / "growing.mp4") >= 4
        time.sleep(max(0.0, 21 - (time.monotonic() - started)))
    finally:
        stop(publisher)
    recording = wait_until(
        lambda: (r := recordings_of(streamer, stream["id"]))[0]["state"] == "done" and r[0], 20
    )
    assert len(recordings_of(streamer, stream["id"])) == 1
    print(f"recorded {recording['durationS']} s, {recording['bytes']} bytes")
    whole = download(streamer, recording["id"], tmp_path / "whole.mp4")
    assert whole.status_code == 200 and whole["Content-Type"] == "video/mp4"
    assert (
        int(whole["Content-Length"])
        == recording["bytes"]
        == (tmp_path / "whole.mp4").stat().st_size
    )
    played = duration(tmp_path / "whole.mp4")
    print(f"ffprobe reads {played:.1f} s of the 20-s session")
    assert 17 <= played <= 24 and abs(played - recording["durationS"]) < 2

    part = download(streamer, recording["id"], tmp_path / "part", HTTP_RANGE="bytes=100-1099")
    assert part.status_code == 206
    assert part["Content-Range"] == f"bytes 100-1099/{recording['bytes']}"
    assert (tmp_path / "part").read_bytes() == (tmp_path / "whole.mp4").read_bytes()[100:1100]
    beyond = streamer.get(
        f"/recordings/{recording['id']}/download", HTTP_RANGE=f"bytes={recording['bytes']}-"
    )
    assert beyond.status_code == 416 and beyond.json()["errorCode"] == 1005

    files = list((rig.root / "recordings").glob("*.mp4"))
    assert [f.stem for f in files] == [recording["id"]]
    deleted = streamer.delete(f"/recordings/{recording['id']}")
    assert deleted.status_code == 200, deleted.content
    assert not files[0].exists() and recordings_of(streamer, stream["id"]) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 1 MiB filesystem for the recordings (tmpfs: the test runs as root, like CI here)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_recording_and_restreaming_goes_on(
    rig_nodes: Callable[..., RigNode],
    streamer: APIClient,
    youtube: Platform,
    small_disk: Path,
    tmp_path: Path,
) -> None:
    node = rig_nodes("tiny", env={"RIG_RECORDINGS_DIR": str(small_disk)})
    stream = create_stream(streamer, YouTube="ytkey")
    streamer.patch(f"/streams/{stream['id']}", {"record": True}, format="json")
    node.publish(stream["streamKey"])
    wait_until(lambda: "ytkey" in youtube.publishers(), 20)
    failed = wait_until(
        lambda: (r := recordings_of(streamer, stream["id"])) and r[0]["state"] == "failed" and r[0],
        40,
    )
    print(f"recording failed: {failed['reason']}")
    assert "No space left on device" in failed["reason"]
    # Neither the stream key nor where the node keeps its files.
    assert stream["streamKey"] not in failed["reason"] and str(small_disk) not in failed["reason"]
    time.sleep(6)  # no new recording starts on a full disk
    assert len(recordings_of(streamer, stream["id"])) == 1
    assert relay_states(streamer, stream["id"]) == {"YouTube": "live"}
    assert picture_moves(f"{youtube.base_url}/ytkey", tmp_path / "yt.flv")
