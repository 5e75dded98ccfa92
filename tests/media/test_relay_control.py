"""The relay control API on a live stream: restart one relay, mute and unmute one destination,
read its log; the other destination is never disturbed."""

import pytest
from rest_framework.test import APIClient

from tests.media.conftest import RigNode, relay_states
from tests.media.harness import Platform, viewer_frames, wait_until

pytestmark = [pytest.mark.media, pytest.mark.timeout(240)]


def test_restart_mute_and_log_of_one_relay(
    rig: RigNode, streamer: APIClient, youtube: Platform, twitch: Platform, live_stream, tmp_path
) -> None:
    stream, _ = live_stream
    relays = f"/streams/{stream['id']}/relays"
    yt, tw = stream["destinationIds"]["YouTube"], stream["destinationIds"]["Twitch"]
    wait_until(
        lambda: relay_states(streamer, stream["id"]) == {"YouTube": "live", "Twitch": "live"}, 20
    )
    yt_client, _ = youtube.publishers()["ytkey"]
    tw_client, _ = twitch.publishers()["twkey"]

    response = streamer.post(f"{relays}/{yt}/restart")
    assert response.status_code == 200, response.content
    wait_until(lambda: youtube.publishers().get("ytkey", (yt_client,))[0] != yt_client, 10, 0.1)
    assert twitch.publishers()["twkey"][0] == tw_client  # Twitch's leg was not touched
    yt_client, _ = youtube.publishers()["ytkey"]

    assert streamer.post(f"{relays}/{tw}/mute").json()["payload"]["isMuted"] is True
    wait_until(lambda: twitch.publishers().get("twkey", (tw_client,))[0] != tw_client, 10, 0.1)
    muted = viewer_frames(f"{twitch.base_url}/twkey", tmp_path / "tw-muted.flv")
    assert muted.get("video", 0) > 10 and muted.get("audio", 0) == 0
    kept = viewer_frames(f"{youtube.base_url}/ytkey", tmp_path / "yt.flv")
    assert kept.get("video", 0) > 10 and kept.get("audio", 0) > 10
    assert youtube.publishers()["ytkey"][0] == yt_client

    tw_client, _ = twitch.publishers()["twkey"]
    assert streamer.post(f"{relays}/{tw}/unmute").json()["payload"]["isMuted"] is False
    wait_until(lambda: twitch.publishers().get("twkey", (tw_client,))[0] != tw_client, 10, 0.1)
    back = viewer_frames(f"{twitch.base_url}/twkey", tmp_path / "tw-back.flv")
    assert back.get("video", 0) > 10 and back.get("audio", 0) > 10

    detail = wait_until(
        lambda: (d := streamer.get(f"{relays}/{tw}").json()["payload"])["log"] and d, 10
    )
    assert detail["state"] in {"starting", "live"}
    assert not any("twkey" in line for line in detail["log"])
