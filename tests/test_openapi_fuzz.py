"""Schemathesis against /schema through the WSGI app: generated requests to the user endpoints
(accounts, streams with their destinations and relays, webhooks), to the agents' endpoints with
a node's token, and to the public ones never make a server error, and
what comes back matches the schema. Bounded to a few examples per operation so it stays well
under a minute. It runs twice: with the test settings, and in a process of its own with
production settings (DEBUG off), behind a TLS proxy as production runs."""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from rest_framework.test import APIClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from accounts.tokens import tokens_for
from rig.wsgi import application
from streams.models import Pull, Stream
from tests.factories import DestinationFactory, StreamFactory, UserFactory, node_create
from webhooks.models import WebhookEndpoint

USER_ROUTES = r"^/(accounts|streams|webhooks|recordings|ingests|agents/nodes)"
NODE_AND_PUBLIC_ROUTES = (
    r"^/(agents/(config|streams|pulls|status|hooks)|services|healthz|readyz|metrics)"
)


def test_the_fuzz_covers_every_operation(db: None) -> None:
    schema = APIClient().get("/schema.json").json()
    paths = set(schema["paths"])
    fuzzed = {p for p in paths if re.match(USER_ROUTES, p) or re.match(NODE_AND_PUBLIC_ROUTES, p)}
    assert fuzzed == paths, paths - fuzzed


@pytest.fixture
def wsgi_keeps_the_test_connection() -> Iterator[None]:
    """The WSGI handler closes the DB connection after each request, which would end the test's
    transaction; Django's own test client unhooks the same signal handler."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(db: None, wsgi_keeps_the_test_connection: None) -> Any:
    return schemathesis.openapi.from_wsgi("/schema.json", application, headers=_https()).include(
        path_regex=USER_ROUTES
    )


def _https() -> dict[str, str]:
    """Production answers HTTPS only: the TLS proxy in front (RIG_TRUSTED_PROXIES) says the
    request came that way. The test settings trust no proxy and ignore it."""
    return {"X-Forwarded-Proto": "https"}


@pytest.fixture
def auth(db: None, settings: Any) -> dict[str, str]:
    settings.RIG_ALLOW_PRIVATE_DESTINATIONS = True  # generated webhook URLs: no DNS lookups
    # A staff user: the operators' node routes are fuzzed too (for others they are 403).
    user = UserFactory.create(username="fuzzer", is_staff=True)
    stream = StreamFactory.create(owner=user)
    DestinationFactory.create(stream=stream)
    WebhookEndpoint.objects.create(owner=user, url="https://hooks.example.com/rig")
    return {"Authorization": f"Bearer {tokens_for(user)['token']}", **_https()}


def test_user_endpoints_never_fail_with_a_server_error(
    api_schema: Any, auth: dict[str, str]
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 25
    _fuzz(operations, auth)


@pytest.fixture
def node_auth(db: None, auth: dict[str, str]) -> dict[str, str]:
    """A node's token (its hooks are fuzzed with generated tokens in the path), beside the
    user's stream with a destination and a pulled source."""
    _, token = node_create("fuzz-node")
    Pull.objects.create(stream=Stream.objects.get(), url="rtsp://cam.example.com/1")
    return {"Authorization": f"Bearer {token}", **_https()}


def test_node_and_public_endpoints_never_fail_with_a_server_error(
    db: None, wsgi_keeps_the_test_connection: None, node_auth: dict[str, str]
) -> None:
    """The agents' API (config, desired state, pulls, status reports, nginx's hooks) with a
    node's token, and the public routes (with /metrics, which a node token does not open).
    With the user routes above, that is every operation of the schema."""
    schema = schemathesis.openapi.from_wsgi("/schema.json", application, headers=_https())
    included = schema.include(path_regex=NODE_AND_PUBLIC_ROUTES)
    operations = [result.ok() for result in included.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 8
    _fuzz(operations, node_auth)


def _fuzz(operations: list[Any], headers: dict[str, str]) -> None:
    # schemathesis' pytest plugin does not run under pytest 9; drive hypothesis directly.
    statuses: set[int] = set()

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=8,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            response = case.call_and_validate(
                headers=headers, checks=[not_a_server_error, response_schema_conformance]
            )
            statuses.add(response.status_code)

        run()
    # Real answers, not a redirect to HTTPS (a redirect is no server error either).
    assert 200 in statuses and not statuses & {301, 302, 307, 308}, statuses


def test_with_production_settings_too() -> None:
    """The same generated requests against a process with production settings: DEBUG off, a
    real secret, one allowed host, HTTPS behind one trusted proxy, the dev conveniences off."""
    root = Path(__file__).resolve().parents[1]
    database = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rig")
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY"}},
        "DEBUG": "0",
        "SECRET_KEY": "production-fuzz-" + "0123456789abcdef" * 3,
        "ALLOWED_HOSTS": "testserver,localhost",
        "RIG_TRUSTED_PROXIES": "1",
        # Its own database (pytest-django creates test_<name>) and no throttle state shared
        # with other runs: the counters would outlive this one in Redis.
        "DATABASE_URL": database.rsplit("/", 1)[0] + "/rig_prodfuzz",
        "RIG_CACHE_REDIS": "0",
    }
    tests = [
        "tests/test_openapi_fuzz.py::test_user_endpoints_never_fail_with_a_server_error",
        "tests/test_openapi_fuzz.py::test_node_and_public_endpoints_never_fail_with_a_server_error",
    ]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--create-db", *tests],
        cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "2 passed" in run.stdout
