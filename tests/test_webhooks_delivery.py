"""Delivery: a signed POST to the receiver, retried with backoff, never redirected or sent to
a private address, logged per webhook; and end to end through a real worker and broker."""

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.conftest import ROOT, assert_ok
from tests.test_agents_api import form_hook
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.tasks import delivery_send, delivery_sweep


def readme_receiver() -> dict[str, Any]:
    """The receiver example of the README, so the documented check is the one tested."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## Webhooks.*?```python\n(.*?)```", readme, re.S)
    assert code is not None
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(code.group(1), namespace)  # noqa: S102 - our own README
    return namespace


verify = readme_receiver()["verify"]


class Receiver:
    """A local HTTP receiver answering with the given statuses in turn (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.delay_s = 0.0
        self.headers: dict[str, str] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append((dict(self.headers.items()), body))
                time.sleep(receiver.delay_s)
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def retries(monkeypatch) -> list[tuple[int, float]]:
    """Retries the task schedules, instead of sending them to the broker."""
    scheduled: list[tuple[int, float]] = []

    def apply_async(args: tuple[int], countdown: float) -> None:
        scheduled.append((args[0], countdown))

    monkeypatch.setattr(delivery_send, "apply_async", apply_async)
    return scheduled


def webhook_with_ping(client: APIClient, url: str, monkeypatch) -> tuple[dict, int]:
    """A webhook created over the API, and the id of the ping its test endpoint queued."""
    monkeypatch.setattr(delivery_send, "delay", lambda delivery_id: None)
    hook = assert_ok(client.post("/webhooks", {"url": url}, format="json"), "Webhook created")
    ping = assert_ok(client.post(f"/webhooks/{hook['id']}/test"), "Test event queued")
    return hook, ping["id"]


def log(client: APIClient, hook: dict) -> list[dict]:
    return assert_ok(client.get(f"/webhooks/{hook['id']}/deliveries"), "Webhook deliveries")


@pytest.mark.django_db
def test_signed_delivery(alice_client, receiver: Receiver, retries, monkeypatch) -> None:
    hook, delivery_id = webhook_with_ping(alice_client, receiver.url, monkeypatch)
    assert delivery_send.apply(args=(delivery_id,)).get() is True
    [(headers, body)] = receiver.requests
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "rig-webhooks/1"
    assert abs(int(headers["Rig-Webhook-Timestamp"]) - time.time()) < 10
    assert verify(hook["secret"], headers, body)
    assert not verify("whsec_wrong", headers, body)
    assert not verify(hook["secret"], headers, body + b" ")
    event = json.loads(body)
    assert set(event) == {"id", "event", "createdAt", "data"}
    assert event["event"] == "ping"
    assert event["data"] == {"webhookId": hook["id"]}
    assert headers["Rig-Webhook-Id"] == event["id"]
    [entry] = log(alice_client, hook)
    assert entry["eventId"] == event["id"]
    assert entry["status"] == "delivered"
    assert (entry["attempts"], entry["responseCode"], entry["lastError"]) == (1, 200, None)
    assert entry["deliveredAt"] is not None
    assert delivery_send.apply(args=(delivery_id,)).get() is True  # again: nothing is sent
    assert len(receiver.requests) == 1 and retries == []


@pytest.mark.django_db
def test_rotated_secret_signs_the_next_delivery(
    alice_client, receiver: Receiver, retries, monkeypatch
) -> None:
    hook, delivery_id = webhook_with_ping(alice_client, receiver.url, monkeypatch)
    rotated = assert_ok(
        alice_client.post(f"/webhooks/{hook['id']}/rotateSecret"), "Webhook secret rotated"
    )
    delivery_send.apply(args=(delivery_id,))
    [(headers, body)] = receiver.requests
    assert verify(rotated["secret"], headers, body)
    assert not verify(hook["secret"], headers, body)


@pytest.mark.django_db
def test_failure_is_retried_with_backoff_then_delivered(
    alice_client, receiver: Receiver, retries, monkeypatch, settings
) -> None:
    settings.RIG_WEBHOOK_BACKOFF_MS = 4000
    receiver.statuses = [500]
    hook, delivery_id = webhook_with_ping(alice_client, receiver.url, monkeypatch)
    assert delivery_send.apply(args=(delivery_id,)).get() is False
    [(retried_id, countdown)] = retries
    assert retried_id == delivery_id and 4 <= countdown <= 5  # base, plus up to 25% jitter
    [entry] = log(alice_client, hook)
    assert entry["status"] == "pending"
    assert (entry["attempts"], entry["responseCode"], entry["lastError"]) == (1, 500, "HTTP 500")
    assert entry["nextAttemptAt"] is not None
    delivery_send.apply(args=(delivery_id,))  # a duplicate task before the retry is due
    assert len(receiver.requests) == 1
    WebhookDelivery.objects.filter(pk=delivery_id).update(next_attempt_at=timezone.now())
    assert delivery_send.apply(args=(delivery_id,)).get() is True
    [entry] = log(alice_client, hook)
    assert entry["status"] == "delivered"
    assert (entry["attempts"], entry["responseCode"], entry["lastError"]) == (2, 200, None)
    first, second = receiver.requests
    assert first[1] == second[1]  # the same event, byte for byte
    assert first[0]["Rig-Webhook-Id"] == second[0]["Rig-Webhook-Id"]


@pytest.mark.django_db
def test_backoff_doubles_and_gives_up(
    alice_client, receiver: Receiver, retries, monkeypatch, settings
) -> None:
    settings.RIG_WEBHOOK_BACKOFF_MS = 1000
    settings.RIG_WEBHOOK_MAX_ATTEMPTS = 4
    receiver.statuses = [503] * 10
    hook, delivery_id = webhook_with_ping(alice_client, receiver.url, monkeypatch)
    for _ in range(4):
        WebhookDelivery.objects.filter(pk=delivery_id).update(next_attempt_at=None)
        delivery_send.apply(args=(delivery_id,))
    assert len(retries) == 3  # 1 s, 2 s, 4 s, each plus up to 25% jitter
    assert all(2**n <= c <= 1.25 * 2**n for n, (_, c) in enumerate(retries))
    [entry] = log(alice_client, hook)
    assert (entry["status"], entry["attempts"], entry["responseCode"]) == ("failed", 4, 503)
    assert entry["nextAttemptAt"] is None
    delivery_send.apply(args=(delivery_id,))
    assert len(receiver.requests) == 4  # failed for good: no fifth attempt


@pytest.mark.django_db
def test_redirects_are_not_followed(alice_client, receiver: Receiver, retries, monkeypatch) -> None:
    elsewhere = Receiver()
    try:
        receiver.statuses = [302]
        receiver.headers = {"Location": elsewhere.url}
        hook, delivery_id = webhook_with_ping(alice_client, receiver.url, monkeypatch)
        delivery_send.apply(args=(delivery_id,))
        assert elsewhere.requests == []
        [entry] = log(alice_client, hook)
        assert (entry["status"], entry["responseCode"]) == ("pending", 302)
    finally:
        elsewhere.close()


@pytest.mark.django_db
def test_private_address_refused_at_send_time(
    alice_client, receiver: Receiver, retries, monkeypatch, settings
) -> None:
    """Allowed when registered (dev), refused when sent once the guard is on."""
    hook, delivery_id = webhook_with_ping(alice_client, receiver.url, monkeypatch)
    settings.RIG_ALLOW_PRIVATE_DESTINATIONS = False
    delivery_send.apply(args=(delivery_id,))
    assert receiver.requests == []
    [entry] = log(alice_client, hook)
    assert entry["responseCode"] is None
    assert "private" in entry["lastError"]


@pytest.mark.django_db
def test_private_address_refused_after_resolution(
    receiver: Receiver, settings, monkeypatch
) -> None:
    """A public-looking name that resolves to loopback when connecting (DNS rebinding)."""
    import socket

    from webhooks import sender

    real = socket.getaddrinfo
    monkeypatch.setattr(sender, "url_error", lambda url: None)  # it passed validation earlier
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real("127.0.0.1", *a, **k))
    settings.RIG_ALLOW_PRIVATE_DESTINATIONS = False
    port = receiver.url.split(":")[2].split("/")[0]
    code, error = sender.post(
        url=f"http://rebind.example.com:{port}/hook",
        secret="s",
        webhook_id="x",
        timestamp=0,
        body=b"{}",
        timeout=2,
    )
    assert code is None and "private" in error
    assert receiver.requests == []


@pytest.mark.django_db
def test_timeout_is_a_failed_attempt(
    alice_client, receiver: Receiver, retries, monkeypatch, settings
) -> None:
    settings.RIG_WEBHOOK_TIMEOUT_MS = 300
    receiver.delay_s = 1.5
    hook, delivery_id = webhook_with_ping(alice_client, receiver.url, monkeypatch)
    started = time.monotonic()
    delivery_send.apply(args=(delivery_id,))
    assert time.monotonic() - started < 1.2
    [entry] = log(alice_client, hook)
    assert entry["status"] == "pending" and entry["responseCode"] is None
    assert "timed out" in entry["lastError"]


@pytest.mark.django_db
def test_events_queued_before_disabling_are_dropped(
    alice_client, alice, receiver: Receiver, retries, monkeypatch
) -> None:
    from webhooks.services import event_emit

    hook, _ = webhook_with_ping(alice_client, receiver.url, monkeypatch)
    event_emit(user_id=alice.id, event="stream.live", data={"streamID": "s"})
    assert_ok(
        alice_client.patch(f"/webhooks/{hook['id']}", {"isActive": False}, format="json"),
        "Webhook updated",
    )
    for delivery_id in WebhookDelivery.objects.values_list("id", flat=True):
        delivery_send.apply(args=(delivery_id,))
    assert [json.loads(body)["event"] for _, body in receiver.requests] == ["ping"]
    by_event = {entry["event"]: entry for entry in log(alice_client, hook)}
    assert by_event["stream.live"]["status"] == "failed"
    assert by_event["stream.live"]["lastError"] == "Webhook disabled: not sent."
    assert by_event["ping"]["status"] == "delivered"
    assert retries == []


@pytest.mark.django_db
def test_only_the_last_deliveries_are_kept(
    alice_client, receiver: Receiver, retries, monkeypatch, settings
) -> None:
    settings.RIG_WEBHOOK_DELIVERIES_KEPT = 3
    hook, first = webhook_with_ping(alice_client, receiver.url, monkeypatch)
    ids = [first]
    for _ in range(4):
        ids.append(
            assert_ok(alice_client.post(f"/webhooks/{hook['id']}/test"), "Test event queued")["id"]
        )
    for delivery_id in ids:
        delivery_send.apply(args=(delivery_id,))
    assert [entry["id"] for entry in log(alice_client, hook)] == ids[:-4:-1]
    assert WebhookDelivery.objects.count() == 3


@pytest.mark.django_db
def test_sweep_sends_what_the_broker_missed(alice_client, receiver: Receiver, monkeypatch) -> None:
    _, delivery_id = webhook_with_ping(alice_client, receiver.url, monkeypatch)
    swept: list[int] = []
    monkeypatch.setattr(delivery_send, "delay", swept.append)
    assert delivery_sweep.apply().get() == 0  # fresh: its own task is still on the way
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        created_at=timezone.now() - timedelta(minutes=5)
    )
    assert delivery_sweep.apply().get() == 1
    assert swept == [delivery_id]


# --- end to end: real worker, real broker ----------------------------------------------------


@pytest.fixture
def webhook_worker(request, monkeypatch, transactional_db: None) -> Any:
    """The worker with fast retries and loopback receivers allowed."""
    monkeypatch.setenv("RIG_WEBHOOK_BACKOFF_MS", "300")
    monkeypatch.setenv("RIG_ALLOW_PRIVATE_DESTINATIONS", "1")
    return request.getfixturevalue("celery_worker_process")


def test_publish_is_delivered_by_the_worker_after_a_retry(
    webhook_worker, receiver: Receiver, alice_client, node_and_token, alice_stream
) -> None:
    receiver.statuses = [500]
    hook = assert_ok(
        alice_client.post(
            "/webhooks", {"url": receiver.url, "events": ["stream.live"]}, format="json"
        ),
        "Webhook created",
    )
    _, token = node_and_token
    assert_ok(form_hook(token, "publish", alice_stream.stream_key), "OK")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        entries = log(alice_client, hook)
        if entries and entries[0]["status"] != "pending":
            break
        time.sleep(0.1)
    [entry] = entries
    assert entry["event"] == "stream.live"
    assert (entry["status"], entry["attempts"], entry["responseCode"]) == ("delivered", 2, 200)
    assert len(receiver.requests) == 2
    for headers, body in receiver.requests:
        assert verify(hook["secret"], headers, body)
        event = json.loads(body)
        assert event["event"] == "stream.live"
        assert event["data"]["streamID"] == str(alice_stream.id)
        assert alice_stream.stream_key not in body.decode()


def test_pending_deliveries_are_never_pruned(
    alice_client, receiver: Receiver, retries, monkeypatch, settings
) -> None:
    settings.RIG_WEBHOOK_DELIVERIES_KEPT = 2
    hook, first = webhook_with_ping(alice_client, receiver.url, monkeypatch)
    ids = [first] + [
        assert_ok(alice_client.post(f"/webhooks/{hook['id']}/test"), "Test event queued")["id"]
        for _ in range(3)
    ]
    delivery_send.apply(args=(ids[-1],))  # the newest is delivered; the older ones still wait
    assert dict(WebhookDelivery.objects.values_list("id", "status")) == {
        ids[0]: "pending",
        ids[1]: "pending",
        ids[2]: "pending",
        ids[3]: "delivered",
    }


def test_a_lost_last_attempt_ends_failed(
    alice_client, receiver: Receiver, retries, monkeypatch, settings
) -> None:
    hook, ping = webhook_with_ping(alice_client, receiver.url, monkeypatch)
    WebhookDelivery.objects.filter(pk=ping).update(attempts=settings.RIG_WEBHOOK_MAX_ATTEMPTS)
    delivery_send.apply(args=(ping,))
    assert receiver.requests == []
    assert [(d["status"], d["attempts"]) for d in log(alice_client, hook)] == [
        ("failed", settings.RIG_WEBHOOK_MAX_ATTEMPTS)
    ]
    assert retries == []


def test_a_url_refused_at_send_time_is_a_failed_attempt(
    alice_client, receiver: Receiver, retries, monkeypatch
) -> None:
    hook, ping = webhook_with_ping(alice_client, receiver.url, monkeypatch)
    WebhookEndpoint.objects.filter(pk=hook["id"]).update(url=receiver.url + "/é")  # legacy row
    delivery_send.apply(args=(ping,))
    (entry,) = log(alice_client, hook)
    assert entry["status"] == "pending" and entry["attempts"] == 1
    assert entry["lastError"].startswith("Must be ASCII")
    assert [delivery_id for delivery_id, _ in retries] == [ping]
