"""Pulled sources through the API: the pullUrl, which node pulls it, the publish hook that
takes only the pull, the node's reports, and the source's view (the media tests pull real
cameras and servers)."""

import contextlib
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from agents.models import IngestNode
from agents.services import node_report
from rig.api import ApiError
from streams.models import Pull, Recording, Stream
from streams.pulls import pull_set, pull_token, pulls_assign, pulls_unassign
from streams.sessions import publish_start
from tests.conftest import assert_error, assert_ok
from tests.factories import node_create
from tests.test_agents_api import form_hook

pytestmark = pytest.mark.django_db

CAMERA = "rtsp://viewer:s3cret@cam.example.com:8554/live/ch1?token=abc123"


def set_pull(client: APIClient, stream: Stream, url: object):
    return client.patch(f"/streams/{stream.id}", {"pullUrl": url}, format="json")


def healthy(name: str) -> tuple[IngestNode, str]:
    node, token = node_create(name)
    node_report(node=node, streams=[])  # a heartbeat: it takes publishes
    return node, token


def test_pull_url_is_shown_masked_and_the_node_gets_it_whole(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    _, token = healthy("cam-node")
    payload = assert_ok(set_pull(alice_client, alice_stream, CAMERA), "Stream updated")
    masked = "rtsp://viewer:***@cam.example.com:8554/live/ch1?token=***"
    assert payload["pullUrl"] == masked
    assert payload["isStreaming"] is False
    listed = assert_ok(alice_client.get("/streams"), "Stream list for user")
    assert listed[0]["pullUrl"] == masked
    source = assert_ok(alice_client.get(f"/streams/{alice_stream.id}/source"), "Stream source")
    assert source["node"] == "cam-node" and source["pullUrl"] == masked
    assert "s3cret" not in str(source) and "abc123" not in str(source)
    # The node pulling it gets the URL with its credentials, and the token for its publish.
    wanted = assert_ok(
        APIClient(HTTP_AUTHORIZATION=f"Bearer {token}").get("/agents/pulls"), "Pulls for node"
    )
    assert wanted == [
        {
            "streamID": str(alice_stream.id),
            "streamKey": alice_stream.stream_key,
            "url": CAMERA,
            "token": pull_token(alice_stream.stream_key),
            "restartSeq": 0,
        }
    ]
    # At rest, the URL is encrypted like destination keys.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT url FROM streams_pull")
        assert "s3cret" not in cursor.fetchone()[0]


def test_null_returns_the_stream_to_push_mode(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    healthy("n1")
    assert_ok(set_pull(alice_client, alice_stream, CAMERA), "Stream updated")
    payload = assert_ok(set_pull(alice_client, alice_stream, None), "Stream updated")
    assert payload["pullUrl"] is None
    assert_error(alice_client.get(f"/streams/{alice_stream.id}/source"), 409, 1013)
    assert_error(alice_client.post(f"/streams/{alice_stream.id}/source/restart"), 409, 1013)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://cam.example.com/x", "Must be an rtsp:// or rtsps:// or rtmp://"),
        ("rtsp://", "Must be an rtsp://"),
        ("srt://cam.example.com", "Must give a port: srt://host:port."),
        ("rtsp://cam.example.com/x#frag", "Must not contain a fragment."),
        ("rtsp://cam.example.com/" + "x" * 1100, "Ensure this field has no more than 1024"),
        ("rtsp://cam.example.com/a b", "Must be an rtsp://"),
        ("rtsp://cam.example.com/\x00", "Null characters are not allowed."),
        ("rtsp://kamera.exämple.com/", "Must be ASCII"),
        (123, "Not a valid string."),
        ("", "This field may not be blank."),
    ],
)
def test_bad_pull_urls_name_the_field_and_change_nothing(
    alice_client: APIClient, alice_stream: Stream, url: object, message: str
) -> None:
    body = assert_error(set_pull(alice_client, alice_stream, url), 400, 1005)
    assert body["details"]["pullUrl"][0].startswith(message), body
    assert not Pull.objects.exists()


@pytest.mark.parametrize(
    "url", ["rtsp://127.0.0.1/cam", "rtmp://10.0.0.8/live/x", "http://169.254.169.254/x.m3u8"]
)
def test_private_sources_are_refused_in_production(
    alice_client: APIClient, alice_stream: Stream, settings, url: str
) -> None:
    settings.RIG_ALLOW_PRIVATE_DESTINATIONS = False
    body = assert_error(set_pull(alice_client, alice_stream, url), 400, 1005)
    assert "pullUrl" in body["details"]
    assert not Pull.objects.exists()


def test_an_empty_patch_is_missing_input(alice_client: APIClient, alice_stream: Stream) -> None:
    body = assert_error(
        alice_client.patch(f"/streams/{alice_stream.id}", {}, format="json"), 400, 1004
    )
    assert "isActive" in body["details"]


def test_the_hook_takes_only_the_pull_on_its_node(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    node, token = healthy("puller")
    _, other_token = healthy("other")
    Pull.objects.all().delete()
    assert_ok(set_pull(alice_client, alice_stream, CAMERA), "Stream updated")
    pull = Pull.objects.get()
    if pull.node_id != node.pk:  # the least loaded, by name: make it "puller" for the test
        Pull.objects.update(node=node)
    key = alice_stream.stream_key
    right = f"pull={pull_token(key)}"
    # OBS pushing to a pull-mode key: refused, as in use.
    body = assert_error(form_hook(token, "publish", key), 409, 1009)
    assert "pullUrl" in body["message"]
    assert_error(form_hook(token, "publish", key, args="pull=guess"), 409, 1009)
    # The right token from another node (the pull moved away from it): refused too.
    assert_error(form_hook(other_token, "publish", key, args=right), 409, 1009)
    # The pull itself, on its node: a publish like any other.
    assert_ok(form_hook(token, "publish", key, args=right), "OK")
    detail = assert_ok(alice_client.get(f"/streams/{alice_stream.id}"), "Stream detail")
    assert detail["isStreaming"] is True


def test_setting_a_pull_ends_a_pushed_session(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    _, token = healthy("n1")
    assert_ok(form_hook(token, "publish", alice_stream.stream_key), "OK")
    assert_ok(set_pull(alice_client, alice_stream, CAMERA), "Stream updated")
    detail = assert_ok(alice_client.get(f"/streams/{alice_stream.id}"), "Stream detail")
    assert detail["isStreaming"] is False
    assert detail["provisionStatus"]["reason"] == "source changed"


def test_reports_are_stored_redacted_and_restart_bumps_the_sequence(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    node, token = healthy("n1")
    assert_ok(set_pull(alice_client, alice_stream, CAMERA), "Stream updated")
    key = alice_stream.stream_key
    leaky = (
        f"[error] {CAMERA}: 401 Unauthorized (rtmp://127.0.0.1/live/{key}?pull={pull_token(key)})"
    )
    node_report(
        node=node,
        streams=[],
        pulls=[
            {
                "streamKey": key,
                "state": "reconnecting",
                "restarts": 2,
                "lastError": leaky,
                "newLog": [leaky, "line two"],
            }
        ],
    )
    source = assert_ok(alice_client.get(f"/streams/{alice_stream.id}/source"), "Stream source")
    assert source["state"] == "reconnecting" and source["restarts"] == 2
    assert source["log"][-1] == "line two" and len(source["log"]) == 2
    text = str(source)
    for secret in ("s3cret", "abc123", key, pull_token(key)):
        assert secret not in text
    assert "401 Unauthorized" in source["lastError"]
    # A report from a node that does not pull it changes nothing.
    stranger, _ = healthy("stranger")
    node_report(node=stranger, streams=[], pulls=[{"streamKey": key, "state": "live"}])
    assert Pull.objects.get().state == "reconnecting"
    restarted = assert_ok(
        alice_client.post(f"/streams/{alice_stream.id}/source/restart"), "Source restart requested"
    )
    assert restarted["node"] == "n1"
    wanted = APIClient(HTTP_AUTHORIZATION=f"Bearer {token}").get("/agents/pulls").json()
    assert wanted["payload"][0]["restartSeq"] == 1


def test_deactivating_stops_the_pull_and_activating_gives_it_a_node(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    _, token = healthy("n1")
    assert_ok(set_pull(alice_client, alice_stream, CAMERA), "Stream updated")
    alice_client.patch(f"/streams/{alice_stream.id}", {"isActive": False}, format="json")
    node_view = APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert node_view.get("/agents/pulls").json()["payload"] == []
    source = assert_ok(alice_client.get(f"/streams/{alice_stream.id}/source"), "Stream source")
    assert source["state"] == "stopped"
    assert_error(alice_client.post(f"/streams/{alice_stream.id}/source/restart"), 409, 1013)
    alice_client.patch(f"/streams/{alice_stream.id}", {"isActive": True}, format="json")
    assert len(node_view.get("/agents/pulls").json()["payload"]) == 1


def test_a_pull_waits_for_a_node_and_moves_off_a_lost_one(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    assert_ok(set_pull(alice_client, alice_stream, CAMERA), "Stream updated")
    source = assert_ok(alice_client.get(f"/streams/{alice_stream.id}/source"), "Stream source")
    assert (source["state"], source["node"]) == ("pending", None)  # no node takes publishes
    first, _ = healthy("first")  # its first heartbeat gives it the waiting pull
    assert Pull.objects.get().node == first
    second, _ = healthy("second")
    pulls_unassign(node=first)  # what losing the node does
    IngestNode.objects.filter(pk=first.pk).update(lost_at="2026-01-01T00:00:00Z")
    assert pulls_assign() == 1
    assert Pull.objects.get().node == second


def test_another_tenants_source_is_404_like_a_missing_one(
    alice_client: APIClient, bob_client: APIClient, alice_stream: Stream
) -> None:
    healthy("n1")
    assert_ok(set_pull(alice_client, alice_stream, CAMERA), "Stream updated")
    before = list(Pull.objects.values_list())
    answers = []
    for method, path in [("get", "source"), ("post", "source/restart")]:
        foreign = getattr(bob_client, method)(f"/streams/{alice_stream.id}/{path}")
        missing = getattr(bob_client, method)(
            f"/streams/00000000-0000-4000-8000-000000000000/{path}"
        )
        assert_error(foreign, 404, 1000)
        answers.append((foreign.status_code, foreign.content, missing.status_code, missing.content))
    assert all(a[:2] == a[2:] for a in answers)
    assert_error(set_pull(bob_client, alice_stream, "rtsp://evil.example.com/x"), 404, 1000)
    assert list(Pull.objects.values_list()) == before


def _race(holder: Callable[[Callable[[], None]], None], other: Callable[[], None]) -> list:
    """Run ``holder`` in a thread: it calls ``pause()`` once it holds its locks, and goes on once
    ``other``, run in a second thread meanwhile, has gone as far as it can (waiting on a lock,
    or done). The exceptions either raised (a deadlock is one)."""
    errors: list[BaseException] = []
    held, proceed = threading.Event(), threading.Event()
    pids: list[int] = []

    def pause() -> None:
        held.set()
        proceed.wait(10)

    def run(work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as error:  # the tests assert there was none
            errors.append(error)
        finally:
            connection.close()

    def second() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pids.append(cursor.fetchone()[0])
        other()

    first = threading.Thread(target=run, args=(lambda: holder(pause),))
    first.start()
    assert held.wait(10)
    then = threading.Thread(target=run, args=(second,))
    then.start()
    deadline = time.monotonic() + 10
    while then.is_alive() and time.monotonic() < deadline:
        if pids:
            with connection.cursor() as cursor:
                cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", pids)
                if cursor.fetchone()[0] == "Lock":
                    break
        time.sleep(0.02)
    proceed.set()
    first.join(20)
    then.join(20)
    return errors


@pytest.mark.django_db(transaction=True)
def test_back_to_push_while_the_node_reports_ends_the_session_without_a_deadlock(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    """The dashboard's "Back to OBS push" holds the stream and its pull, then ends the session;
    the node's status report, arriving meanwhile, waits for the stream before it writes the
    session or the pull. Both finish: no deadlock, no 500."""
    node, token = healthy("puller")
    assert_ok(set_pull(alice_client, alice_stream, CAMERA), "Stream updated")
    Pull.objects.update(node=node)
    key = alice_stream.stream_key
    assert_ok(form_hook(token, "publish", key, args=f"pull={pull_token(key)}"), "OK")

    def user(pause: Callable[[], None]) -> None:
        with transaction.atomic():
            stream = Stream.objects.select_for_update().get(pk=alice_stream.pk)
            Pull.objects.select_for_update().get(stream=stream)  # pull_set deletes it first
            pause()
            pull_set(stream=stream, url=None)

    def report() -> None:
        node_report(
            node=IngestNode.objects.get(pk=node.pk),
            streams=[{"streamKey": key, "relays": []}],
            publishers=[key],
            pulls=[{"streamKey": key, "state": "live"}],
        )

    assert _race(user, report) == []
    detail = assert_ok(alice_client.get(f"/streams/{alice_stream.id}"), "Stream detail")
    assert detail["isStreaming"] is False and detail["pullUrl"] is None
    assert detail["provisionStatus"]["reason"] == "source changed"


@pytest.mark.django_db(transaction=True)
def test_a_pull_given_to_a_node_while_it_takes_a_publish_commits_without_a_deadlock(
    alice_stream: Stream,
) -> None:
    """A pullUrl set while OBS publishes to the same stream: the user's change holds the stream
    and gives the pull to the node (the pull's foreign key to the node is checked at commit);
    the publish hook holds the node and waits for the stream. Both finish: no deadlock."""
    node, token = healthy("puller")
    key = alice_stream.stream_key

    def user(pause: Callable[[], None]) -> None:
        with transaction.atomic():
            pull_set(stream=Stream.objects.select_for_update().get(pk=alice_stream.pk), url=CAMERA)
            pause()

    def publish() -> None:
        with contextlib.suppress(ApiError):  # refused once the pull is there
            publish_start(token=token, key=key, client_id="1")

    assert _race(user, publish) == []
    assert Pull.objects.get(stream=alice_stream).node_id == node.pk


@pytest.mark.django_db(transaction=True)
def test_a_report_on_a_pull_and_its_recording_waits_for_the_users_change_to_the_stream(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    """A pulled stream whose source dropped (its session over) is returned to push by its user
    while its node reports the pull and the session's recording. The report waits for the
    stream before it writes either (the recording's foreign key to the stream is checked at
    commit, and the user's change deletes the pull). Both finish."""
    node, token = healthy("puller")
    assert_ok(set_pull(alice_client, alice_stream, CAMERA), "Stream updated")
    Pull.objects.update(node=node)
    key = alice_stream.stream_key
    assert_ok(form_hook(token, "publish", key, args=f"pull={pull_token(key)}"), "OK")
    assert_ok(form_hook(token, "publish_done", key), "OK")

    def user(pause: Callable[[], None]) -> None:
        with transaction.atomic():
            stream = Stream.objects.select_for_update().get(pk=alice_stream.pk)
            pause()
            pull_set(stream=stream, url=None)

    def report() -> None:
        now = time.time()
        recording = {"id": str(uuid.uuid4()), "streamKey": key, "startedAt": now - 30}
        node_report(
            node=IngestNode.objects.get(pk=node.pk),
            streams=[],
            publishers=[],
            pulls=[{"streamKey": key, "state": "reconnecting"}],
            recordings=[{**recording, "endedAt": now, "durationS": 30.0, "state": "done"}],
        )

    assert _race(user, report) == []
    assert not Pull.objects.filter(stream=alice_stream).exists()
    assert Recording.objects.get(stream=alice_stream).duration_s == 30.0
