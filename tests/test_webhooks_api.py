"""Webhook endpoints: CRUD, validation, tenancy, the per-user limit and the delivery log."""

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from tests.conftest import assert_error, assert_ok
from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/rig?src=1"


def create(client: APIClient, **body: object):
    return client.post("/webhooks", {"url": URL, **body}, format="json")


@pytest.fixture
def hook(alice_client: APIClient) -> dict:
    return assert_ok(create(alice_client, events=["stream.live"]), "Webhook created")


def test_create_shows_secret_once(alice_client: APIClient, alice: User) -> None:
    payload = assert_ok(create(alice_client), "Webhook created")
    assert set(payload) == {"id", "url", "events", "isActive", "createdAt", "secret"}
    assert payload["url"] == URL
    assert payload["events"] == []  # empty: every event
    assert payload["isActive"] is True
    assert payload["secret"].startswith("whsec_") and len(payload["secret"]) >= 40
    endpoint = WebhookEndpoint.objects.get(owner=alice)
    assert str(endpoint.id) == payload["id"]
    detail = assert_ok(alice_client.get(f"/webhooks/{payload['id']}"), "Webhook detail")
    listed = assert_ok(alice_client.get("/webhooks/"), "Webhook list for user")
    assert "secret" not in detail and listed == [detail]
    assert payload["secret"] not in str(listed)


def test_secrets_differ_per_webhook(alice_client: APIClient) -> None:
    first = assert_ok(create(alice_client), "Webhook created")["secret"]
    second = assert_ok(create(alice_client), "Webhook created")["secret"]
    assert first != second


def test_create_with_events_and_inactive(alice_client: APIClient) -> None:
    payload = assert_ok(
        create(
            alice_client,
            events=["destination.failed", "stream.live", "stream.live"],
            isActive=False,
        ),
        "Webhook created",
    )
    assert payload["events"] == ["stream.live", "destination.failed"]
    assert payload["isActive"] is False


def test_update(alice_client: APIClient, hook: dict) -> None:
    url = f"/webhooks/{hook['id']}"
    payload = assert_ok(
        alice_client.patch(
            url, {"url": "http://other.example.com/h", "isActive": False}, format="json"
        ),
        "Webhook updated",
    )
    assert payload["url"] == "http://other.example.com/h"
    assert payload["isActive"] is False
    assert payload["events"] == ["stream.live"]  # untouched
    payload = assert_ok(alice_client.patch(url, {"events": []}, format="json"), "Webhook updated")
    assert payload["events"] == []
    assert assert_ok(alice_client.get(url), "Webhook detail") == payload


def test_rotate_secret(alice_client: APIClient, hook: dict) -> None:
    payload = assert_ok(
        alice_client.post(f"/webhooks/{hook['id']}/rotateSecret"), "Webhook secret rotated"
    )
    assert payload["secret"].startswith("whsec_")
    assert payload["secret"] != hook["secret"]
    assert WebhookEndpoint.objects.get(pk=hook["id"]).secret == payload["secret"]


def test_delete(alice_client: APIClient, hook: dict) -> None:
    assert assert_ok(alice_client.delete(f"/webhooks/{hook['id']}/"), "Webhook deleted") == {
        "id": hook["id"]
    }
    assert_error(alice_client.get(f"/webhooks/{hook['id']}"), 404, 1000)
    assert assert_ok(alice_client.get("/webhooks"), "Webhook list for user") == []


def test_test_enqueues_a_ping(
    alice_client: APIClient, hook: dict, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    from webhooks.tasks import delivery_send

    sent: list[int] = []
    monkeypatch.setattr(delivery_send, "delay", sent.append)
    with django_capture_on_commit_callbacks(execute=True):
        payload = assert_ok(alice_client.post(f"/webhooks/{hook['id']}/test"), "Test event queued")
    assert payload["event"] == "ping"  # sent though the webhook subscribes to stream.live only
    assert payload["status"] == "pending"
    assert sent == [payload["id"]]
    deliveries = assert_ok(
        alice_client.get(f"/webhooks/{hook['id']}/deliveries"), "Webhook deliveries"
    )
    assert [d["id"] for d in deliveries] == [payload["id"]]


def test_deliveries_newest_first_and_query_count(
    alice_client: APIClient, hook: dict, django_assert_num_queries
) -> None:
    endpoint = WebhookEndpoint.objects.get(pk=hook["id"])
    for n in range(5):
        WebhookDelivery.objects.create(
            endpoint=endpoint,
            event="stream.live",
            payload={"n": n},
            status=DeliveryStatus.FAILED,
            attempts=6,
            response_code=500,
            last_error="HTTP 500",
        )
    with django_assert_num_queries(3):  # token's user, the webhook, its deliveries
        payload = assert_ok(
            alice_client.get(f"/webhooks/{hook['id']}/deliveries"), "Webhook deliveries"
        )
    assert [d["id"] for d in payload] == sorted((d["id"] for d in payload), reverse=True)
    assert len(payload) == 5
    assert payload[0] == {
        "id": payload[0]["id"],
        "eventId": payload[0]["eventId"],
        "event": "stream.live",
        "status": "failed",
        "responseCode": 500,
        "attempts": 6,
        "lastError": "HTTP 500",
        "createdAt": payload[0]["createdAt"],
        "deliveredAt": None,
        "nextAttemptAt": None,
    }
    assert "data" not in str(payload) and hook["secret"] not in str(payload)


def test_list_query_count(alice_client: APIClient, django_assert_num_queries) -> None:
    for _ in range(4):
        create(alice_client)
    with django_assert_num_queries(2):
        assert len(assert_ok(alice_client.get("/webhooks"), "Webhook list for user")) == 4


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, field",
    [
        ({"url": URL, "events": ["stream.live", "stream.exploded"]}, "events"),
        ({"url": URL, "events": ["ping"]}, "events"),
        ({"url": URL, "events": "stream.live"}, "events"),
        ({"url": URL, "events": [5]}, "events"),
        ({"url": 5}, "url"),
        ({"url": URL, "isActive": "yes"}, "isActive"),
        ({"url": URL, "secret": "mine"}, "secret"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "example.com/x"}, "url"),
        ({"url": "https://user:pw@example.com/x"}, "url"),
        ({"url": "https://example.com/x#frag"}, "url"),
        ({"url": "https://exa mple.com/x"}, "url"),
        ({"url": "https://example.com:99999/x"}, "url"),
        ({"url": "https://example.com/" + "a" * 2000}, "url"),
    ],
)
def test_create_invalid_is_1005(alice_client: APIClient, body: dict, field: str) -> None:
    response = alice_client.post("/webhooks", body, format="json")
    assert field in assert_error(response, 400, 1005)["details"]
    assert not WebhookEndpoint.objects.exists()


def test_create_missing_url_is_1004(alice_client: APIClient) -> None:
    body = assert_error(alice_client.post("/webhooks", {}, format="json"), 400, 1004)
    assert "url" in body["details"]


def test_malformed_json_is_1002(alice_client: APIClient) -> None:
    response = alice_client.generic(
        "POST", "/webhooks", '{"url": ', content_type="application/json"
    )
    assert_error(response, 415, 1002)


def test_update_invalid(alice_client: APIClient, hook: dict) -> None:
    url = f"/webhooks/{hook['id']}"
    assert_error(alice_client.patch(url, {"events": ["nope"]}, format="json"), 400, 1005)
    assert_error(alice_client.patch(url, {"url": "gopher://x"}, format="json"), 400, 1005)
    assert_error(alice_client.patch(url, {"id": "x"}, format="json"), 400, 1005)
    assert assert_ok(alice_client.get(url), "Webhook detail")["events"] == ["stream.live"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "https://10.0.0.5/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
        "http://metadata.internal/hook",
    ],
)
def test_private_hosts_refused_unless_allowed(alice_client: APIClient, settings, url: str) -> None:
    settings.RIG_ALLOW_PRIVATE_DESTINATIONS = False
    body = assert_error(alice_client.post("/webhooks", {"url": url}, format="json"), 400, 1005)
    assert body["details"] == {"url": ["Loopback, private and link-local hosts are not allowed."]}
    assert not WebhookEndpoint.objects.exists()
    settings.RIG_ALLOW_PRIVATE_DESTINATIONS = True
    assert_ok(alice_client.post("/webhooks", {"url": url}, format="json"), "Webhook created")


def test_limit_per_user(alice_client: APIClient, bob_client: APIClient, settings) -> None:
    settings.RIG_MAX_WEBHOOKS_PER_USER = 2
    create(alice_client)
    create(alice_client)
    body = assert_error(create(alice_client), 409, 1011)
    assert body["message"] == "Webhook limit reached"
    assert WebhookEndpoint.objects.count() == 2
    assert_ok(create(bob_client), "Webhook created")  # the limit is per user


# --- tenancy -------------------------------------------------------------------------------

CALLS: list[tuple[str, Callable[[str], str], dict | None]] = [
    ("get", lambda i: f"/webhooks/{i}", None),
    ("patch", lambda i: f"/webhooks/{i}", {"isActive": False}),
    ("delete", lambda i: f"/webhooks/{i}", None),
    ("post", lambda i: f"/webhooks/{i}/rotateSecret", None),
    ("post", lambda i: f"/webhooks/{i}/test", None),
    ("get", lambda i: f"/webhooks/{i}/deliveries", None),
]
IDS = [f"{method.upper()} {url('ID')}" for method, url, _ in CALLS]


@pytest.mark.parametrize("call", CALLS, ids=IDS)
def test_other_tenant_and_unknown_ids_are_the_same_404(
    alice_client: APIClient, bob_client: APIClient, hook: dict, call
) -> None:
    method, url, body = call
    before = list(WebhookEndpoint.objects.values_list())
    foreign = getattr(bob_client, method)(url(hook["id"]), body, format="json")
    unknown = getattr(bob_client, method)(
        url("00000000-0000-4000-8000-000000000000"), body, format="json"
    )
    garbage = getattr(bob_client, method)(url("not-a-uuid"), body, format="json")
    assert_error(foreign, 404, 1000)
    assert foreign.content == unknown.content == garbage.content
    assert list(WebhookEndpoint.objects.values_list()) == before
    assert not WebhookDelivery.objects.exists()


@pytest.mark.parametrize("call", CALLS, ids=IDS)
def test_anonymous_is_401(anon_client: APIClient, hook: dict, call) -> None:
    method, url, body = call
    assert_error(getattr(anon_client, method)(url(hook["id"]), body, format="json"), 401, 1003)


def test_anonymous_list_and_create_are_401(anon_client: APIClient) -> None:
    assert_error(anon_client.get("/webhooks"), 401, 1003)
    assert_error(create(anon_client), 401, 1003)
    assert not WebhookEndpoint.objects.exists()


def test_list_shows_only_own(alice_client: APIClient, bob_client: APIClient, hook: dict) -> None:
    assert assert_ok(bob_client.get("/webhooks"), "Webhook list for user") == []
    assert [w["id"] for w in assert_ok(alice_client.get("/webhooks"), "Webhook list for user")] == [
        hook["id"]
    ]


def test_node_token_cannot_use_webhooks(node_client: APIClient) -> None:
    assert_error(node_client.get("/webhooks"), 401, 1003)


def test_non_ascii_url_is_refused(alice_client: APIClient) -> None:
    body = assert_error(
        alice_client.post("/webhooks", {"url": "https://example.com/é"}, format="json"), 400, 1005
    )
    assert body["details"]["url"] == [
        "Must be ASCII: percent-encode other characters (punycode for host names)."
    ]


def test_test_pings_are_throttled(alice_client: APIClient, hook: dict, monkeypatch) -> None:
    from webhooks.tasks import delivery_send

    monkeypatch.setattr(delivery_send, "delay", lambda delivery_id: None)
    url = f"/webhooks/{hook['id']}/test"
    for _ in range(10):
        assert_ok(alice_client.post(url), "Test event queued")
    body = assert_error(alice_client.post(url), 429, 1010)
    assert body["details"]["retryAfter"] > 0


def test_delete_answers_the_canonical_id(alice_client: APIClient, hook: dict) -> None:
    deleted = assert_ok(alice_client.delete(f"/webhooks/{hook['id'].upper()}"), "Webhook deleted")
    assert deleted == {"id": hook["id"]}
