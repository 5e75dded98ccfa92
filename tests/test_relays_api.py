"""The relay control API: each destination's relay, its log, restart, mute and unmute."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import IngestNode
from streams.models import Destination, Stream
from tests.conftest import assert_error, assert_ok, client_for
from tests.test_agents_api import form_hook, relay_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def live(node_and_token: tuple[IngestNode, str], alice_stream: Stream, make_destination) -> dict:
    """Alice's stream live on node1 with a YouTube and a Twitch relay reported."""
    _node, token = node_and_token
    yt = make_destination.create(stream=alice_stream, stream_key="yt-secret-key")
    tw = make_destination.create(stream=alice_stream, service="Twitch", stream_key="tw-secret")
    assert form_hook(token, "publish", alice_stream.stream_key).status_code == 200
    log = ["Opening 'rtmp://a.rtmp.youtube.com/live2/***' for writing", "yt-secret-key leaked"]
    body: dict[str, Any] = {
        "streams": [
            {
                "streamKey": alice_stream.stream_key,
                "relays": [
                    relay_report(yt.pk, newLog=log),
                    relay_report(tw.pk, "failed", lastError="Connection refused"),
                ],
            }
        ]
    }
    assert client_for(token=token).post("/agents/status", body, format="json").status_code == 200
    return {"stream": alice_stream, "yt": yt, "tw": tw, "token": token}


def _url(stream: Stream, destination: Destination | int, action: str = "") -> str:
    pk = destination if isinstance(destination, int) else destination.pk
    return f"/streams/{stream.id}/relays/{pk}" + (f"/{action}" if action else "")


def test_list_shows_every_destination_with_its_relay(alice_client: APIClient, live: dict) -> None:
    off = Destination.objects.create(
        stream=live["stream"], service="YouTube", stream_key="k", is_active=False
    )
    relays = assert_ok(alice_client.get(f"/streams/{live['stream'].id}/relays"), "Stream relays")
    assert [r["id"] for r in relays] == [live["yt"].pk, live["tw"].pk, off.pk]
    yt, tw, disabled = relays
    assert yt["state"] == "live" and yt["bitrateKbps"] == 6012.5 and yt["fps"] == 30.0
    assert yt["bytesSent"] == 123456 and yt["restarts"] == 1 and yt["since"]
    assert yt["isMuted"] is False and yt["isActive"] is True
    assert tw["state"] == "failed" and tw["lastError"] == "Connection refused"
    assert disabled["state"] == "disabled" and disabled["isActive"] is False
    assert "log" not in yt  # the list stays small; logs are in the detail
    assert "yt-secret-key" not in str(relays)


def test_list_queries_do_not_grow_with_destinations(
    alice_client: APIClient, live: dict, django_assert_num_queries
) -> None:
    for n in range(5):
        Destination.objects.create(stream=live["stream"], service="Twitch", stream_key=f"k{n}")
    # auth user, the stream, its node (are its reports fresh?), its destinations with relays
    with django_assert_num_queries(4):
        alice_client.get(f"/streams/{live['stream'].id}/relays")


def test_detail_has_the_log_with_keys_redacted(alice_client: APIClient, live: dict) -> None:
    relay = assert_ok(alice_client.get(_url(live["stream"], live["yt"])), "Stream relay")
    assert relay["state"] == "live"
    assert relay["log"] == [
        "Opening 'rtmp://a.rtmp.youtube.com/live2/***' for writing",
        "*** leaked",
    ]


def test_detail_keeps_only_the_last_100_lines(alice_client: APIClient, live: dict) -> None:
    lines = [f"line {n}" for n in range(100)]
    body = {
        "streams": [
            {"streamKey": live["stream"].stream_key, "relays": [relay_report(live["yt"].pk)]}
        ]
    }
    body["streams"][0]["relays"][0]["newLog"] = lines
    client_for(token=live["token"]).post("/agents/status", body, format="json")
    relay = assert_ok(alice_client.get(_url(live["stream"], live["yt"])), "Stream relay")
    assert relay["log"] == lines
    body["streams"][0]["relays"][0]["newLog"] = ["one more"]  # reports carry new lines only
    client_for(token=live["token"]).post("/agents/status", body, format="json")
    relay = assert_ok(alice_client.get(_url(live["stream"], live["yt"])), "Stream relay")
    assert relay["log"] == [*lines[1:], "one more"]
    body["streams"][0]["relays"][0]["newLog"] = [*lines, "one more"]
    assert_error(
        client_for(token=live["token"]).post("/agents/status", body, format="json"), 400, 1005
    )


def test_restart_bumps_the_agent_config(
    alice_client: APIClient, live: dict, node_client: APIClient
) -> None:
    key = live["stream"].stream_key
    before = {
        d["id"]: d for d in assert_ok(node_client.get(f"/agents/config/{key}"), "Stream Config")
    }
    relay = assert_ok(
        alice_client.post(_url(live["stream"], live["yt"], "restart")), "Relay restart requested"
    )
    assert relay["id"] == live["yt"].pk
    after = {
        d["id"]: d for d in assert_ok(node_client.get(f"/agents/config/{key}"), "Stream Config")
    }
    assert after[live["yt"].pk]["restartSeq"] == before[live["yt"].pk]["restartSeq"] + 1
    assert after[live["tw"].pk]["restartSeq"] == before[live["tw"].pk]["restartSeq"]


def test_restart_refused_when_not_live_or_disabled(alice_client: APIClient, live: dict) -> None:
    live["tw"].is_active = False
    live["tw"].save()
    assert_error(alice_client.post(_url(live["stream"], live["tw"], "restart")), 409, 1013)
    form_hook(live["token"], "publish_done", live["stream"].stream_key)
    body = assert_error(alice_client.post(_url(live["stream"], live["yt"], "restart")), 409, 1013)
    assert body["message"] == "Stream is not live"
    assert Destination.objects.get(pk=live["yt"].pk).restart_seq == 0


def test_mute_and_unmute_reach_the_agent_config(
    alice_client: APIClient, live: dict, node_client: APIClient
) -> None:
    key = live["stream"].stream_key
    relay = assert_ok(alice_client.post(_url(live["stream"], live["tw"], "mute")), "Relay muted")
    assert relay["isMuted"] is True
    config = {
        d["id"]: d for d in assert_ok(node_client.get(f"/agents/config/{key}"), "Stream Config")
    }
    assert config[live["tw"].pk]["isMuted"] is True
    assert config[live["yt"].pk]["isMuted"] is False  # the other destination keeps its audio
    relay = assert_ok(
        alice_client.post(_url(live["stream"], live["tw"], "unmute")), "Relay unmuted"
    )
    assert relay["isMuted"] is False
    config = {
        d["id"]: d for d in assert_ok(node_client.get(f"/agents/config/{key}"), "Stream Config")
    }
    assert config[live["tw"].pk]["isMuted"] is False


def test_mute_works_before_going_live(
    alice_client: APIClient, alice_stream: Stream, make_destination
) -> None:
    destination = make_destination.create(stream=alice_stream)
    relay = assert_ok(alice_client.post(_url(alice_stream, destination, "mute")), "Relay muted")
    assert relay["isMuted"] is True and relay["state"] == "pending"


@pytest.mark.parametrize("action", ["", "restart", "mute", "unmute"])
def test_other_tenants_and_unknown_ids_are_404(
    bob_client: APIClient, alice_client: APIClient, live: dict, action: str
) -> None:
    method = "get" if action == "" else "post"
    foreign = getattr(bob_client, method)(_url(live["stream"], live["yt"], action))
    unknown = getattr(alice_client, method)(_url(live["stream"], 999999, action))
    bad = getattr(alice_client, method)(_url(live["stream"], 0, action).replace("/0", "/x"))
    for response in (foreign, unknown, bad):
        assert_error(response, 404, 1000)
    assert foreign.content == unknown.content  # nothing tells Bob the id exists
    assert Destination.objects.get(pk=live["yt"].pk).is_muted is False
    assert Destination.objects.get(pk=live["yt"].pk).restart_seq == 0


@pytest.mark.parametrize("destination_id", ["%C2%B2", "%D9%A1", "1" * 19, "-1"])
def test_odd_destination_ids_are_404(
    alice_client: APIClient, live: dict, destination_id: str
) -> None:
    url = f"/streams/{live['stream'].id}/relays/{destination_id}"  # digits to str.isdigit
    assert_error(alice_client.get(url), 404, 1000)
    assert_error(alice_client.post(f"{url}/mute"), 404, 1000)


def test_mute_does_not_recheck_an_unchanged_server_url(
    alice_client: APIClient, alice_stream: Stream, settings
) -> None:
    custom = Destination.objects.create(
        stream=alice_stream, service="Custom", server_url="rtmp://10.1.2.3/app", stream_key="k"
    )
    settings.RIG_ALLOW_PRIVATE_DESTINATIONS = False  # the URL would be refused if sent again
    relay = assert_ok(alice_client.post(_url(alice_stream, custom, "mute")), "Relay muted")
    assert relay["isMuted"] is True


def test_relay_list_other_tenant_and_anon(bob_client, anon_client, live: dict) -> None:
    assert_error(bob_client.get(f"/streams/{live['stream'].id}/relays"), 404, 1000)
    assert_error(anon_client.get(f"/streams/{live['stream'].id}/relays"), 401, 1003)
    assert_error(anon_client.post(_url(live["stream"], live["yt"], "mute")), 401, 1003)


def test_wrong_methods_are_405(alice_client: APIClient, live: dict) -> None:
    assert_error(alice_client.get(_url(live["stream"], live["yt"], "restart")), 405, 1001)
    assert_error(alice_client.delete(_url(live["stream"], live["yt"])), 405, 1001)
    assert_error(alice_client.post(f"/streams/{live['stream'].id}/relays"), 405, 1001)


def test_relays_of_a_silent_node_are_unknown_not_live(
    alice_client: APIClient, live: dict, settings
) -> None:
    """A node that stopped reporting (a dead agent) no longer vouches for its relays."""
    stream = live["stream"]
    stream.refresh_from_db()  # now served by node1
    relays = assert_ok(alice_client.get(f"/streams/{stream.id}/relays"), "Stream relays")
    assert {r["state"] for r in relays if r["isActive"]} == {"live", "failed"}  # as reported
    quiet = timezone.now() - timedelta(seconds=settings.RIG_RELAY_REPORT_FRESH_S + 1)
    IngestNode.objects.filter(sessions__stream=stream).update(last_seen_at=quiet)
    relays = assert_ok(alice_client.get(f"/streams/{stream.id}/relays"), "Stream relays")
    assert {r["state"] for r in relays if r["isActive"]} == {"unknown"}
    detail = assert_ok(alice_client.get(f"/streams/{stream.id}"), "Stream detail")
    assert detail["provisionStatus"]["state"] == "degraded"


def test_a_heartbeat_without_new_lines_neither_reads_nor_rewrites_the_log(
    alice_client: APIClient, live: dict
) -> None:
    """Every 2 s each node reports each relay; its 100 stored log lines stay where they are
    unless new ones came (they used to be read and written back on every heartbeat)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    report = relay_report(live["yt"].pk)
    del report["newLog"]
    body = {"streams": [{"streamKey": live["stream"].stream_key, "relays": [report]}]}
    with CaptureQueriesContext(connection) as queries:
        answer = client_for(token=live["token"]).post("/agents/status", body, format="json")
    assert answer.status_code == 200
    relay_sql = [q["sql"] for q in queries.captured_queries if "streams_relay" in q["sql"]]
    assert relay_sql
    assert not [sql for sql in relay_sql if '"streams_relay"."log"' in sql]  # not read
    assert not [sql for sql in relay_sql if '"log" = EXCLUDED' in sql]  # not written back
    relay = assert_ok(alice_client.get(_url(live["stream"], live["yt"])), "Stream relay")
    assert relay["log"][-1] == "*** leaked"
