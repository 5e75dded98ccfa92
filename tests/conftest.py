"""Shared fixtures: Alice owns things, Bob is another tenant, anon has no token, node is an
ingest node. Every client talks HTTP through DRF's APIClient to the real Postgres."""

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tokens import tokens_for
from agents.models import IngestNode
from streams.models import Stream
from tests.factories import DestinationFactory, StreamFactory, UserFactory, node_create
from tests.media.harness import stop

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.RIG_ENQUEUE_INLINE = True  # sends happen where the test can see them
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
def watch_up(db: None) -> None:
    """The node watch has been running, with the API up, for an hour: it may judge silence."""
    from datetime import timedelta

    from django.utils import timezone

    from agents.models import NodeWatch

    now = timezone.now()
    NodeWatch.objects.update_or_create(
        pk=1, defaults={"checked_at": now, "up_since": now - timedelta(hours=1)}
    )


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


def _test_database_url() -> str:
    """DATABASE_URL of the test database, for processes the tests start (worker, agent)."""
    from urllib.parse import urlsplit, urlunsplit

    from django.db import connection

    settings_dict = connection.settings_dict
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    parts = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rig"))
    return urlunsplit(parts._replace(path=f"/{settings_dict['NAME']}"))


@pytest.fixture
def celery_worker_options() -> dict[str, Any]:
    """Override in a test module: {"beat": True} also runs the periodic tasks (node watch),
    {"env": {...}} sets the worker's settings."""
    return {}


@pytest.fixture
def celery_worker_process(
    transactional_db: None, celery_worker_options: dict[str, Any]
) -> Iterator[subprocess.Popen]:
    """A real `celery worker` process on the real broker, using the test database."""
    from django.conf import settings

    from rig.celery import app

    queues = [settings.CELERY_TASK_DEFAULT_QUEUE, settings.RIG_WEBHOOK_QUEUE]
    with app.connection_for_write() as connection:  # leftovers of an interrupted run must not
        for queue in queues:  # be delivered here
            connection.default_channel.queue_purge(queue)  # type: ignore[attr-defined]
    workdir = Path(tempfile.mkdtemp(prefix="rig-celery-"))
    log = workdir / "worker.log"
    env = {
        **os.environ,
        **celery_worker_options.get("env", {}),
        "DATABASE_URL": _test_database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
    }
    beat = ["--beat", "--schedule", str(workdir / "beat-schedule")]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "rig",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "4",
            "--queues",
            ",".join(queues),  # both; production runs a worker per queue
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
            *(beat if celery_worker_options.get("beat") else []),
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    try:  # a worker that never got ready must not outlive the test either
        while b"ready." not in log.read_bytes():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "celery worker did not start"
            time.sleep(0.1)
        yield process
    finally:
        stop(process, timeout=10)


# --- a real browser: Debian's chromium driven by Playwright (no browser download) -----------

CHROMIUM = next(
    (p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()),
    "/usr/bin/chromium",
)
SCREENSHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium per test module (Playwright's sync API keeps an event loop running
    in this thread, which later asyncio tests must not find). Its background services are off:
    this machine's network is loopback only, and a page test must see only its own requests."""
    from playwright.sync_api import sync_playwright

    # The test's own ORM calls are plain synchronous code beside that loop.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Pages in fresh browser contexts (own cookies). Each page records what a person would
    not want: console errors, uncaught exceptions, and every URL it requested."""
    contexts: list[Any] = []

    def make(width: int = 1280, height: int = 900) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.errors = []
        page.requested = []
        page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.on("request", lambda r: page.requested.append(r.url))
        return page

    yield make
    for context in contexts:
        context.close()
