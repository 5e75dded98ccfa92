"""The seed's example requests, in order, as a new user would make them."""

import pytest
from rest_framework.test import APIClient

from tests.conftest import assert_ok, client_for

pytestmark = pytest.mark.django_db


def test_seed_examples_in_order(node_client: APIClient, settings) -> None:
    # The seed's example predates YouTube's RTMPS ingest (rig's default now); the base is a
    # setting, and with the seed's base the answers are the seed's.
    settings.RIG_SERVICE_INGEST = {
        **settings.RIG_SERVICE_INGEST,
        "YouTube": "rtmp://a.rtmp.youtube.com/live2",
    }
    anon = APIClient()
    user = assert_ok(
        anon.post(
            "/accounts/",
            {
                "username": "foobar",
                "password": "Hop0nTh4tM4ng0Tree",
                "email": "foobar@fancycompany.net",
            },
            format="json",
        ),
        "User created",
    )
    assert set(user) == {"userID", "username", "email"}
    login = assert_ok(
        anon.post(
            "/accounts/auth/local",
            {"username": "foobar", "password": "Hop0nTh4tM4ng0Tree"},
            format="json",
        ),
        "Authentication successful",
    )
    client = client_for(token=login["token"])
    stream = assert_ok(client.post("/streams/"), "New stream created")
    assert (stream["destinations"], stream["provisionStatus"]) == (None, None)
    sid = stream["id"]
    yt = assert_ok(
        client.post(
            f"/streams/{sid}/destination",
            {"service": "YouTube", "streamKey": "simaimsimim_siimimimiasdsr"},
            format="json",
        ),
        "Stream destination added",
    )
    assert yt["rtmpUrl"] == "rtmp://a.rtmp.youtube.com/live2/simaimsimim_siimimimiasdsr"
    tw = assert_ok(
        client.post(
            f"/streams/{sid}/destination",
            {"service": "Twitch", "streamKey": "fxxbxx_live_moofooboo"},
            format="json",
        ),
        "Stream destination added",
    )
    assert tw["rtmpUrl"] == "rtmp://live.twitch.tv/app/fxxbxx_live_moofooboo"
    new_key = assert_ok(client.post(f"/streams/{sid}/changeKey"), "New stream key")
    assert new_key["streamID"] == sid and new_key["key"] != stream["streamKey"]
    detail = assert_ok(client.get(f"/streams/{sid}"), "Stream detail")
    assert detail["streamKey"] == new_key["key"]
    assert [d["service"] for d in detail["destinations"]] == ["YouTube", "Twitch"]
    listing = assert_ok(client.get("/streams/"), "Stream list for user")
    assert [s["id"] for s in listing] == [sid]
    config = assert_ok(node_client.get(f"/agents/config/{new_key['key']}"), "Stream Config")
    assert [(d["id"], d["service"], d["rtmpUrl"], d["isActive"]) for d in config] == [
        (yt["id"], "YouTube", yt["rtmpUrl"], True),
        (tw["id"], "Twitch", tw["rtmpUrl"], True),
    ]
