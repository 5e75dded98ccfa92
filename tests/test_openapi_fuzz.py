"""Schemathesis against /schema through the WSGI app: generated requests to the user endpoints
(accounts, streams with their destinations and relays, webhooks) never make a server error, and
what comes back matches the schema. Bounded to a few examples per operation so it stays well
under a minute."""

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from accounts.tokens import tokens_for
from rig.wsgi import application
from tests.factories import DestinationFactory, StreamFactory, UserFactory
from webhooks.models import WebhookEndpoint


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
    return schemathesis.openapi.from_wsgi("/schema.json", application).include(
        path_regex=r"^/(accounts|streams|webhooks)"
    )


@pytest.fixture
def auth(db: None, settings: Any) -> dict[str, str]:
    settings.RIG_ALLOW_PRIVATE_DESTINATIONS = True  # generated webhook URLs: no DNS lookups
    user = UserFactory.create(username="fuzzer")
    stream = StreamFactory.create(owner=user)
    DestinationFactory.create(stream=stream)
    WebhookEndpoint.objects.create(owner=user, url="https://hooks.example.com/rig")
    return {"Authorization": f"Bearer {tokens_for(user)['token']}"}


def test_user_endpoints_never_fail_with_a_server_error(
    api_schema: Any, auth: dict[str, str]
) -> None:
    # schemathesis' pytest plugin does not run under pytest 9; drive hypothesis directly.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 25

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
            case.call_and_validate(
                headers=auth, checks=[not_a_server_error, response_schema_conformance]
            )

        run()
