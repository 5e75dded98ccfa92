"""Hostile input and hostile clients: each case broke rig before (a 500, a bypass, a leak)."""

import json
import os
import socket
import threading
from typing import Any

import pytest
import redis
from django.core.cache import cache
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from accounts.apis import account_ident
from accounts.models import User
from agents.node.relay import RelaySpec, relay_secrets
from streams.models import Destination, Relay, Stream
from tests.conftest import assert_error, assert_ok, client_for
from tests.factories import PASSWORD, DestinationFactory
from tests.media.harness import free_port
from tests.test_agents_api import form_hook

pytestmark = pytest.mark.django_db


def _raw(client: APIClient, path: str, body: bytes, **extra: Any) -> Any:
    send: Any = client.generic  # the stubs say str; raw bytes are the point here
    return send("POST", path, data=body, content_type="application/json", **extra)


# --- input that used to be a 500 ------------------------------------------------------------


def test_deep_nesting_is_a_parse_error() -> None:
    body = b"[" * 30_000 + b"]" * 30_000  # within the body limit, past the parser's depth
    response = _raw(APIClient(), "/accounts/auth/local", body)
    assert_error(response, 415, 1002)
    assert response.json()["details"]["body"] == ["JSON nested too deeply."]


@pytest.mark.parametrize(
    "body",
    [b'{"\\ud800": 1}', b'{"username": "\\udfff", "password": "x"}', b'{"a": ["\\ud83d"]}'],
)
def test_lone_surrogates_are_a_parse_error(body: bytes) -> None:
    assert_error(_raw(APIClient(), "/accounts/auth/local", body), 415, 1002)


def test_echoed_input_is_ascii_json() -> None:
    response = _raw(APIClient(), "/accounts/auth/local", json.dumps({"é": 1}).encode())
    body = assert_error(response, 400, 1005)
    assert response.content.isascii() and body["details"]["é"] == ["Unknown field."]


def test_hook_refuses_a_json_array_and_nul(node_and_token: Any, alice_stream: Stream) -> None:
    _, token = node_and_token
    response = _raw(APIClient(), f"/agents/hooks/{token}/publish", b"[1, 2]")
    assert_error(response, 404, 1000)  # no such application: not nginx's form
    assert_error(form_hook(token, "publish", "k\x00ey"), 404, 1000)
    assert_error(form_hook(token, "publish", alice_stream.stream_key, clientid="7\x00"), 400, 1005)
    alice_stream.refresh_from_db()
    assert alice_stream.is_streaming is False


def test_nul_in_a_config_key_is_not_found(node_client: APIClient) -> None:
    assert_error(node_client.get("/agents/config/abc%00def"), 404, 1000)


def test_a_foreign_host_gets_the_envelope(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["rig.example.com"]
    response = APIClient().get("/streams", HTTP_HOST="evil.example")
    assert_error(response, 400, 1005)


def test_a_destination_key_with_a_final_newline_is_refused(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    response = alice_client.post(
        f"/streams/{alice_stream.id}/destination",
        {"service": "Twitch", "streamKey": "live_123\n"},
        format="json",
    )
    assert "streamKey" in assert_error(response, 400, 1005)["details"]
    assert not Destination.objects.exists()


@pytest.mark.parametrize(
    "host", ["[::127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]", "[::ffff:10.0.0.1]"]
)
def test_ipv6_forms_of_private_addresses_are_refused(
    alice_client: APIClient, alice_stream: Stream, settings: Any, host: str
) -> None:
    settings.RIG_ALLOW_PRIVATE_DESTINATIONS = False
    response = alice_client.post(
        f"/streams/{alice_stream.id}/destination",
        {"service": "Custom", "serverUrl": f"rtmp://{host}/app", "streamKey": "k"},
        format="json",
    )
    assert "serverUrl" in assert_error(response, 400, 1005)["details"]


def test_a_slow_resolver_does_not_hold_the_request(
    alice_client: APIClient, alice_stream: Stream, settings: Any, monkeypatch: Any
) -> None:
    settings.RIG_ALLOW_PRIVATE_DESTINATIONS = False
    settings.RIG_DNS_TIMEOUT_S = 0.2
    answer = threading.Event()

    def hanging(*args: Any, **kwargs: Any) -> Any:
        answer.wait(30)  # a resolver that takes its time
        raise socket.gaierror("too late")

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        response = alice_client.post(
            f"/streams/{alice_stream.id}/destination",
            {"service": "Custom", "serverUrl": "rtmp://slow.example.com/app", "streamKey": "k"},
            format="json",
        )
        assert not answer.is_set()  # answered while the lookup still hangs
    finally:
        answer.set()
    assert assert_error(response, 400, 1005)["details"]["serverUrl"] == [
        "The host does not resolve."
    ]


# --- throttles that could be walked around --------------------------------------------------


def _login(password: str, **extra: Any) -> Any:
    body = {"username": "alice", "password": password}
    return APIClient().post("/accounts/auth/local", body, format="json", **extra)


def test_a_forged_forwarded_for_is_no_new_client(alice: User) -> None:
    for n in range(10):
        _login("wrong-password", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
    assert_error(_login(PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.7"), 429, 1010)


def test_guesses_spread_over_many_clients_are_counted_per_account(alice: User) -> None:
    for n in range(30):  # 30 an hour per account; 10 a minute per client
        _login("wrong-password", REMOTE_ADDR=f"203.0.113.{n}")
    assert_error(_login(PASSWORD, REMOTE_ADDR="198.51.100.7"), 429, 1010)
    other = APIClient().post(
        "/accounts/auth/local", {"username": "bob", "password": "x"}, format="json"
    )
    assert_error(other, 401, 1003)  # another account is not locked with it


def _redis_cache(url: str) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "rig.cache.ResilientRedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }


def test_throttle_counters_are_shared_in_redis(alice: User, settings: Any) -> None:
    """Every worker and host counts against one limit: the counters live in Redis."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15").rsplit("/", 1)[0] + "/13"
    settings.CACHES = _redis_cache(url)
    try:
        for _ in range(10):
            assert_error(_login("wrong-password"), 401, 1003)
        counters = redis.Redis.from_url(url).keys("*throttle_login*")
        assert counters  # where another gunicorn worker reads them
        assert_error(_login(PASSWORD), 429, 1010)
    finally:
        cache.clear()


def test_throttles_fail_open_while_the_cache_is_down(alice: User, settings: Any) -> None:
    """A cache outage is no API outage: logins are answered (unthrottled meanwhile)."""
    port = free_port()  # nothing listens there
    settings.CACHES = _redis_cache(f"redis://127.0.0.1:{port}/0")
    for _ in range(12):
        assert_error(_login("wrong-password"), 401, 1003)
    assert_ok(_login(PASSWORD), "Authentication successful")


def test_a_username_with_nul_makes_a_safe_throttle_key(alice: User) -> None:
    body = {"username": "al\x00ice", "password": "x"}
    assert_error(APIClient().post("/accounts/auth/local", body, format="json"), 400, 1005)
    for name in ("al\x00ice", "a" * 999, "ALICE \u00e9"):
        ident = account_ident(name)  # fit for any cache: printable, bounded
        assert ident.isalnum() and len(ident) <= 64
    assert account_ident("Alice") == account_ident("alice")


def test_admin_login_guesses_are_throttled(alice: User) -> None:
    """Django admin's login counts in the same buckets as the API's."""
    client = Client()
    form = {"username": "alice", "password": "wrong-password", "next": "/admin/"}
    for _ in range(10):
        assert client.post("/admin/login/", form).status_code == 200  # the form, again
    refused = client.post("/admin/login/", {**form, "password": PASSWORD})
    assert refused.status_code == 429 and b"Too many attempts" in refused.content
    assert_error(_login(PASSWORD), 429, 1010)  # the API's bucket is the same one


def test_old_password_guesses_are_throttled(alice_client: APIClient) -> None:
    body = {"oldPassword": "wrong-password", "newPassword": "An0ther-Passw0rd"}
    for _ in range(10):
        assert_error(alice_client.post("/accounts/password", body, format="json"), 401, 1003)
    assert_error(alice_client.post("/accounts/password", body, format="json"), 429, 1010)


def test_a_refresh_token_is_used_once_under_concurrency(transactional_db: None) -> None:
    User.objects.create_user(username="carol", email="c@example.com", password=PASSWORD)
    login = APIClient().post(
        "/accounts/auth/local", {"username": "carol", "password": PASSWORD}, format="json"
    )
    body = {"refreshToken": login.json()["payload"]["refreshToken"]}
    start = threading.Barrier(8)
    codes: list[int] = []

    def use() -> None:
        try:
            start.wait()
            response = APIClient().post("/accounts/auth/refresh", body, format="json")
            codes.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(codes) == [200] + [401] * 7


# --- the rig stream key never leaves its owner ----------------------------------------------


def test_relay_secrets_cover_the_source_key() -> None:
    spec = RelaySpec("s:1", "rtmp://127.0.0.1:1935/live/RIGKEY123", "rtmp://yt/live2/ytkey")
    assert {"RIGKEY123", "ytkey"} <= set(relay_secrets(spec))


def test_a_key_a_node_missed_is_redacted_before_it_is_stored(
    node_and_token: Any, alice_client: APIClient, alice_stream: Stream
) -> None:
    _, token = node_and_token
    destination = DestinationFactory.create(stream=alice_stream, stream_key="dest-secret")
    form_hook(token, "publish", alice_stream.stream_key)
    source = f"rtmp://127.0.0.1:1935/live/{alice_stream.stream_key}"
    relay = {
        "destinationId": destination.pk,
        "state": "failed",
        "lastError": f"{source}: Input/output error",
        "newLog": [f"Opening {source}", "rtmp://yt/live2/dest-secret refused"],
    }
    body = {"streams": [{"streamKey": alice_stream.stream_key, "relays": [relay]}]}
    assert_ok(
        client_for(token=token).post("/agents/status", body, format="json"), "Status recorded"
    )
    stored = Relay.objects.get(destination=destination)
    text = stored.last_error + "\n".join(stored.log)
    assert alice_stream.stream_key not in text and "dest-secret" not in text
    assert "live/***" in stored.last_error


def test_a_newline_in_a_path_cannot_forge_a_log_line(caplog: Any) -> None:
    APIClient().get("/nope%0a2026-01-01 INFO rig.access GET /admin 200")
    [line] = [r.getMessage() for r in caplog.records if r.name == "rig.access"]
    assert "\n" not in line and "\\n2026-01-01" in line


# --- secrets at rest ------------------------------------------------------------------------


def _stored(table: str, column: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table}")  # noqa: S608 - fixed names
        return [row[0] for row in cursor.fetchall()]


def test_destination_keys_and_webhook_secrets_are_encrypted_at_rest(
    alice_client: APIClient, alice_stream: Stream
) -> None:
    alice_client.post(
        f"/streams/{alice_stream.id}/destination",
        {"service": "Twitch", "streamKey": "live_secret_123"},
        format="json",
    )
    hook = alice_client.post("/webhooks", {"url": "https://h.example.com/x"}, format="json")
    secret = hook.json()["payload"]["secret"]
    [key_row] = _stored("streams_destination", "stream_key")
    [secret_row] = _stored("webhooks_webhookendpoint", "secret")
    assert key_row.startswith("gAAAAA") and "live_secret_123" not in key_row
    assert secret_row.startswith("gAAAAA") and secret not in secret_row
    assert Destination.objects.get().stream_key == "live_secret_123"  # the owner's view


def test_rotating_the_encryption_key(alice_stream: Stream, settings: Any) -> None:
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    from rig import crypto

    DestinationFactory.create(stream=alice_stream, stream_key="k-before")
    old = _stored("streams_destination", "stream_key")[0]
    new_key = Fernet.generate_key().decode()
    settings.RIG_ENCRYPTION_KEYS = [new_key, *crypto.keys()]  # a new key in front
    crypto._fernet.cache_clear()
    try:
        assert Destination.objects.get().stream_key == "k-before"  # old rows still read
        call_command("secrets_reencrypt")
        rotated = _stored("streams_destination", "stream_key")[0]
        assert rotated != old
        assert Fernet(new_key.encode()).decrypt(rotated.encode()) == b"k-before"
    finally:
        crypto._fernet.cache_clear()


def test_a_key_stored_before_encryption_still_reads(alice_stream: Stream) -> None:
    destination = DestinationFactory.create(stream=alice_stream)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE streams_destination SET stream_key = 'plain-legacy'")
    destination.refresh_from_db()
    assert destination.stream_key == "plain-legacy"


def test_refresh_tokens_are_not_stored(alice: User) -> None:
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

    assert_ok(_login(PASSWORD), "Authentication successful")
    assert OutstandingToken.objects.count() == 1
    assert set(OutstandingToken.objects.values_list("token", flat=True)) == {""}
