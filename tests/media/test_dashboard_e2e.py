"""A new user goes live from the dashboard alone, in a real browser, with the whole rig running:
live server, Celery worker, nginx-rtmp ingest, the agent, and two nginx-rtmp platforms."""

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from agents.models import IngestNode
from tests.conftest import SCREENSHOTS
from tests.media.conftest import RigNode
from tests.media.harness import Camera, Platform, publish, stop, wait_until

pytestmark = [pytest.mark.media, pytest.mark.browser, pytest.mark.timeout(240)]


def _add_custom_destination(page: Any, server_url: str, key: str, quality: str = "") -> None:
    form = page.get_by_role("form", name="Add destination")
    form.get_by_label("Service").select_option("Custom")
    form.get_by_label("Server URL").fill(server_url)
    form.get_by_label("Stream key").fill(key)
    form.get_by_label("Quality").select_option(quality)
    form.get_by_role("button", name="Add destination").click()
    expect(page.get_by_role("status")).to_contain_text("Destination added.")


def test_a_new_user_goes_live_from_the_dashboard(
    rig: RigNode,
    youtube: Platform,
    twitch: Platform,
    live_server: Any,
    new_page: Callable[..., Any],
    tmp_path: Any,
) -> None:
    base = live_server.url.replace("localhost", "127.0.0.1")
    # The agent has reported: its node is the ingest the page recommends.
    wait_until(lambda: IngestNode.objects.get(pk=rig.node.pk).last_seen_at, 15)
    page = new_page(1280, 900)

    page.goto(f"{base}/")
    page.get_by_role("link", name="Sign up").click()
    page.get_by_label("Username").fill("newstreamer")
    page.get_by_label("Email").fill("new@example.com")
    page.get_by_label("Password").fill("Obs-2-Everywhere")
    page.get_by_role("button", name="Sign up").click()
    page.get_by_role("button", name="Log out").click()
    page.get_by_label("Username").fill("newstreamer")
    page.get_by_label("Password").fill("Obs-2-Everywhere")
    page.get_by_role("button", name="Log in").click()

    page.get_by_role("button", name="New stream").click()
    _add_custom_destination(page, youtube.base_url, "ytkey")
    _add_custom_destination(page, twitch.base_url, "twkey", quality="360p30")
    expect(page.get_by_text("transcoded to 360p30 · 800 kb/s")).to_be_visible()

    obs = page.get_by_role("region", name="OBS settings")
    server = obs.get_by_label("Server", exact=True).input_value()
    key_field = obs.get_by_label("Stream key", exact=True)
    assert key_field.get_attribute("type") == "password"  # masked until asked
    obs.get_by_role("button", name="Show").click()
    assert key_field.get_attribute("type") == "text"
    key = key_field.input_value()
    assert server == rig.node.rtmp_url

    states = page.locator('[data-testid="state"]')
    expect(states).to_have_text(["offline", "offline"])
    page.evaluate("window.notReloaded = true")
    publisher = publish(f"{server}/{key}", tmp_path / "publisher.log")
    try:
        expect(states).to_have_text(["live", "live"], timeout=15_000)
        expect(page.locator("#stream-state .badge")).to_have_text("live")
        wait_until(lambda: {"ytkey"} <= set(youtube.publishers()), 10)
        wait_until(lambda: {"twkey"} <= set(twitch.publishers()), 10)
        expect(page.locator(".stats dd").first).to_contain_text("kb/s", timeout=10_000)
        preview = page.locator("#preview img")  # what viewers see, decoded on the node
        # Read once: the 2-s refresh swaps in a new picture, not loaded yet, between two reads.
        width = wait_until(lambda: preview.evaluate("img => img.complete && img.naturalWidth"), 10)
        assert width == 640
        obs.get_by_role("button", name="Hide").click()  # the pictures show the key masked
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "stream-live-1280.png"), full_page=True)
        page.set_viewport_size({"width": 375, "height": 812})
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.screenshot(path=str(SCREENSHOTS / "stream-live-375.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})

        page.locator("details.logbox summary").first.click()
        expect(page.locator("pre.log").first).to_be_visible()
        assert key not in page.locator("pre.log").first.inner_text()
    finally:
        stop(publisher)
    expect(states).to_have_text(["offline", "offline"], timeout=15_000)
    expect(page.locator("#stream-state .badge")).to_have_text("offline")
    expect(page.locator("#preview")).to_contain_text("while you are live")
    assert page.evaluate("window.notReloaded") is True  # all of it without a reload

    assert page.errors == []
    strays = [url for url in page.requested if not url.startswith(f"{base}/")]
    assert strays == [], "requests left the page's origin"


def test_a_user_pulls_a_camera_from_the_dashboard(
    rig: RigNode,
    youtube: Platform,
    live_server: Any,
    new_page: Callable[..., Any],
    tmp_path: Any,
) -> None:
    """No OBS: the Source card takes a camera's URL, the node pulls it, the destination goes
    live, and the page shows the pull's state without a reload (and never the password)."""
    base = live_server.url.replace("localhost", "127.0.0.1")
    wait_until(lambda: IngestNode.objects.get(pk=rig.node.pk).last_seen_at, 15)
    camera = Camera(tmp_path).start()
    try:
        page = new_page(1280, 900)
        page.goto(f"{base}/app/signup")
        page.get_by_label("Username").fill("camfan")
        page.get_by_label("Email").fill("cam@example.com")
        page.get_by_label("Password").fill("Obs-2-Everywhere")
        page.get_by_role("button", name="Sign up").click()
        page.get_by_role("button", name="New stream").click()
        _add_custom_destination(page, youtube.base_url, "ytkey")

        source = page.get_by_role("region", name="Source")
        source.get_by_label("Pull URL").fill("ftp://nope.example/cam")
        source.get_by_role("button", name="Pull from this URL").click()
        expect(page.locator("#pullUrl-error")).to_contain_text("Must be an rtsp://")
        page.errors.clear()  # the form's answer is a 400 page, which the console notes
        source = page.get_by_role("region", name="Source")
        source.get_by_label("Pull URL").fill(camera.url("viewer:pw-9"))
        source.get_by_role("button", name="Pull from this URL").click()
        expect(page.get_by_role("status")).to_contain_text("Pulling the stream from its source")
        page.evaluate("window.notReloaded = true")
        expect(page.locator('[data-testid="source-state"]')).to_have_text("live", timeout=30_000)
        expect(page.locator('[data-testid="state"]')).to_have_text(["live"], timeout=20_000)
        wait_until(lambda: "ytkey" in youtube.publishers(), 10)
        preview = page.locator("#preview img")
        wait_until(lambda: preview.evaluate("img => img.complete && img.naturalWidth"), 15)
        assert page.evaluate("window.notReloaded") is True
        assert "pw-9" not in page.content()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "stream-pull-1280.png"), full_page=True)

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Back to OBS push").click()
        expect(page.get_by_role("status")).to_contain_text("Back to push")
        expect(page.locator("#stream-state .badge")).to_have_text("offline", timeout=15_000)
        assert page.errors == []
    finally:
        camera.stop()
