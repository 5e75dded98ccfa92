"""Snapshots (WCS's stream snapshot): the current picture of a live stream, decoded from
keyframes on the node that ingests it, while someone asks, without disturbing the relays."""

import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from tests.conftest import assert_error, client_for
from tests.factories import UserFactory
from tests.media.conftest import RigNode, relay_states
from tests.media.harness import Platform, ffmpeg_pids, picture_moves, stop, wait_until

pytestmark = [pytest.mark.media, pytest.mark.timeout(120)]

BOTH_LIVE = {"YouTube": "live", "Twitch": "live"}


def _size(jpeg: bytes, tmp_path: Path) -> str:
    path = tmp_path / f"picture-{time.monotonic_ns()}.jpg"
    path.write_bytes(jpeg)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
         "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return probe.stdout.strip()


def test_the_picture_of_a_live_stream(
    rig: RigNode, streamer: APIClient, youtube: Platform, twitch: Platform, live_stream: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    stream, publisher = live_stream
    url = f"/streams/{stream['id']}/snapshot"
    wait_until(lambda: relay_states(streamer, stream["id"]) == BOTH_LIVE, 15)
    asked = time.monotonic()
    first = streamer.get(url)
    took = time.monotonic() - asked
    assert first.status_code == 200, first.content
    documented = SchemaGenerator().get_schema(request=None, public=True)
    assert set(documented["paths"]["/streams/{stream_id}/snapshot"]["get"]["responses"]["200"][
        "content"]) == {first["Content-Type"]} == {"image/jpeg"}  # fmt: skip
    assert _size(first.content, tmp_path) == "mjpeg,640,360"  # the publisher's picture
    assert streamer.get(url).content == first.content  # within 2 s: the same picture
    time.sleep(2.2)
    assert streamer.get(url).content != first.content  # then a newer one

    # Many asking at once: one decoder for the stream, never more.
    time.sleep(2.2)
    decoders: list[int] = []
    answers: list[int] = []

    def ask() -> None:
        answers.append(streamer.get(url).status_code)

    askers = [threading.Thread(target=ask) for _ in range(4)]
    for thread in askers:
        thread.start()
    while any(thread.is_alive() for thread in askers):
        decoders.append(len(ffmpeg_pids("nokey", stream["streamKey"])))
        time.sleep(0.02)
    assert answers == [200] * 4 and max(decoders) <= 1

    # The relays never noticed.
    states = streamer.get(f"/streams/{stream['id']}/relays").json()["payload"]
    assert [relay["restarts"] for relay in states] == [0, 0]
    assert picture_moves(f"{youtube.base_url}/ytkey", tmp_path / "yt.flv")
    print(f"\n[snapshot] first picture after {took:.2f}s")

    other = client_for(UserFactory.create())
    missing = assert_error(other.get(url), 404, 1000)  # another tenant's stream
    assert missing == assert_error(other.get(f"/streams/{uuid.uuid4()}/snapshot"), 404, 1000)
    stop(publisher)
    wait_until(lambda: not streamer.get(f"/streams/{stream['id']}").json()["payload"][
        "isStreaming"], 15)  # fmt: skip
    assert_error(streamer.get(url), 409, 1013)
