"""The agent API (node tokens) and the nginx-rtmp publish hooks."""

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import User
from agents.models import IngestNode
from streams.models import Relay, Session, Stream
from streams.sessions import PUBLISH_APPEARS_S
from tests.conftest import assert_error, assert_ok, client_for
from tests.factories import (
    DestinationFactory,
    StreamFactory,
    node_create,
    provision,
    relay_of,
    relay_row,
    session_of,
)

pytestmark = pytest.mark.django_db


def hook(token: str, event: str, key: str, clientid: str = "7", app: str = "live"):
    """What nginx-rtmp sends: a form-encoded POST with call, name, app, clientid..."""
    data = {"call": event, "app": app, "name": key, "clientid": clientid, "addr": "127.0.0.1"}
    return APIClient().post(f"/agents/hooks/{token}/{event}", data, format="multipart")


def form_hook(
    token: str, event: str, key: str, clientid: str = "7", app: str = "live", args: str = ""
):
    body = f"app={app}&addr=127.0.0.1&clientid={clientid}&call={event}&name={key}&type=live"
    body += f"&{args}" if args else ""  # the publisher's own RTMP args, appended raw
    return APIClient().generic(
        "POST",
        f"/agents/hooks/{token}/{event}",
        body,
        content_type="application/x-www-form-urlencoded",
    )


# --- /agents/config ------------------------------------------------------------------------


def test_config_seed_shape(node_client: APIClient, alice_stream: Stream) -> None:
    yt = DestinationFactory.create(stream=alice_stream, service="YouTube", stream_key="simaim")
    tw = DestinationFactory.create(
        stream=alice_stream, service="Twitch", stream_key="fxx", is_active=False
    )
    payload = assert_ok(
        node_client.get(f"/agents/config/{alice_stream.stream_key}"), "Stream Config"
    )
    assert payload == [
        {
            "id": yt.pk,
            "service": "YouTube",
            "streamKey": "simaim",
            "rtmpUrl": "rtmps://a.rtmps.youtube.com:443/live2/simaim",
            "isActive": True,
            "isMuted": False,
            "transcode": None,
            "restartSeq": 0,
        },
        {
            "id": tw.pk,
            "service": "Twitch",
            "streamKey": "fxx",
            "rtmpUrl": "rtmp://live.twitch.tv/app/fxx",
            "isActive": False,
            "isMuted": False,
            "transcode": None,
            "restartSeq": 0,
        },
    ]


def test_config_carries_transcode_profiles_in_one_query_after_the_node(
    node_client: APIClient, alice_stream: Stream, django_assert_num_queries
) -> None:
    profile = {"height": 480, "fps": 30, "videoBitrateKbps": 1500, "audioBitrateKbps": 128}
    DestinationFactory.create(stream=alice_stream, stream_key="copy")
    DestinationFactory.create(stream=alice_stream, stream_key="small", transcode=profile)
    with django_assert_num_queries(2):  # the node, the stream's destinations
        payload = assert_ok(
            node_client.get(f"/agents/config/{alice_stream.stream_key}"), "Stream Config"
        )
    assert [item["transcode"] for item in payload] == [None, profile]


def test_config_without_destinations_is_empty(node_client: APIClient, alice_stream: Stream) -> None:
    assert (
        assert_ok(node_client.get(f"/agents/config/{alice_stream.stream_key}/"), "Stream Config")
        == []
    )


@pytest.mark.parametrize("key", ["unknown", "x" * 200, "%20"])
def test_config_unknown_key_is_1000(node_client: APIClient, key: str) -> None:
    assert_error(node_client.get(f"/agents/config/{key}"), 404, 1000)


def test_config_rejects_users_and_bad_node_tokens(
    alice_client: APIClient, anon_client: APIClient, alice_stream: Stream
) -> None:
    url = f"/agents/config/{alice_stream.stream_key}"
    for client in (
        alice_client,
        anon_client,
        client_for(token="rign_wrong"),
        client_for(token="x"),
    ):
        assert_error(client.get(url), 401, 1003)


def test_node_token_does_not_work_on_user_endpoints(node_client: APIClient) -> None:
    assert_error(node_client.get("/accounts/me"), 401, 1003)


# --- hooks: the publish lifecycle ----------------------------------------------------------


def test_publish_accepts_and_marks_live(node_and_token, alice_stream: Stream) -> None:
    node, token = node_and_token
    assert_ok(form_hook(token, "publish", alice_stream.stream_key), "OK")
    alice_stream.refresh_from_db()
    assert alice_stream.is_streaming is True
    assert session_of(alice_stream).node == node
    status: Any = provision(alice_stream)
    assert status["state"] == "live"  # no destinations: nothing to wait for
    assert status["node"] == "node1"
    assert status["ingestUrl"] == node.rtmp_url


def test_publish_hook_does_its_work_in_three_queries(node_and_token, alice_stream: Stream) -> None:
    _, token = node_and_token
    DestinationFactory.create_batch(3, stream=alice_stream)
    for n in range(3):  # history to prune: that happens when a session ends, not here
        form_hook(token, "publish", alice_stream.stream_key, clientid=str(n))
        form_hook(token, "publish_done", alice_stream.stream_key, clientid=str(n))
    # the node locked by its token; the stream locked with its session, its pull, the relays
    # the node runs and whether its owner has webhooks; the new session with the stream's link
    # to it (one statement)
    with CaptureQueriesContext(connection) as done:
        assert_ok(form_hook(token, "publish", alice_stream.stream_key, clientid="9"), "OK")
    # (the test's own transaction turns publish's into a savepoint: not a query of the hook)
    assert len([q for q in done.captured_queries if "SAVEPOINT" not in q["sql"]]) == 3
    assert session_of(alice_stream).client_id == "9"
    detail = alice_stream.sessions.get(client_id="9")
    assert detail.node_name == "node1" and detail.ended_at is None and detail.publisher_missed == 0


@pytest.mark.django_db(transaction=True)
def test_only_the_publish_commits_without_waiting_for_the_disk(
    node_and_token, alice_stream: Stream
) -> None:
    """The publish's transaction commits without waiting for its WAL flush (rig.queries.
    UnflushedCommit: a stalled flush was the hook's p99); the setting ends with it, refused or
    not, so the publish_done and every other transaction on the connection wait for the disk."""
    _, token = node_and_token
    seen: list[tuple[str, str]] = []

    def note_commit_mode(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if "current_setting" in sql:  # the wrapper's own question
            return result
        with connection.cursor() as cursor:  # as the transaction then stands
            cursor.execute("SELECT current_setting('synchronous_commit')")
            seen.append((sql.split()[0], cursor.fetchone()[0]))
        return result

    def after() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return str(cursor.fetchone()[0])

    with connection.execute_wrapper(note_commit_mode):
        assert_ok(form_hook(token, "publish", alice_stream.stream_key), "OK")
        # the node's read, the stream's, the session's insert
        assert seen == [("SELECT", "off"), ("SELECT", "off"), ("WITH", "off")]
        seen.clear()
        assert_ok(form_hook(token, "publish_done", alice_stream.stream_key), "OK")
        assert seen and {mode for _, mode in seen} == {"on"}
    assert after() == "on"
    assert alice_stream.sessions.get().end_reason == "publisher disconnected"
    assert_error(form_hook(token, "publish", "unknown-key"), 404, 1000)  # read, then refused
    assert after() == "on"


def test_publish_refusals(node_and_token, alice: User) -> None:
    _, token = node_and_token
    assert_error(form_hook(token, "publish", "unknown-key"), 404, 1000)
    inactive = StreamFactory.create(owner=alice, is_active=False)
    assert_error(form_hook(token, "publish", inactive.stream_key), 403, 1003)
    live = StreamFactory.create(owner=alice)
    assert_ok(form_hook(token, "publish", live.stream_key, clientid="1"), "OK")
    assert_error(form_hook(token, "publish", live.stream_key, clientid="2"), 409, 1009)
    assert session_of(live).client_id == "1"  # the first publisher keeps the stream
    assert_error(form_hook(token, "publish", live.stream_key, app="other"), 404, 1000)
    inactive.refresh_from_db()
    assert inactive.is_streaming is False


def test_publish_same_client_again_is_idempotent(node_and_token, alice_stream: Stream) -> None:
    _, token = node_and_token
    assert_ok(form_hook(token, "publish", alice_stream.stream_key), "OK")
    assert_ok(form_hook(token, "publish", alice_stream.stream_key), "OK")


def test_second_node_cannot_steal_a_live_stream(node_and_token, alice_stream: Stream) -> None:
    _, token = node_and_token
    _, token2 = node_create("node2")
    assert_ok(form_hook(token, "publish", alice_stream.stream_key), "OK")
    assert_error(form_hook(token2, "publish", alice_stream.stream_key), 409, 1009)


def test_stale_session_can_be_taken_over(node_and_token, alice_stream: Stream, settings) -> None:
    """A publisher that vanished without publish_done must not lock the key forever."""
    _, token = node_and_token
    assert_ok(form_hook(token, "publish", alice_stream.stream_key, clientid="1"), "OK")
    Session.objects.filter(stream=alice_stream).update(
        publisher_seen_at=timezone.now() - timedelta(seconds=settings.RIG_PUBLISHER_STALE_S + 1)
    )
    assert_ok(form_hook(token, "publish", alice_stream.stream_key, clientid="2"), "OK")
    assert session_of(alice_stream).client_id == "2"
    first = alice_stream.sessions.get(client_id="1")
    assert first.end_reason == "publisher replaced"  # history keeps the session it replaced


def test_a_restarted_ingest_takes_its_publisher_back_at_once(
    node_and_token, alice_stream: Stream
) -> None:
    """nginx died and came back: once its node has twice reported it no longer receives the
    key, OBS reconnecting there gets in at once, not after the 15-s grace."""
    _, token = node_and_token
    _, token2 = node_create("node2")
    node_client = client_for(token=token)
    assert_ok(form_hook(token, "publish", alice_stream.stream_key, clientid="1"), "OK")
    listed = {"streams": [], "publishers": [alice_stream.stream_key]}
    assert_ok(node_client.post("/agents/status", listed, format="json"), "Status recorded")
    silent: dict[str, list[str]] = {"streams": [], "publishers": []}
    assert_ok(node_client.post("/agents/status", silent, format="json"), "Status recorded")
    assert_error(form_hook(token, "publish", alice_stream.stream_key, clientid="2"), 409, 1009)
    assert_ok(node_client.post("/agents/status", silent, format="json"), "Status recorded")
    assert_error(form_hook(token2, "publish", alice_stream.stream_key), 409, 1009)  # elsewhere
    assert_ok(form_hook(token, "publish", alice_stream.stream_key, clientid="2"), "OK")
    session = session_of(alice_stream)
    assert (session.client_id, session.publisher_missed) == ("2", 0)


def test_reports_before_nginx_lists_a_fresh_publisher_do_not_count_against_it(
    node_and_token, alice_stream: Stream
) -> None:
    """The agent reports while nginx still waits on its publish hook (the relays are starting):
    those reports cannot list the publisher yet, and a second publisher must not take over."""
    _, token = node_and_token
    node_client = client_for(token=token)
    assert_ok(form_hook(token, "publish", alice_stream.stream_key, clientid="1"), "OK")
    silent: dict[str, list[str]] = {"streams": [], "publishers": []}
    for _ in range(3):
        assert_ok(node_client.post("/agents/status", silent, format="json"), "Status recorded")
    assert_error(form_hook(token, "publish", alice_stream.stream_key, clientid="2"), 409, 1009)
    assert session_of(alice_stream).client_id == "1"
    Session.objects.filter(stream=alice_stream).update(  # nginx never listed it, for too long
        started_at=timezone.now() - timedelta(seconds=PUBLISH_APPEARS_S + 1)
    )
    for _ in range(2):
        assert_ok(node_client.post("/agents/status", silent, format="json"), "Status recorded")
    assert_ok(form_hook(token, "publish", alice_stream.stream_key, clientid="2"), "OK")


def test_a_vouched_publisher_is_never_taken_over(node_and_token, alice_stream: Stream) -> None:
    _, token = node_and_token
    node_client = client_for(token=token)
    assert_ok(form_hook(token, "publish", alice_stream.stream_key, clientid="1"), "OK")
    for publishers in ([], [alice_stream.stream_key], []):  # missed, seen, missed: not twice
        body = {"streams": [], "publishers": publishers}
        assert_ok(node_client.post("/agents/status", body, format="json"), "Status recorded")
    assert_error(form_hook(token, "publish", alice_stream.stream_key, clientid="2"), 409, 1009)


def test_hook_with_bad_token_is_1003(alice_stream: Stream, db: None) -> None:
    assert_error(form_hook("rign_nope", "publish", alice_stream.stream_key), 401, 1003)
    alice_stream.refresh_from_db()
    assert alice_stream.is_streaming is False


def test_unknown_hook_event_is_404(node_and_token, alice_stream: Stream) -> None:
    assert_error(form_hook(node_and_token[1], "play", alice_stream.stream_key), 404, 1000)


def test_publish_done_ends_session(node_and_token, alice_stream: Stream) -> None:
    _, token = node_and_token
    destination = DestinationFactory.create(stream=alice_stream)
    form_hook(token, "publish", alice_stream.stream_key)
    relay_row(destination, state="live", bitrate_kbps=6000)
    assert_ok(form_hook(token, "publish_done", alice_stream.stream_key), "OK")
    alice_stream.refresh_from_db()
    assert alice_stream.is_streaming is False
    status: Any = provision(alice_stream)
    assert status["state"] == "stopped"
    assert status["reason"] == "publisher disconnected"
    assert status["endedAt"]
    assert relay_of(destination).state == "stopped"


def test_publish_done_out_of_order_leaves_new_session(node_and_token, alice_stream: Stream) -> None:
    """publish_done of an old session (late, retried) must not end the current one."""
    _, token = node_and_token
    form_hook(token, "publish", alice_stream.stream_key, clientid="1")
    form_hook(token, "publish_done", alice_stream.stream_key, clientid="1")
    form_hook(token, "publish", alice_stream.stream_key, clientid="2")
    assert_ok(form_hook(token, "publish_done", alice_stream.stream_key, clientid="1"), "OK")
    assert_ok(form_hook(token, "publish_done", alice_stream.stream_key, clientid="1"), "OK")
    alice_stream.refresh_from_db()
    assert alice_stream.is_streaming is True
    assert session_of(alice_stream).client_id == "2"


def test_forged_name_in_publisher_args_is_ignored(node_and_token, alice: User) -> None:
    """`live/VICTIM?name=MINE` makes nginx-rtmp send name twice: only nginx's first counts."""
    _, token = node_and_token
    victim, mine = StreamFactory.create(), StreamFactory.create(owner=alice)
    response = form_hook(
        token, "publish", victim.stream_key[:-1] + "x", args=f"name={mine.stream_key}"
    )
    assert_error(response, 404, 1000)
    assert not Session.objects.exists()


def test_change_key_while_live_ends_session(
    node_and_token, alice_client: APIClient, alice_stream: Stream
) -> None:
    _, token = node_and_token
    form_hook(token, "publish", alice_stream.stream_key)
    alice_client.post(f"/streams/{alice_stream.id}/changeKey")
    payload = assert_ok(alice_client.get(f"/streams/{alice_stream.id}"), "Stream detail")
    assert payload["isStreaming"] is False
    assert payload["provisionStatus"]["state"] == "stopped"
    assert payload["provisionStatus"]["reason"] == "stream key changed"


def test_deactivate_while_live_ends_session(
    node_and_token, alice_client: APIClient, alice_stream: Stream
) -> None:
    _, token = node_and_token
    form_hook(token, "publish", alice_stream.stream_key)
    alice_client.patch(f"/streams/{alice_stream.id}", {"isActive": False}, format="json")
    live = assert_ok(client_for(token=token).get("/agents/streams"), "Live streams for node")
    assert live == []  # the agent drops the publisher and stops its relays
    alice_stream.refresh_from_db()
    status: Any = provision(alice_stream)
    assert (alice_stream.is_streaming, status["reason"]) == (
        False,
        "stream deactivated",
    )


def test_draining_node_refuses_new_publishes(node_and_token, alice_stream: Stream) -> None:
    node, token = node_and_token
    IngestNode.objects.filter(pk=node.pk).update(is_draining=True)
    assert_error(form_hook(token, "publish", alice_stream.stream_key), 503, 1009)


# --- /agents/streams and /agents/status ----------------------------------------------------


def test_live_streams_for_node(node_and_token, alice: User) -> None:
    _, token = node_and_token
    mine, idle = StreamFactory.create(owner=alice), StreamFactory.create(owner=alice)
    other_node_stream = StreamFactory.create(owner=alice)
    _, token2 = node_create("node2")
    form_hook(token, "publish", mine.stream_key)
    form_hook(token2, "publish", other_node_stream.stream_key)
    yt = DestinationFactory.create(stream=mine, stream_key="yt-1")
    payload = assert_ok(client_for(token=token).get("/agents/streams"), "Live streams for node")
    config = assert_ok(
        client_for(token=token).get(f"/agents/config/{mine.stream_key}"), "Stream Config"
    )
    assert payload == [
        {
            "streamID": str(mine.id),
            "streamKey": mine.stream_key,
            "clientId": "7",  # the session relays are bound to: nginx's id of the publisher
            "destinations": config,
            "record": False,
        }
    ]
    assert [d["id"] for d in config] == [yt.pk]
    assert idle.stream_key not in str(payload)


def test_live_streams_queries_do_not_grow_with_streams(
    node_and_token, alice: User, django_assert_num_queries
) -> None:
    _, token = node_and_token
    for n in range(5):
        stream = StreamFactory.create(owner=alice)
        DestinationFactory.create(stream=stream, stream_key=f"k{n}")
        form_hook(token, "publish", stream.stream_key, clientid=str(n))
    client = client_for(token=token)
    with django_assert_num_queries(1):  # the node with its live streams and their destinations
        live = assert_ok(client.get("/agents/streams"), "Live streams for node")
    assert sorted(s["destinations"][0]["streamKey"] for s in live) == [f"k{n}" for n in range(5)]
    # A node with nothing live is told so (its token looked up on its own: a second query).
    _, idle_token = node_create("idle")
    with django_assert_num_queries(2):
        assert (
            assert_ok(client_for(token=idle_token).get("/agents/streams"), "Live streams for node")
            == []
        )
    # A wrong token: the same 401 as every node endpoint's.
    refused = client_for(token=idle_token + "x").get("/agents/streams")
    elsewhere = client_for(token=idle_token + "x").get("/agents/pulls")
    assert assert_error(refused, 401, 1003) == elsewhere.json()


def relay_report(destination_id: int, state: str = "live", **extra: object) -> dict:
    return {
        "destinationId": destination_id,
        "state": state,
        "bitrateKbps": 6012.5,
        "fps": 30.0,
        "bytesSent": 123456,
        "restarts": 1,
        "since": 1_790_000_000.0,
        "lastError": None,
        "newLog": ["frame=1"],
        **extra,
    }


def test_status_report_shows_in_provision_status(
    node_and_token, alice_client: APIClient, alice_stream: Stream
) -> None:
    node, token = node_and_token
    yt = DestinationFactory.create(stream=alice_stream)
    tw = DestinationFactory.create(stream=alice_stream, service="Twitch")
    off = DestinationFactory.create(stream=alice_stream, is_active=False)
    form_hook(token, "publish", alice_stream.stream_key)
    detail = assert_ok(alice_client.get(f"/streams/{alice_stream.id}"), "Stream detail")
    assert detail["provisionStatus"]["state"] == "provisioning"
    body: dict[str, Any] = {
        "streams": [
            {
                "streamKey": alice_stream.stream_key,
                "relays": [relay_report(yt.pk), relay_report(tw.pk, "reconnecting")],
            }
        ]
    }
    assert_ok(
        client_for(token=token).post("/agents/status", body, format="json"), "Status recorded"
    )
    status = assert_ok(alice_client.get(f"/streams/{alice_stream.id}"), "Stream detail")[
        "provisionStatus"
    ]
    assert status["state"] == "degraded"
    assert status["node"] == "node1"
    by_id = {d["id"]: d for d in status["destinations"]}
    assert by_id[yt.pk]["state"] == "live"
    assert by_id[yt.pk]["bitrateKbps"] == 6012.5
    assert by_id[yt.pk]["bytesSent"] == 123456
    assert by_id[tw.pk]["state"] == "reconnecting"
    assert by_id[off.pk]["state"] == "disabled"
    body["streams"][0]["relays"][1]["state"] = "live"
    client_for(token=token).post("/agents/status", body, format="json")
    status = alice_client.get(f"/streams/{alice_stream.id}").json()["payload"]["provisionStatus"]
    assert status["state"] == "live"
    node.refresh_from_db()
    assert node.last_seen_at is not None


def test_status_report_cannot_touch_streams_of_other_nodes(node_and_token, alice_stream) -> None:
    _, token = node_and_token
    _, token2 = node_create("node2")
    destination = DestinationFactory.create(stream=alice_stream)
    form_hook(token, "publish", alice_stream.stream_key)
    body = {
        "streams": [
            {"streamKey": alice_stream.stream_key, "relays": [relay_report(destination.pk)]}
        ]
    }
    payload = assert_ok(
        client_for(token=token2).post("/agents/status", body, format="json"), "Status recorded"
    )
    assert payload == {"relays": 0}
    assert not Relay.objects.exists()


def test_status_report_ignores_foreign_destination_ids(node_and_token, alice_stream, bob) -> None:
    _, token = node_and_token
    foreign = DestinationFactory.create(stream__owner=bob)
    form_hook(token, "publish", alice_stream.stream_key)
    body = {
        "streams": [{"streamKey": alice_stream.stream_key, "relays": [relay_report(foreign.pk)]}]
    }
    client_for(token=token).post("/agents/status", body, format="json")
    assert not Relay.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"streams": [{"streamKey": "k", "relays": [{"destinationId": "x", "state": "live"}]}]},
        {"streams": [{"streamKey": "k", "relays": [{"destinationId": 1, "state": "dancing"}]}]},
        {"streams": [{"streamKey": 5, "relays": []}]},
        {"streams": "nope"},
        {"streams": [{"streamKey": "k", "relays": [relay_report(1, newLog=["x"] * 101)]}]},
    ],
)
def test_status_report_bad_input_is_1005(node_client: APIClient, body: dict) -> None:
    assert_error(node_client.post("/agents/status", body, format="json"), 400, 1005)


def test_reported_publishers_keep_sessions_and_vanished_ones_end(
    node_and_token, alice: User, settings
) -> None:
    """The agent lists what nginx receives; a session missing from it past the grace ends."""
    _, token = node_and_token
    present, vanished, fresh = (StreamFactory.create(owner=alice) for _ in range(3))
    for n, stream in enumerate((present, vanished, fresh)):
        form_hook(token, "publish", stream.stream_key, clientid=str(n + 1))
    old = timezone.now() - timedelta(seconds=settings.RIG_PUBLISHER_STALE_S + 1)
    Session.objects.filter(stream__in=[present, vanished]).update(publisher_seen_at=old)
    body = {"streams": [], "publishers": [present.stream_key]}
    assert_ok(
        client_for(token=token).post("/agents/status", body, format="json"), "Status recorded"
    )
    for stream in (present, vanished, fresh):
        stream.refresh_from_db()
    assert present.is_streaming
    seen = session_of(present).publisher_seen_at
    assert seen is not None and seen > old
    assert fresh.is_streaming  # just published: not in nginx's list yet, within the grace
    assert not vanished.is_streaming
    status: Any = provision(vanished)
    assert status["reason"] == "publisher gone"


def test_report_without_publishers_ends_nothing(node_and_token, alice_stream, settings) -> None:
    _, token = node_and_token
    form_hook(token, "publish", alice_stream.stream_key)
    old = timezone.now() - timedelta(seconds=settings.RIG_PUBLISHER_STALE_S + 1)
    Session.objects.filter(stream=alice_stream).update(publisher_seen_at=old)
    client_for(token=token).post("/agents/status", {"streams": []}, format="json")
    alice_stream.refresh_from_db()
    assert alice_stream.is_streaming  # nginx's view unknown: neither vouched for nor ended
