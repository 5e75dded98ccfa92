"""Shared fixtures: Alice owns things, Bob is another tenant, anon has no token, node is an
ingest node. Every client talks HTTP through DRF's APIClient to the real Postgres."""

from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tokens import tokens_for
from agents.models import IngestNode
from streams.models import Stream
from tests.factories import DestinationFactory, StreamFactory, UserFactory, node_create


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()  # throttling state must not leak between tests


def client_for(user: User | None = None, token: str | None = None) -> APIClient:
    client = APIClient()
    if user is not None:
        token = tokens_for(user)["token"]
    if token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def alice(db: None) -> User:
    return UserFactory.create(username="alice")


@pytest.fixture
def bob(db: None) -> User:
    return UserFactory.create(username="bob")


@pytest.fixture
def alice_client(alice: User) -> APIClient:
    return client_for(alice)


@pytest.fixture
def bob_client(bob: User) -> APIClient:
    return client_for(bob)


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def node_and_token(db: None) -> tuple[IngestNode, str]:
    return node_create("node1")


@pytest.fixture
def node(node_and_token: tuple[IngestNode, str]) -> IngestNode:
    return node_and_token[0]


@pytest.fixture
def node_client(node_and_token: tuple[IngestNode, str]) -> APIClient:
    return client_for(token=node_and_token[1])


@pytest.fixture
def alice_stream(alice: User) -> Stream:
    return StreamFactory.create(owner=alice)


@pytest.fixture
def make_destination() -> Callable[..., Any]:
    return DestinationFactory


def assert_error(response: Any, status: int, code: int) -> dict[str, Any]:
    """The full error envelope, with the given status and code."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"message", "errorCode", "details"}, body
    assert body["errorCode"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


def assert_ok(response: Any, message: str) -> Any:
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"message", "payload"}, body
    assert body["message"] == message
    return body["payload"]
