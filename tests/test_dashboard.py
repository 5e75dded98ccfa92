"""The dashboard's pages through Django's test client: sign-in, tenancy, forms and their errors,
the live status refresh and what it costs. The browser tests drive the same pages in chromium."""

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import User
from agents.models import IngestNode
from agents.node.protocol import RelayState
from agents.services import node_report
from streams.models import Destination, Pull, Relay, Session, Stream
from tests.conftest import assert_error, client_for
from tests.factories import (
    PASSWORD,
    DestinationFactory,
    StreamFactory,
    UserFactory,
    node_create,
    relay_row,
    session_start,
)
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alice_page(alice: User) -> Client:
    return signed_in(alice)


def text(response: Any) -> str:
    """What a person reads: the page's main content without tags and extra white space."""
    html = response.content.decode()
    main = html[html.index("<main") : html.index("</main>")]
    return " ".join(re.sub(r"<[^>]+>", " ", main).split())


def field_error(response: Any, field: str) -> str:
    match = re.search(rf'id="{field}-error">([^<]*)<', response.content.decode())
    assert match, f"no error next to {field}"
    return match.group(1)


# --- signing in ----------------------------------------------------------------------------


def test_it_sends_visitors_to_the_login_page() -> None:
    assert Client().get("/")["Location"] == "/app/"
    response = Client().get("/app/streams/x")
    assert response.status_code == 302
    assert response["Location"] == "/app/login?next=/app/streams/x"
    page = Client().get("/app/login")
    assert page.status_code == 200
    assert '<label for="username">Username</label>' in page.content.decode()


def test_it_signs_up_and_is_signed_in() -> None:
    client = Client()
    response = client.post(
        "/app/signup", {"username": "carol", "email": "carol@example.com", "password": PASSWORD}
    )
    assert response.status_code == 302 and response["Location"] == "/app/"
    assert "Your streams" in text(client.get("/app/"))
    assert User.objects.get(username="carol").check_password(PASSWORD)


def test_sign_up_errors_stand_next_to_their_field(alice: User) -> None:
    response = Client().post(
        "/app/signup", {"username": "alice", "email": "new@example.com", "password": PASSWORD}
    )
    assert response.status_code == 409
    assert field_error(response, "username") == "A user with this username already exists."
    response = Client().post(
        "/app/signup", {"username": "dave", "email": "not-an-email", "password": "1234"}
    )
    assert response.status_code == 400
    assert "valid email" in field_error(response, "email")
    assert "at least 8" in field_error(response, "password")
    assert 'value="dave"' in response.content.decode()  # what was typed stays, but no password
    assert "1234" not in response.content.decode()
    assert not User.objects.filter(username="dave").exists()


def test_it_logs_in_and_out(alice: User) -> None:
    client = Client()
    wrong = client.post("/app/login", {"username": "alice", "password": "wrong-password"})
    assert wrong.status_code == 401
    assert "Wrong username or password." in text(wrong)
    response = client.post(
        "/app/login", {"username": "ALICE", "password": PASSWORD, "next": "/app/webhooks"}
    )
    assert response.status_code == 302 and response["Location"] == "/app/webhooks"
    assert client.get("/app/").status_code == 200
    assert client.post("/app/logout")["Location"] == "/app/login"
    assert client.get("/app/").status_code == 302


def test_login_never_redirects_off_site(alice: User) -> None:
    for target in ("https://evil.example/", "//evil.example/app/", "/accounts/me"):
        response = Client().post(
            "/app/login", {"username": "alice", "password": PASSWORD, "next": target}
        )
        assert response["Location"] == "/app/"


def test_login_shares_the_api_throttle(alice: User) -> None:
    api = APIClient()
    for _ in range(9):  # the login rate is 10/min per client
        api.post("/accounts/auth/local", {"username": "alice", "password": "x"}, format="json")
    Client().post("/app/login", {"username": "alice", "password": "wrong-password"})
    response = Client().post("/app/login", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many attempts" in text(response)
    assert "_auth_user_id" not in response.client.session


def test_password_change_keeps_this_session_and_ends_api_tokens(alice: User) -> None:
    page = signed_in(alice)
    api = client_for(alice)
    wrong = page.post(
        "/app/password", {"oldPassword": "not-the-one", "newPassword": "N3wPassw0rd!x"}
    )
    assert wrong.status_code == 400
    assert field_error(wrong, "oldPassword") == "Wrong password."
    done = page.post("/app/password", {"oldPassword": PASSWORD, "newPassword": "N3wPassw0rd!x"})
    assert done.status_code == 302
    assert page.get("/app/").status_code == 200  # still signed in here
    assert_error(api.get("/accounts/me"), 401, 1003)  # the old API token is out
    alice.refresh_from_db()
    assert alice.check_password("N3wPassw0rd!x")


# --- streams -------------------------------------------------------------------------------


def test_new_stream_and_its_obs_settings(alice_page: Client, alice: User) -> None:
    node_create("ingest-a", rtmp_url="rtmp://ingest-a.example/live")
    IngestNode.objects.update(last_seen_at=timezone.now())  # healthy: the recommended ingest
    response = alice_page.post("/app/")
    stream = Stream.objects.get(owner=alice)
    assert response["Location"] == f"/app/streams/{stream.id}"
    page = alice_page.get(response["Location"])
    html = page.content.decode()
    assert 'id="obs-server" readonly value="rtmp://ingest-a.example/live"' in html
    assert f'type="password" readonly value="{stream.stream_key}"' in html  # masked until Show
    assert page["Cache-Control"] == "no-store"
    assert "script-src 'self'" in page["Content-Security-Policy"]
    listing = text(alice_page.get("/app/"))
    assert f"Stream {str(stream.id)[:8]}" in listing and "offline" in listing


def test_another_users_stream_is_the_same_404_as_a_missing_one(
    alice_page: Client, bob: User
) -> None:
    bobs = StreamFactory.create(owner=bob)
    dest = DestinationFactory.create(stream=bobs)
    missing = alice_page.get("/app/streams/00000000-0000-0000-0000-000000000000")
    foreign = alice_page.get(f"/app/streams/{bobs.id}")
    assert missing.status_code == foreign.status_code == 404
    assert text(missing) == text(foreign) and "Not found" in text(foreign)
    for path in (
        f"/app/streams/{bobs.id}/live",
        f"/app/streams/{bobs.id}/picture",
        f"/app/streams/{bobs.id}/destinations/{dest.pk}/log",
        "/app/streams/not-a-uuid",
        "/app/no/such/page",
    ):
        assert alice_page.get(path).status_code == 404, path
    for action in ("rotateKey", "delete", "active", "destinations"):
        assert alice_page.post(f"/app/streams/{bobs.id}/{action}").status_code == 404
    for action in ("active", "mute", "restart", "delete"):
        path = f"/app/streams/{bobs.id}/destinations/{dest.pk}/{action}"
        assert alice_page.post(path).status_code == 404
    bobs.refresh_from_db()
    assert bobs.destinations.count() == 1 and Stream.objects.filter(pk=bobs.pk).exists()


def test_add_destination_errors_are_shown_next_to_the_field(
    alice_page: Client, alice_stream: Stream
) -> None:
    url = f"/app/streams/{alice_stream.id}/destinations"
    response = alice_page.post(url, {"service": "Custom", "streamKey": "k"})
    assert response.status_code == 400
    assert "Required for Custom destinations." in field_error(response, "serverUrl")
    response = alice_page.post(
        url, {"service": "Custom", "serverUrl": "rtmp://ok.example/app", "streamKey": "bad key"}
    )
    assert response.status_code == 400
    assert "without whitespace" in field_error(response, "streamKey")
    assert 'value="rtmp://ok.example/app"' in response.content.decode()
    assert "bad key" not in response.content.decode()  # keys are never echoed into a page
    response = alice_page.post(url, {"service": "Myspace", "streamKey": "k"})
    assert "is not a valid choice" in field_error(response, "service")
    assert alice_stream.destinations.count() == 0


def test_destination_buttons_use_the_api_services(alice_page: Client, alice_stream: Stream) -> None:
    base = f"/app/streams/{alice_stream.id}"
    response = alice_page.post(
        f"{base}/destinations",
        {"service": "Custom", "serverUrl": "rtmp://live.example/app", "streamKey": "k-1"},
    )
    assert response.status_code == 302
    destination = Destination.objects.get(stream=alice_stream)
    assert (destination.server_url, destination.stream_key) == ("rtmp://live.example/app", "k-1")
    page = alice_page.get(base).content.decode()
    assert "rtmp://live.example/app" in page and "k-1" not in page
    assert "transcoded to" not in page
    response = alice_page.post(
        f"{base}/destinations",
        {"service": "Twitch", "streamKey": "tw-1", "quality": "720p30"},
    )
    assert response.status_code == 302
    assert Destination.objects.get(stream=alice_stream, service="Twitch").transcode == {
        "height": 720, "fps": 30, "videoBitrateKbps": 3000, "audioBitrateKbps": 128,
    }  # fmt: skip
    assert "transcoded to 720p30 · 3000 kb/s" in text(alice_page.get(base))
    response = alice_page.post(
        f"{base}/destinations", {"service": "Twitch", "streamKey": "tw-2", "quality": "8k"}
    )
    assert response.status_code == 400
    assert "Choose one of the listed qualities." in field_error(response, "quality")
    assert alice_stream.destinations.count() == 2
    Destination.objects.filter(stream=alice_stream, service="Twitch").delete()
    alice_page.post(f"{base}/destinations/{destination.pk}/mute", {"isMuted": "true"})
    alice_page.post(f"{base}/destinations/{destination.pk}/active", {"isActive": "false"})
    destination.refresh_from_db()
    assert destination.is_muted and not destination.is_active
    restart = alice_page.post(f"{base}/destinations/{destination.pk}/restart", follow=True)
    assert "Stream is not live" in text(restart)  # the API's 1013, in words
    alice_page.post(f"{base}/destinations/{destination.pk}/delete")
    assert not Destination.objects.filter(pk=destination.pk).exists()


def test_pull_from_a_camera_and_back_to_obs(alice_page: Client, alice_stream: Stream) -> None:
    """The Source card: a pull URL with its errors next to the field (never echoed: it may
    hold a password), the pull's status, reconnect, and back to OBS."""
    node_report(node=node_create("cams")[0], streams=[])  # a node that takes the pull
    base = f"/app/streams/{alice_stream.id}"
    response = alice_page.post(f"{base}/source", {"pullUrl": "ftp://viewer:pw1@cam.example/x"})
    assert response.status_code == 400
    assert field_error(response, "pullUrl").startswith("Must be an rtsp://")
    assert "pw1" not in response.content.decode()
    assert alice_page.post(f"{base}/source", {"pullUrl": ""}).status_code == 400
    assert not Pull.objects.exists()

    camera = "rtsp://viewer:pw1@cam.example/stream1"
    response = alice_page.post(f"{base}/source", {"pullUrl": camera}, follow=True)
    shown = text(response)
    assert "Pulled from rtsp://viewer:***@cam.example/stream1" in shown
    assert "pulled by node cams" in shown and "OBS is not needed" in shown
    assert "pw1" not in response.content.decode()
    assert Pull.objects.get(stream=alice_stream).url == camera
    live = alice_page.get(f"{base}/live").content.decode()
    assert 'id="source-status" hx-swap-oob="true"' in live
    reconnect = alice_page.post(f"{base}/source/restart", follow=True)
    assert "Reconnecting to the source." in text(reconnect)
    assert Pull.objects.get(stream=alice_stream).restart_seq == 1
    back = alice_page.post(f"{base}/push", follow=True)
    assert "Back to push" in text(back) and "Pull from this URL" in text(back)
    assert not Pull.objects.exists()


def test_record_sessions_and_manage_recordings(
    alice_page: Client, alice_stream: Stream, bob: User
) -> None:
    base = f"/app/streams/{alice_stream.id}"
    response = alice_page.post(f"{base}/record", {"record": "true"}, follow=True)
    assert "Recording every live session." in text(response)
    assert "Stop recording" in text(response)
    node, _ = node_create("rec")
    session_start(alice_stream, node)
    row = {
        "id": "5f0f8a7e-1111-4c3b-9a2d-0e6f4b1c2d3e",
        "streamKey": alice_stream.stream_key,
        "startedAt": timezone.now().timestamp(),
        "durationS": 61.0,
        "bytes": 5_000_000,
        "state": "done",
    }
    node_report(node=node, streams=[], recordings=[row])
    page = text(alice_page.get(base))
    assert "61 s" in page and "4.8 MB" in page and "Download" in page
    # Another user's recording: the 404 page, for the file as for the button.
    assert signed_in(bob).get(f"/app/recordings/{row['id']}/download").status_code == 404
    assert signed_in(bob).post(f"/app/recordings/{row['id']}/delete").status_code == 404
    deleted = alice_page.post(f"/app/recordings/{row['id']}/delete", follow=True)
    assert "Recording deleted." in text(deleted) and "No recordings yet." in text(deleted)
    alice_page.post(f"{base}/record", {"record": "false"})
    assert Stream.objects.get(pk=alice_stream.pk).record is False


def test_stream_buttons(alice_page: Client, alice_stream: Stream) -> None:
    base = f"/app/streams/{alice_stream.id}"
    old_key = alice_stream.stream_key
    alice_page.post(f"{base}/rotateKey")
    alice_page.post(f"{base}/active", {"isActive": "false"})
    alice_stream.refresh_from_db()
    assert alice_stream.stream_key != old_key and not alice_stream.is_active
    assert "deactivated" in text(alice_page.get(base))
    assert alice_page.post(f"{base}/delete")["Location"] == "/app/"
    assert not Stream.objects.filter(pk=alice_stream.pk).exists()


def test_opening_a_buttons_address_leads_back_to_the_stream_and_changes_nothing(
    alice_page: Client, alice_stream: Stream
) -> None:
    """A reload after a form error, or a bookmark, must not end on an error page."""
    destination = DestinationFactory.create(stream=alice_stream)
    base = f"/app/streams/{alice_stream.id}"
    for path in ("delete", "destinations", "rotateKey", f"destinations/{destination.pk}/delete"):
        response = alice_page.get(f"{base}/{path}")
        assert response.status_code == 302 and response["Location"] == base, path
    assert Stream.objects.filter(pk=alice_stream.pk, stream_key=alice_stream.stream_key).exists()
    assert Destination.objects.filter(pk=destination.pk).exists()


def test_a_form_without_the_csrf_token_is_refused(alice: User, alice_stream: Stream) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(f"/app/streams/{alice_stream.id}/delete")
    assert response.status_code == 403
    assert "Nothing was changed" in text(response)
    assert Stream.objects.filter(pk=alice_stream.pk).exists()


# --- live status ---------------------------------------------------------------------------


def _live_stream(owner: User, destinations: int) -> Stream:
    node, _ = node_create(f"n{destinations}", last_seen_at=timezone.now())
    stream = StreamFactory.create(owner=owner)
    session_start(stream, node)
    for _ in range(destinations):
        destination = DestinationFactory.create(stream=stream)
        relay_row(destination, state=RelayState.LIVE, bitrate_kbps=3100.4, fps=30.0)
    return stream


@pytest.mark.parametrize("destinations", [1, 6])
def test_status_refresh_costs_one_request_and_seven_queries(
    alice_page: Client, alice: User, destinations: int, django_assert_num_queries: Any
) -> None:
    stream = _live_stream(alice, destinations)
    # login session, user, the stream with its publish session and node, its destinations,
    # their relays in that session; the recent sessions with their relays
    with django_assert_num_queries(7):
        response = alice_page.get(f"/app/streams/{stream.id}/live")
    html = response.content.decode()
    # each destination, and the stream's state, picture and recent sessions
    assert html.count('hx-swap-oob="true"') == destinations + 3
    assert f'src="/app/streams/{stream.id}/picture?at=' in html
    assert 'id="stream-state" hx-swap-oob="true"' in html
    assert html.count(">live</span>") == destinations + 1
    assert "3100 kb/s" in html


def test_shown_states_use_a_persons_words(alice_page: Client, alice: User) -> None:
    stream = _live_stream(alice, 1)
    relay = Relay.objects.get(session__stream=stream)
    for state, shown in [
        (RelayState.STARTING, "starting"),
        (RelayState.RECONNECTING, "reconnecting"),
        (RelayState.FAILED, "failed"),
    ]:
        Relay.objects.filter(pk=relay.pk).update(state=state, last_error="Connection refused")
        html = alice_page.get(f"/app/streams/{stream.id}/live").content.decode()
        assert f'data-testid="state">{shown}<' in html
        assert "Connection refused" in html
    Relay.objects.filter(pk=relay.pk).update(state=RelayState.LIVE)
    IngestNode.objects.update(last_seen_at=timezone.now() - timedelta(seconds=6))
    html = alice_page.get(f"/app/streams/{stream.id}/live").content.decode()
    assert 'data-testid="state">offline<' in html  # its node went quiet: no longer "live"
    Session.objects.filter(stream=stream).update(ended_at=timezone.now())
    html = alice_page.get(f"/app/streams/{stream.id}/live").content.decode()
    assert 'data-testid="state">offline<' in html


def test_stream_page_lists_recent_sessions(alice_page: Client, alice: User) -> None:
    stream = StreamFactory.create(owner=alice)
    html = alice_page.get(f"/app/streams/{stream.id}").content.decode()
    assert "No sessions yet" in html
    stream = _live_stream(alice, 1)
    relay = Relay.objects.get(session__stream=stream)
    Relay.objects.filter(pk=relay.pk).update(bytes_sent=5_300_000, restarts=2)
    Session.objects.filter(stream=stream).update(
        ended_at=timezone.now(), end_reason="publisher disconnected"
    )
    session_start(stream, IngestNode.objects.get(), client_id="2")  # live again
    html = alice_page.get(f"/app/streams/{stream.id}").content.decode()
    assert html.count("<tr>") == 3  # the header and two sessions, newest first
    assert html.index("live now") < html.index("publisher disconnected")
    assert "YouTube: 5.1\xa0MB, 2 restarts" in html
    assert "nothing relayed" in html  # the new session has no report yet


def test_relay_log_shows_the_last_lines_without_the_key(alice_page: Client, alice: User) -> None:
    stream = _live_stream(alice, 1)
    destination = stream.destinations.get()
    Relay.objects.filter(destination=destination).update(
        log=["line one", f"error at rtmp://x/{destination.stream_key}"]
    )
    page = alice_page.get(f"/app/streams/{stream.id}/destinations/{destination.pk}/log")
    html = page.content.decode()
    assert "line one" in html and destination.stream_key not in html and "***" in html


# --- webhooks ------------------------------------------------------------------------------


def test_webhook_secret_is_shown_once(alice_page: Client, alice: User) -> None:
    response = alice_page.post(
        "/app/webhooks", {"url": "https://hooks.example.com/rig", "events": ["stream.live"]}
    )
    endpoint = WebhookEndpoint.objects.get(owner=alice)
    assert response.status_code == 200
    assert endpoint.secret in response.content.decode()
    assert endpoint.events == ["stream.live"]
    listing = alice_page.get("/app/webhooks").content.decode()
    assert endpoint.secret not in listing and "https://hooks.example.com/rig" in listing
    rotated = alice_page.post(f"/app/webhooks/{endpoint.id}/rotateSecret").content.decode()
    endpoint.refresh_from_db()
    assert endpoint.secret in rotated
    alice_page.post(f"/app/webhooks/{endpoint.id}/test")
    assert "ping" in alice_page.get("/app/webhooks").content.decode()


def test_webhook_url_errors_are_shown_next_to_the_field(alice_page: Client) -> None:
    response = alice_page.post("/app/webhooks", {"url": "ftp://x.example/"})
    assert response.status_code == 400
    assert field_error(response, "url")
    assert not WebhookEndpoint.objects.exists()


def test_another_users_webhook_is_404(alice_page: Client, bob: User) -> None:
    endpoint = WebhookEndpoint.objects.create(owner=bob, url="https://b.example/")
    for action in ("rotateSecret", "test", "active", "delete"):
        assert alice_page.post(f"/app/webhooks/{endpoint.id}/{action}").status_code == 404
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == endpoint.secret


# --- operators -----------------------------------------------------------------------------


def test_nodes_page_is_for_staff_only(alice_page: Client, node: IngestNode) -> None:
    assert alice_page.get("/app/nodes").status_code == 404
    assert alice_page.post(f"/app/nodes/{node.pk}", {"isDraining": "true"}).status_code == 404
    node.refresh_from_db()
    assert not node.is_draining


def test_staff_drain_and_set_capacity(node: IngestNode) -> None:
    staff = signed_in(UserFactory.create(username="ops", is_staff=True))
    page = staff.get("/app/nodes")
    assert page.status_code == 200 and "node1" in text(page) and "unknown" in text(page)
    staff.post(f"/app/nodes/{node.pk}", {"isDraining": "true"})
    staff.post(f"/app/nodes/{node.pk}", {"capacity": "42"})
    node.refresh_from_db()
    assert node.is_draining and node.capacity == 42
    bad = staff.post(f"/app/nodes/{node.pk}", {"capacity": "-3"}, follow=True)
    assert "greater than or equal to 0" in text(bad)
    node.refresh_from_db()
    assert node.capacity == 42


# --- the API beside the pages --------------------------------------------------------------


def test_a_session_does_not_authenticate_the_api(alice_page: Client) -> None:
    """The API takes bearer tokens only, so a page's cookie is no way around CSRF there."""
    assert_error(alice_page.get("/accounts/me"), 401, 1003)
    assert_error(alice_page.post("/streams"), 401, 1003)


def test_cors_preflight_is_answered_before_authentication(settings: Any) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["http://127.0.0.1:5173"]
    client = Client()
    for path in ("/streams", "/streams/x/destination", "/accounts/auth/local", "/webhooks"):
        response = client.options(
            path,
            HTTP_ORIGIN="http://127.0.0.1:5173",
            HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
            HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,content-type",
        )
        assert response.status_code == 200, path
        assert response["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
        assert response["Access-Control-Allow-Methods"] == "GET, POST, PATCH, DELETE"
        assert response["Access-Control-Allow-Headers"] == "authorization, content-type"
        assert response["Access-Control-Max-Age"] == "3600"
    other = client.options(
        "/streams", HTTP_ORIGIN="http://evil.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET"
    )
    assert "Access-Control-Allow-Origin" not in other
    page = client.get("/app/login", HTTP_ORIGIN="http://127.0.0.1:5173")
    assert "Access-Control-Allow-Origin" not in page  # pages are never shared
    error = client.get("/streams", HTTP_ORIGIN="http://127.0.0.1:5173")
    assert_error(error, 401, 1003)  # errors carry the header, so the client can read them
    assert error["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"


def test_no_cors_origin_is_allowed_by_default() -> None:
    response = Client().options(
        "/streams", HTTP_ORIGIN="http://127.0.0.1:5173", HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET"
    )
    assert "Access-Control-Allow-Origin" not in response
