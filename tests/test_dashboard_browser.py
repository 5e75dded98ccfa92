"""The dashboard and the API in a real browser (Debian's chromium through Playwright): other
tenants, CSRF, keyboard and narrow screens, and CORS for a dashboard served from another origin."""

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from accounts.models import User
from streams.models import Stream
from tests.conftest import SCREENSHOTS
from tests.factories import PASSWORD, DestinationFactory, StreamFactory, UserFactory, node_create
from webhooks.models import WebhookEndpoint

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture
def base(live_server: Any) -> str:
    return str(live_server.url).replace("localhost", "127.0.0.1")


def log_in(page: Any, base: str, username: str, path: str = "/app/") -> None:
    page.goto(f"{base}{path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}{path}")


def test_another_users_stream_is_not_found_and_forms_need_the_csrf_token(
    transactional_db: None, base: str, new_page: Callable[..., Any]
) -> None:
    alice = UserFactory.create(username="alice")
    UserFactory.create(username="bob")
    stream = StreamFactory.create(owner=alice)

    bob = new_page()
    log_in(bob, base, "bob")
    response = bob.goto(f"{base}/app/streams/{stream.id}")
    assert response.status == 404
    expect(bob.get_by_role("heading", name="Not found")).to_be_visible()
    assert stream.stream_key not in bob.content()

    owner = new_page()
    log_in(owner, base, "alice", f"/app/streams/{stream.id}")
    forged = owner.request.post(f"{base}/app/streams/{stream.id}/delete")  # the cookie, no token
    assert forged.status == 403
    assert Stream.objects.filter(pk=stream.pk).exists()
    assert owner.errors == []  # (bob's console has the 404 of the page itself)


def test_rotate_key_asks_first_and_every_control_is_reachable_by_keyboard(
    transactional_db: None, base: str, new_page: Callable[..., Any]
) -> None:
    alice = UserFactory.create(username="alice")
    stream = StreamFactory.create(owner=alice)
    DestinationFactory.create(stream=stream)
    page = new_page(375, 812)
    log_in(page, base, "alice", f"/app/streams/{stream.id}")

    reached = set()
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.add(
            page.evaluate(
                """(el => el.getAttribute('aria-label')
                   || (['INPUT', 'SELECT'].includes(el.tagName) ? el.id : el.textContent.trim())
                )(document.activeElement)"""
            )
        )
    for control in ("Show", "Copy stream key", "Rotate key", "Deactivate", "Delete stream",
                    "Disable", "Mute", "Restart", "Log", "service", "Add destination"):  # fmt: skip
        assert control in reached, f"{control} is not reachable with Tab"

    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input:not([type=hidden]), select')]
             .filter(el => !el.labels.length && !el.getAttribute('aria-label'))
             .map(el => el.name || el.id)"""
    )
    assert unlabelled == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 375

    messages: list[str] = []

    def dismiss(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.get_by_role("button", name="Rotate key").focus()
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    assert "cut off" in messages[0]
    old_key = stream.stream_key
    stream.refresh_from_db()
    assert stream.stream_key == old_key  # dismissed: nothing changed

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Rotate key").click()
    expect(page.get_by_role("status")).to_contain_text("New stream key")
    stream.refresh_from_db()
    assert stream.stream_key != old_key
    assert page.get_by_label("Stream key", exact=True).first.input_value() == stream.stream_key
    assert page.errors == []


def test_webhooks_and_nodes_pages(
    transactional_db: None, base: str, new_page: Callable[..., Any]
) -> None:
    ops = UserFactory.create(username="ops", is_staff=True)
    node_create("eu-1", region="eu", rtmp_url="rtmp://eu-1.example/live")
    page = new_page(1280, 800)
    log_in(page, base, "ops", "/app/webhooks")
    page.get_by_label("URL", exact=True).fill("https://hooks.example.com/rig")
    page.get_by_label("stream.live").check()
    page.get_by_role("button", name="Add webhook").click()
    endpoint = WebhookEndpoint.objects.get(owner=ops)
    expect(page.get_by_label("Signing secret", exact=True)).to_have_value(endpoint.secret)
    page.get_by_role("button", name="Send test").click()
    expect(page.get_by_role("status")).to_contain_text("Test event queued.")
    expect(page.locator("table.deliveries")).to_contain_text("ping")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "webhooks-1280.png"), full_page=True)
    page.set_viewport_size({"width": 375, "height": 812})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scroll
    page.set_viewport_size({"width": 1280, "height": 800})

    page.get_by_role("link", name="Nodes").click()
    expect(page.get_by_role("row", name="eu-1")).to_contain_text("unknown")
    page.get_by_role("button", name="Drain eu-1").click()
    expect(page.get_by_role("button", name="Undrain eu-1")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "nodes-1280.png"), full_page=True)
    assert page.errors == []


# --- CORS: a dashboard on another origin uses the API with a bearer token -------------------

CLIENT_PAGE = """<!doctype html><meta charset="utf-8"><title>other dashboard</title>
<link rel="icon" href="data:,">
<pre id="out">running</pre>
<script>
const api = "%(api)s";
async function call(method, path, body, token) {
  const headers = {};
  if (body) headers["Content-Type"] = "application/json";
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(api + path, {method, headers, body: body && JSON.stringify(body)});
  return response.json();
}
(async () => {
  try {
    const user = {username: "faraway", password: "%(password)s"};
    await call("POST", "/accounts", {...user, email: "far@example.com"});
    const login = await call("POST", "/accounts/auth/local", user);
    const token = login.payload.token;
    await call("POST", "/streams", null, token);
    const list = await call("GET", "/streams", null, token);
    document.getElementById("out").textContent = "streams: " + list.payload.length;
  } catch (error) {
    document.getElementById("out").textContent = "blocked: " + error;
  }
})();
</script>"""


@pytest.fixture
def other_origin(tmp_path: Path, base: str) -> Iterator[str]:
    """A static page on another loopback port: a dashboard served from somewhere else."""
    (tmp_path / "index.html").write_text(CLIENT_PAGE % {"api": base, "password": PASSWORD})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_dashboard_on_another_origin_signs_up_and_lists_its_stream(
    transactional_db: None, other_origin: str, new_page: Callable[..., Any], settings: Any
) -> None:
    settings.CORS_ALLOWED_ORIGINS = [other_origin]
    page = new_page()
    page.goto(f"{other_origin}/index.html")
    expect(page.locator("#out")).to_have_text("streams: 1")
    assert Stream.objects.filter(owner=User.objects.get(username="faraway")).count() == 1
    assert page.errors == []


def test_an_origin_not_listed_is_refused_by_the_browser(
    transactional_db: None, other_origin: str, new_page: Callable[..., Any], settings: Any
) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["http://127.0.0.1:1"]
    page = new_page()
    page.goto(f"{other_origin}/index.html")
    expect(page.locator("#out")).to_contain_text("blocked")
    assert not Stream.objects.exists()
