"""Webhooks from a real session: a receiver on loopback gets signed events as a real relay goes
live, loses its platform, recovers, and as the streamer stops, all delivered by the worker."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.media.conftest import RigNode, create_stream, detail_of, relay_states
from tests.media.harness import Platform, wait_until
from tests.test_webhooks_delivery import Receiver, verify

pytestmark = [pytest.mark.media, pytest.mark.timeout(240)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def _events(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    events = []
    for headers, body in list(receiver.requests):
        assert verify(secret, headers, body), "a delivery with a bad signature"
        events.append(json.loads(body))
    return events


def _names(receiver: Receiver, secret: str) -> list[tuple[str, Any]]:
    return [(e["event"], e["data"].get("service")) for e in _events(receiver, secret)]


def test_a_session_as_webhooks_tell_it(
    rig: RigNode, streamer: APIClient, youtube: Platform, twitch: Platform, receiver: Receiver
) -> None:
    hook = streamer.post("/webhooks", {"url": receiver.url}, format="json").json()["payload"]
    secret = hook["secret"]
    stream = create_stream(streamer, YouTube="ytkey", Twitch="twkey")
    publisher = rig.publish(stream["streamKey"])
    wait_until(
        lambda: (
            {("stream.live", None), ("destination.live", "YouTube"), ("destination.live", "Twitch")}
            <= set(_names(receiver, secret))
        ),
        30,
    )

    twitch.stop()  # Twitch's ingest goes away until the relay is reported failed
    wait_until(lambda: relay_states(streamer, stream["id"]).get("Twitch") == "failed", 60)
    wait_until(lambda: ("destination.failed", "Twitch") in _names(receiver, secret), 15)
    failed = next(e for e in _events(receiver, secret) if e["event"] == "destination.failed")
    assert failed["data"]["destinationId"] == stream["destinationIds"]["Twitch"]
    assert failed["data"]["lastError"] and "twkey" not in failed["data"]["lastError"]

    twitch.start()
    wait_until(lambda: ("destination.recovered", "Twitch") in _names(receiver, secret), 60)

    publisher.terminate()
    wait_until(lambda: ("stream.ended", None) in _names(receiver, secret), 20)
    ended = next(e for e in _events(receiver, secret) if e["event"] == "stream.ended")
    assert ended["data"]["streamID"] == stream["id"]
    assert ended["data"]["reason"] == "publisher disconnected"
    youtube_events = [
        e["event"] for e in _events(receiver, secret) if e["data"].get("service") == "YouTube"
    ]
    assert youtube_events == ["destination.live"]  # YouTube's leg went live once and never noticed
    everything = b"".join(body for _, body in receiver.requests)
    assert stream["streamKey"].encode() not in everything
    assert b"ytkey" not in everything and b"twkey" not in everything
    deliveries = streamer.get(f"/webhooks/{hook['id']}/deliveries").json()["payload"]
    assert {d["status"] for d in deliveries} == {"delivered"}
    assert not detail_of(streamer, stream["id"])["isStreaming"]
