"""Request ids and access lines: every record carries the id, secrets never reach a log line."""

import json
import logging
import re

import pytest
from celery import shared_task
from django.test import RequestFactory
from rest_framework.test import APIClient

from rig.logs import JsonFormatter, RequestIdFilter, redact, request_id_var
from streams.models import Stream
from tests.conftest import assert_ok
from tests.test_agents_api import form_hook

pytestmark = pytest.mark.django_db


def _console() -> logging.Handler:
    """The handler settings.LOGGING puts on the root logger."""
    return next(h for h in logging.getLogger().handlers if h.get_name() == "console")


def _rendered(records: list[logging.LogRecord]) -> list[str]:
    """Each record as the console handler would write it, plain and as JSON."""
    console = _console()
    lines = []
    for record in records:
        assert console.filter(record)
        lines.append(console.format(record))
        lines.append(JsonFormatter().format(record))
    return lines


def test_secrets_never_logged_and_request_id_everywhere(
    caplog, alice_client: APIClient, node_and_token, node_client: APIClient, alice_stream: Stream
) -> None:
    caplog.set_level(logging.DEBUG)
    _, node_token = node_and_token
    dest_key = "live_123456789_SECRETdestKEY"
    response = alice_client.post(
        f"/streams/{alice_stream.id}/destination?streamKey={dest_key}",
        {"service": "YouTube", "streamKey": dest_key},
        format="json",
        HTTP_X_REQUEST_ID="req-create.1",
    )
    assert_ok(response, "Stream destination added")
    assert response["X-Request-ID"] == "req-create.1"
    hook = form_hook(node_token, "publish", alice_stream.stream_key)
    assert_ok(hook, "OK")
    config = node_client.get(f"/agents/config/{alice_stream.stream_key}")
    assert dest_key in config.content.decode()  # the node does get it; the log must not
    form_hook(node_token, "publish", "wrong-key")  # a refused hook logs too

    lines = _rendered(caplog.records)
    for secret in (dest_key, node_token, alice_stream.stream_key):
        leaked = [line for line in lines if secret in line]
        assert leaked == [], secret
    for record in caplog.records:
        assert all(
            dest_key not in str(v) and node_token not in str(v) for v in vars(record).values()
        )

    access = [r for r in caplog.records if r.name == "rig.access"]
    assert [(r.method, r.path, r.status) for r in access] == [
        ("POST", f"/streams/{alice_stream.id}/destination", 200),
        ("POST", "/agents/hooks/***/publish", 200),
        ("GET", "/agents/config/***", 200),
        ("POST", "/agents/hooks/***/publish", 404),
    ]
    assert access[0].request_id == "req-create.1"
    assert access[0].client == f"user:{alice_stream.owner_id}"
    assert access[2].client.startswith("node:")
    assert access[1].client is None  # hooks authenticate by path, not as a DRF user
    assert access[1].request_id == hook["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", hook["X-Request-ID"])
    assert len({r.request_id for r in access}) == 4
    plain = _console().format(access[0])
    assert "[req-create.1]" in plain and "POST /streams/" in plain and " 200 " in plain
    entry = json.loads(JsonFormatter().format(access[1]))
    assert entry["request_id"] == hook["X-Request-ID"]
    assert entry["path"] == "/agents/hooks/***/publish" and entry["status"] == 200
    assert entry["logger"] == "rig.access" and isinstance(entry["duration_ms"], float)


@pytest.mark.parametrize("given", ["has space", "x" * 65, "semi;colon", ""])
def test_insane_request_ids_are_replaced(given: str) -> None:
    response = APIClient().get("/healthz", HTTP_X_REQUEST_ID=given)
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


def test_request_id_on_errors_too() -> None:
    response = APIClient().get("/no/such/route", HTTP_X_REQUEST_ID="abc")
    assert response.status_code == 404
    assert response["X-Request-ID"] == "abc"


def test_filter_masks_secrets_in_any_record() -> None:
    record = logging.makeLogRecord(
        {"msg": "Internal Server Error: %s", "args": ("/agents/hooks/rign_abc-DEF_1/publish",)}
    )
    RequestIdFilter().filter(record)
    assert record.getMessage() == "Internal Server Error: /agents/hooks/***/publish"
    assert getattr(record, "request_id", None) == "-"
    assert redact("token rign_Zz9-_x in text") == "token rign_*** in text"
    # django.request passes the request itself, whose repr carries path and query string
    request = RequestFactory().post("/agents/hooks/rign_tok/publish?name=streamkey")
    error = logging.makeLogRecord({"msg": "boom", "request": request, "status_code": 500})
    entry = json.loads(JsonFormatter().format(error))
    assert "rign_tok" not in json.dumps(entry) and "streamkey" not in json.dumps(entry)
    assert entry["status_code"] == 500
    assert redact("/agents/config/abcdef/") == "/agents/config/***/"


@shared_task(name="tests.request_id_probe")
def request_id_probe() -> str:
    logging.getLogger("tests").info("inside a task")
    return request_id_var.get()


def test_tasks_log_with_their_task_id(caplog) -> None:
    caplog.set_level(logging.INFO)
    assert request_id_probe.apply(task_id="task-1234").get() == "task-1234"
    assert request_id_var.get() == "-"
    inside = [r for r in caplog.records if r.getMessage() == "inside a task"]
    assert [line for line in _rendered(inside) if "task-1234" in line] != []
    assert getattr(inside[0], "request_id", None) == "task-1234"
