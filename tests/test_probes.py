"""/healthz (the process answers) and /readyz (database and broker answer), unauthenticated."""

import pytest
from rest_framework.test import APIClient

from rig.monitoring import ReadyzApi
from tests.conftest import assert_error, assert_ok


def test_healthz_touches_no_database(django_assert_num_queries, db: None) -> None:
    with django_assert_num_queries(0):
        payload = assert_ok(APIClient().get("/healthz"), "ok")
    assert payload == {"status": "ok"}
    assert_ok(APIClient().get("/healthz/"), "ok")


def test_healthz_ignores_a_bad_token(db: None) -> None:
    assert_ok(APIClient().get("/healthz", HTTP_AUTHORIZATION="Bearer garbage"), "ok")


@pytest.mark.django_db
def test_readyz_ok_with_database_and_broker() -> None:
    payload = assert_ok(APIClient().get("/readyz"), "ready")
    assert payload == {"database": "ok", "broker": "ok"}


@pytest.mark.django_db
def test_readyz_503_when_broker_is_down(settings) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    body = assert_error(APIClient().get("/readyz"), 503, 1012)
    assert body["message"] == "Not ready"
    assert set(body["details"]) == {"broker"}
    assert body["details"]["broker"][0].startswith("unavailable")


@pytest.mark.django_db
def test_readyz_503_names_the_database(monkeypatch) -> None:
    def down() -> None:
        raise ConnectionError("db is gone")

    monkeypatch.setitem(ReadyzApi.checks, "database", down)
    body = assert_error(APIClient().get("/readyz"), 503, 1012)
    assert body["details"] == {"database": ["unavailable (ConnectionError)"]}


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_are_get_only(path: str, db: None) -> None:
    assert_error(APIClient().post(path), 405, 1001)
