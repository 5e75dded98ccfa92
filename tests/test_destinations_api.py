"""Destinations: add (seed), list, update, delete; per-platform URLs and input safety."""

import pytest
from rest_framework.test import APIClient

from streams.models import Destination, Stream
from tests.conftest import assert_error, assert_ok
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db


def add(client: APIClient, stream: Stream, **body: object):
    return client.post(f"/streams/{stream.id}/destination", body, format="json")


def test_add_youtube_seed_shape(alice_client: APIClient, alice_stream: Stream) -> None:
    payload = assert_ok(
        add(alice_client, alice_stream, service="YouTube", streamKey="simaimsimim_siimimimiasdsr"),
        "Stream destination added",
    )
    assert isinstance(payload["id"], int)
    assert payload["service"] == "YouTube"
    assert payload["streamKey"] == "simaimsimim_siimimimiasdsr"
    # YouTube's RTMPS ingest by default (the seed's example used plain RTMP).
    assert payload["rtmpUrl"] == "rtmps://a.rtmps.youtube.com:443/live2/simaimsimim_siimimimiasdsr"
    assert payload["isActive"] is True


def test_add_twitch_seed_url(alice_client: APIClient, alice_stream: Stream) -> None:
    payload = assert_ok(
        add(alice_client, alice_stream, service="Twitch", streamKey="fxxbxx_live_moofooboo"),
        "Stream destination added",
    )
    assert payload["rtmpUrl"] == "rtmp://live.twitch.tv/app/fxxbxx_live_moofooboo"


def test_add_facebook_is_rtmps(alice_client: APIClient, alice_stream: Stream) -> None:
    payload = assert_ok(
        add(alice_client, alice_stream, service="Facebook", streamKey="FB-123-0-Abc"),
        "Stream destination added",
    )
    assert payload["rtmpUrl"] == "rtmps://live-api-s.facebook.com:443/rtmp/FB-123-0-Abc"


def test_add_kick_is_rtmps(alice_client: APIClient, alice_stream: Stream) -> None:
    payload = assert_ok(
        add(alice_client, alice_stream, service="Kick", streamKey="sk_us-west-2_AbC"),
        "Stream destination added",
    )
    assert payload["rtmpUrl"] == (
        "rtmps://fa723fc1b171.global-contribute.live-video.net:443/app/sk_us-west-2_AbC"
    )


def test_services_lists_where_each_ingest_is(alice_stream: Stream) -> None:
    """Public: a client can show the choices before anyone signs in; every listed service is
    one a destination accepts, and its ingest is what the destination then pushes to."""
    services = assert_ok(APIClient().get("/services"), "Supported services")
    by_name = {service["name"]: service for service in services}
    assert list(by_name) == ["YouTube", "Twitch", "Facebook", "Kick", "Custom"]
    assert by_name["YouTube"] == {
        "name": "YouTube",
        "ingestUrl": "rtmps://a.rtmps.youtube.com:443/live2",
        "scheme": "rtmps",
        "schemes": ["rtmps"],
        "needsServerUrl": False,
        "keyFormat": "1-256 characters without whitespace, '/', '?', '#' or control characters.",
    }
    assert by_name["Twitch"]["scheme"] == "rtmp"
    assert by_name["Custom"]["ingestUrl"] is None
    assert by_name["Custom"]["schemes"] == ["rtmp", "rtmps", "srt"]
    assert by_name["Custom"]["needsServerUrl"] is True


def test_add_custom_srt_sends_the_key_as_streamid(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    payload = assert_ok(
        add(
            alice_client,
            alice_stream,
            service="Custom",
            streamKey="live&key=1",
            serverUrl="srt://srt.example.com:9000",
        ),
        "Stream destination added",
    )
    assert payload["rtmpUrl"] == "srt://srt.example.com:9000?streamid=live%26key%3D1"
    assert payload["serverUrl"] == "srt://srt.example.com:9000"


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("srt://srt.example.com", "Must give a port: srt://host:port."),
        ("srt://srt.example.com:9000/app", "An srt:// server URL has no path"),
        ("srt://srt.example.com:9000?latency=200", "Must not contain a query string."),
        ("udp://srt.example.com:9000", "Must be an rtmp:// or rtmps:// or srt:// URL"),
    ],
)
def test_bad_srt_server_is_refused(
    alice_client: APIClient, alice_stream: Stream, server: str, message: str
) -> None:
    response = add(alice_client, alice_stream, service="Custom", streamKey="k", serverUrl=server)
    body = assert_error(response, 400, 1005)
    assert body["details"]["serverUrl"][0].startswith(message)
    assert not Destination.objects.filter(stream=alice_stream).exists()


def test_service_ingest_base_is_a_setting(
    alice_client: APIClient, alice_stream: Stream, settings
) -> None:
    settings.RIG_SERVICE_INGEST = {
        **settings.RIG_SERVICE_INGEST,
        "YouTube": "rtmp://127.0.0.1:9/yt",
    }
    payload = assert_ok(
        add(alice_client, alice_stream, service="YouTube", streamKey="k1"),
        "Stream destination added",
    )
    assert payload["rtmpUrl"] == "rtmp://127.0.0.1:9/yt/k1"


@pytest.mark.parametrize(
    "server", ["rtmp://ingest.example.com/app", "rtmps://x.example.com:443/a/"]
)
def test_add_custom(alice_client: APIClient, alice_stream: Stream, server: str) -> None:
    payload = assert_ok(
        add(alice_client, alice_stream, service="Custom", streamKey="abc", serverUrl=server),
        "Stream destination added",
    )
    assert payload["rtmpUrl"] == server.rstrip("/") + "/abc"
    assert payload["serverUrl"] == server.rstrip("/")


@pytest.mark.parametrize(
    "server",
    [
        "rtmp://127.0.0.1/app",
        "rtmp://localhost:1935/app",
        "rtmp://10.1.2.3/app",
        "rtmp://192.168.1.1/app",
        "rtmp://169.254.169.254/app",
        "rtmp://[::1]/app",
        "rtmp://0.0.0.0/app",
        "rtmp://metadata.internal/app",
    ],
)
def test_custom_private_hosts_refused_unless_allowed(
    alice_client: APIClient, alice_stream: Stream, settings, server: str
) -> None:
    settings.RIG_ALLOW_PRIVATE_DESTINATIONS = False
    body = assert_error(
        add(alice_client, alice_stream, service="Custom", streamKey="abc", serverUrl=server),
        400,
        1005,
    )
    assert "serverUrl" in body["details"]
    assert not Destination.objects.exists()
    settings.RIG_ALLOW_PRIVATE_DESTINATIONS = True
    assert_ok(
        add(alice_client, alice_stream, service="Custom", streamKey="abc", serverUrl=server),
        "Stream destination added",
    )


@pytest.mark.parametrize(
    "server",
    [
        "http://example.com/app",
        "rtmp:///app",
        "rtmp://user:pw@example.com/app",
        "rtmp://example.com/app?x=1",
        "rtmp://example.com/app#f",
        "rtmp://exa mple.com/app",
        "rtmp://example.com:99999/app",
        "rtmp://" + "a" * 600 + ".com/app",
    ],
)
def test_custom_bad_urls(alice_client: APIClient, alice_stream: Stream, server: str) -> None:
    response = add(alice_client, alice_stream, service="Custom", streamKey="abc", serverUrl=server)
    assert "serverUrl" in assert_error(response, 400, 1005)["details"]


def test_custom_requires_server_url(alice_client: APIClient, alice_stream: Stream) -> None:
    response = add(alice_client, alice_stream, service="Custom", streamKey="abc")
    assert "serverUrl" in assert_error(response, 400, 1004)["details"]


def test_server_url_only_for_custom(alice_client: APIClient, alice_stream: Stream) -> None:
    response = add(
        alice_client, alice_stream, service="YouTube", streamKey="a", serverUrl="rtmp://x.com/a"
    )
    assert_error(response, 400, 1005)


@pytest.mark.parametrize("service", ["youtube", "YOUTUBE", "Mixer", "", 1, None])
def test_unknown_service_is_rejected(
    alice_client: APIClient, alice_stream: Stream, service: object
) -> None:
    body = assert_error(
        add(alice_client, alice_stream, service=service, streamKey="k"),
        400,
        1004 if service is None else 1005,
    )
    assert "service" in body["details"]
    assert not Destination.objects.exists()


@pytest.mark.parametrize(
    "key", ["", " ", "a b", "a/b", "a?b", "a#b", "a\nb", "a\x00b", "a\tb", "k" * 257, 123, True]
)
def test_destination_key_is_validated(
    alice_client: APIClient, alice_stream: Stream, key: object
) -> None:
    body = assert_error(add(alice_client, alice_stream, service="Twitch", streamKey=key), 400, 1005)
    assert "streamKey" in body["details"]
    assert not Destination.objects.exists()


def test_missing_fields_are_1004(alice_client: APIClient, alice_stream: Stream) -> None:
    body = assert_error(add(alice_client, alice_stream), 400, 1004)
    assert set(body["details"]) == {"service", "streamKey"}


def test_destination_limit(alice_client: APIClient, alice_stream: Stream, settings) -> None:
    settings.RIG_MAX_DESTINATIONS_PER_STREAM = 1
    add(alice_client, alice_stream, service="Twitch", streamKey="k1")
    assert_error(add(alice_client, alice_stream, service="Twitch", streamKey="k2"), 409, 1011)


def test_list_destinations(alice_client: APIClient, alice_stream: Stream) -> None:
    url = f"/streams/{alice_stream.id}/destinations"
    assert assert_ok(alice_client.get(url), "Stream destinations") == []
    first, second = (
        DestinationFactory.create(stream=alice_stream),
        DestinationFactory.create(stream=alice_stream),
    )
    payload = assert_ok(alice_client.get(url), "Stream destinations")
    assert [d["id"] for d in payload] == [first.pk, second.pk]


def test_list_destinations_query_count(
    alice_client: APIClient, alice_stream: Stream, django_assert_num_queries
) -> None:
    for _ in range(8):
        DestinationFactory.create(stream=alice_stream)
    with django_assert_num_queries(3):  # user, stream, destinations
        alice_client.get(f"/streams/{alice_stream.id}/destinations")


def test_update_destination(alice_client: APIClient, alice_stream: Stream) -> None:
    destination = DestinationFactory.create(stream=alice_stream, service="Twitch")
    url = f"/streams/{alice_stream.id}/destinations/{destination.pk}"
    payload = assert_ok(
        alice_client.patch(url, {"streamKey": "new_key", "isActive": False}, format="json"),
        "Stream destination updated",
    )
    assert payload["streamKey"] == "new_key"
    assert payload["rtmpUrl"] == "rtmp://live.twitch.tv/app/new_key"
    assert payload["isActive"] is False
    assert assert_ok(alice_client.get(url), "Stream destination") == payload


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"streamKey": "a b"}, 1005),
        ({"isActive": "no"}, 1005),
        ({"service": "Twitch"}, 1005),
        ({"serverUrl": "rtmp://x.example.com/a"}, 1005),
    ],
)
def test_update_destination_bad_input_changes_nothing(
    alice_client: APIClient, alice_stream: Stream, body: dict, code: int
) -> None:
    destination = DestinationFactory.create(stream=alice_stream, stream_key="orig")
    url = f"/streams/{alice_stream.id}/destinations/{destination.pk}"
    assert_error(alice_client.patch(url, body, format="json"), 400, code)
    destination.refresh_from_db()
    assert (destination.stream_key, destination.is_active) == ("orig", True)


def test_delete_destination(alice_client: APIClient, alice_stream: Stream) -> None:
    destination = DestinationFactory.create(stream=alice_stream)
    url = f"/streams/{alice_stream.id}/destinations/{destination.pk}"
    assert assert_ok(alice_client.delete(url), "Stream destination deleted") == {
        "id": destination.pk
    }
    assert_error(alice_client.get(url), 404, 1000)


@pytest.mark.parametrize("dest_id", ["abc", "0", "999999", "-1", "9" * 40])
def test_unknown_destination_ids(
    alice_client: APIClient, alice_stream: Stream, dest_id: str
) -> None:
    assert_error(alice_client.get(f"/streams/{alice_stream.id}/destinations/{dest_id}"), 404, 1000)


def test_destination_of_another_stream_is_unknown(
    alice_client: APIClient, alice_stream: Stream, alice
) -> None:
    other = DestinationFactory.create(stream__owner=alice)
    url = f"/streams/{alice_stream.id}/destinations/{other.pk}"
    assert_error(alice_client.get(url), 404, 1000)


PROFILE = {"height": 720, "fps": 30, "videoBitrateKbps": 3000, "audioBitrateKbps": 128}


def test_a_destination_may_carry_a_transcode_profile(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    payload = assert_ok(
        add(alice_client, alice_stream, service="Twitch", streamKey="k", transcode=PROFILE),
        "Stream destination added",
    )
    assert payload["transcode"] == PROFILE
    copy = assert_ok(
        add(alice_client, alice_stream, service="YouTube", streamKey="k2"),
        "Stream destination added",
    )
    assert copy["transcode"] is None
    url = f"/streams/{alice_stream.id}/destinations/{payload['id']}"
    smaller = {**PROFILE, "height": 480}
    changed = assert_ok(
        alice_client.patch(url, {"transcode": smaller}, format="json"), "Stream destination updated"
    )
    assert changed["transcode"] == smaller
    back = assert_ok(
        alice_client.patch(url, {"transcode": None}, format="json"), "Stream destination updated"
    )
    assert back["transcode"] is None


@pytest.mark.parametrize(
    ("profile", "field"),
    [
        ({**PROFILE, "height": 721}, "height"),
        ({**PROFILE, "height": 100}, "height"),
        ({**PROFILE, "fps": 0}, "fps"),
        ({**PROFILE, "fps": "30"}, "fps"),
        ({**PROFILE, "videoBitrateKbps": 10**9}, "videoBitrateKbps"),
        ({k: v for k, v in PROFILE.items() if k != "audioBitrateKbps"}, "audioBitrateKbps"),
        ({**PROFILE, "codec": "hevc"}, "codec"),
    ],
)
def test_bad_profiles_name_the_field_and_change_nothing(
    alice_client: APIClient, alice_stream: Stream, profile: dict, field: str
) -> None:
    response = add(alice_client, alice_stream, service="Twitch", streamKey="k", transcode=profile)
    body = assert_error(response, 400, body_code(profile, field))
    assert field in body["details"]["transcode"], body
    assert not Destination.objects.filter(stream=alice_stream).exists()


def body_code(profile: dict, field: str) -> int:
    return 1004 if field not in profile else 1005


def test_a_profile_that_is_not_an_object_is_refused(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    for bad in ("720p", [720], 720):
        response = add(alice_client, alice_stream, service="Twitch", streamKey="k", transcode=bad)
        assert "transcode" in assert_error(response, 400, 1005)["details"]
