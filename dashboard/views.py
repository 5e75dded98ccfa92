"""The dashboard's pages: thin views over the same services and selectors as the JSON API.

Each form is checked by the API operation's own InputSerializer and carried out by the same
service, so a page can do nothing the API cannot, and its errors are the API's, shown next to
the field that caused them. Another user's object is the same 404 page as a missing one.
"""

import re
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar

from django.contrib import messages
from django.contrib.auth import login, logout, update_session_auth_hash
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from accounts import services as accounts
from accounts.apis import AccountCreateApi, LoginApi, PasswordChangeApi, account_ident
from accounts.models import User
from agents import selectors as nodes
from agents import services as node_services
from agents.apis import NodeDetailApi
from agents.node.protocol import DisplayState, RelayState
from rig.api import ApiError, ErrorCode, not_found, validate
from rig.errors import to_api_error
from streams import selectors, services
from streams.apis import DestinationAddApi
from streams.destinations import ingest_base
from streams.models import Service, Stream
from webhooks import selectors as webhook_selectors
from webhooks import services as webhook_services
from webhooks.apis import WebhookListCreateApi
from webhooks.models import EVENTS

View = TypeVar("View", bound=Callable[..., HttpResponse])

# What a person sees of a relay: "pending" is a relay about to start; a finished one is offline.
SHOWN_STATE: dict[str, str] = {
    DisplayState.PENDING: "starting",
    RelayState.STARTING: "starting",
    RelayState.LIVE: "live",
    RelayState.RECONNECTING: "reconnecting",
    RelayState.FAILED: "failed",
    RelayState.STOPPED: "offline",
    # The node went quiet: its agent (and with it every relay) most likely died.
    DisplayState.UNKNOWN: "offline",
}

RECENT_SESSIONS = 10  # on the stream page; the API pages through all of them

# Pages load their scripts and styles from rig only, and may not be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _headers(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Cache-Control"] = "no-store"  # pages show stream keys: never from a cache
    return response


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


def _not_found(request: HttpRequest) -> HttpResponse:
    return _headers(render(request, "dashboard/404.html", status=404))


def page(view: View) -> View:
    """A signed-in user's page: anonymous visitors go to the login page; an object that is not
    theirs (or not there) is the 404 page."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        try:
            return _headers(view(request, *args, **kwargs))
        except ApiError as error:
            if error.status == 404:
                return _not_found(request)
            raise

    return wrapped  # type: ignore[return-value]


def public(view: View) -> View:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return _headers(view(request, *args, **kwargs))

    return wrapped  # type: ignore[return-value]


def attempt(action: Callable[[], Any]) -> ApiError | None:
    """Run a service call; its failure as the API would answer it (None: it worked). A 404
    goes on up, to the 404 page."""
    try:
        action()
    except (ApiError, ValidationError) as exc:
        error = to_api_error(exc)
        assert error is not None
        if error.status == 404:
            raise error from None
        return error
    return None


def field_errors(error: ApiError | None) -> dict[str, list[str]]:
    """The error's messages by form field (the API's camelCase names are the inputs' names);
    an error about no field in particular is under "form"."""
    if error is None:
        return {}
    details = error.details or {}
    fields = {
        name: [str(m) for m in msgs] for name, msgs in details.items() if isinstance(msgs, list)
    }
    return fields or {"form": [error.message]}


def _form(request: HttpRequest, *names: str) -> dict[str, str]:
    return {name: request.POST[name] for name in names if request.POST.get(name, "") != ""}


def _done(request: HttpRequest, error: ApiError | None, success: str, back: str) -> HttpResponse:
    """After a button's action: say what happened, in plain words, on the page it came from."""
    if error is None:
        messages.success(request, success)
    else:
        messages.error(request, " ".join(m for ms in field_errors(error).values() for m in ms))
    return redirect(back)


class _PageThrottle(SimpleRateThrottle):
    """The API's rate for the same scope, counted in the same bucket as the API's calls (by
    client address, or by ``ident`` when given): a page is no way around the API's limit."""

    def __init__(self, scope: str, ident: str | None) -> None:
        self.scope = scope
        self.ident = ident
        super().__init__()

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        ident = self.get_ident(request) if self.ident is None else self.ident
        return self.cache_format % {"scope": self.scope, "ident": ident} if ident else None


def _throttled(request: HttpRequest, scope: str, ident: str | None = None) -> ApiError | None:
    throttle = _PageThrottle(scope, ident)
    if throttle.allow_request(Request(request), APIView()):
        return None
    wait = int(throttle.wait() or 0) + 1
    return ApiError(ErrorCode.TOO_MANY_REQUESTS, f"Too many attempts: try again in {wait} s.", 429)


# --- accounts ------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@public
def signup(request: HttpRequest) -> HttpResponse:
    form = _form(request, "username", "email", "password")
    error = None
    if request.method == "POST":
        created: list[User] = []
        error = _throttled(request, "signup") or attempt(
            lambda: created.append(
                accounts.user_create(**validate(AccountCreateApi.InputSerializer, form))
            )
        )
        if error is None:
            login(request, created[0], backend="django.contrib.auth.backends.ModelBackend")
            return redirect("dashboard:streams")
    form.pop("password", None)
    context = {"form": form, "errors": field_errors(error)}
    return render(request, "dashboard/signup.html", context, status=error.status if error else 200)


def _safe_next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    return target if target.startswith("/app/") and "//" not in target else "/app/"


@require_http_methods(["GET", "POST"])
@public
def login_page(request: HttpRequest) -> HttpResponse:
    form = _form(request, "username", "password")
    error = None
    if request.method == "POST":
        signed_in: list[User] = []
        error = (
            _throttled(request, "login")
            or _throttled(request, "login_account", account_ident(form.get("username", "")))
            or attempt(
                lambda: signed_in.append(
                    accounts.user_authenticate(**validate(LoginApi.InputSerializer, form))
                )
            )
        )
        if error is None:
            login(request, signed_in[0], backend="django.contrib.auth.backends.ModelBackend")
            return redirect(_safe_next(request))
        if error.code == ErrorCode.INVALID_CREDENTIALS:
            error = ApiError(error.code, "Wrong username or password.", error.status)
    form.pop("password", None)
    context = {"form": form, "errors": field_errors(error), "next": _safe_next(request)}
    return render(request, "dashboard/login.html", context, status=error.status if error else 200)


@require_POST
def logout_page(request: HttpRequest) -> HttpResponse:
    logout(request)
    messages.success(request, "Logged out.")
    return redirect("dashboard:login")


@require_http_methods(["GET", "POST"])
@page
def password(request: HttpRequest) -> HttpResponse:
    error = None
    if request.method == "POST":
        user = _user(request)
        form = _form(request, "oldPassword", "newPassword")

        def change() -> None:
            data = validate(PasswordChangeApi.InputSerializer, form)
            accounts.user_password_change(
                user=user, old_password=data["oldPassword"], new_password=data["newPassword"]
            )

        error = attempt(change)
        if error is None:
            update_session_auth_hash(request, user)  # this browser stays signed in; others not
            messages.success(request, "Password changed. Other sessions and API tokens are out.")
            return redirect("dashboard:password")
        if error.code == ErrorCode.INVALID_CREDENTIALS:
            error = ApiError(error.code, "", 400, {"oldPassword": ["Wrong password."]})
    context = {"errors": field_errors(error)}
    return render(
        request, "dashboard/password.html", context, status=error.status if error else 200
    )


# --- streams -------------------------------------------------------------------------------


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard:streams")


@require_http_methods(["GET", "POST"])
@page
def streams(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    if request.method == "POST":
        created: list[Stream] = []
        error = attempt(lambda: created.append(services.stream_create(user=user)))
        if error is None:
            messages.success(request, "Stream created. Point OBS at the settings below.")
            return redirect("dashboard:stream", stream_id=created[0].id)
        return _done(request, error, "", "/app/")
    rows = selectors.stream_list(user=user).prefetch_related("destinations")
    return render(request, "dashboard/streams.html", {"streams": rows})


def _obs_server(stream: Stream) -> str:
    """Where OBS should connect: the serving node while live, else the recommended ingest."""
    session = stream.live_session
    if session is not None and session.node is not None:
        return session.node.rtmp_url
    return next(s["rtmpUrl"] for s in nodes.ingest_servers() if s["recommended"])


def _since(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _relays(stream: Stream) -> list[dict[str, Any]]:
    """Each destination as its card shows it: the relay API's item, its display state and the
    server it goes to (never its key)."""
    rows = []
    reporting = selectors.node_reporting(stream)
    relays = selectors.session_relays(stream)
    for destination in stream.destinations.all():
        relay = selectors.relay_item(destination, relays.get(destination.pk), reporting=reporting)
        live = stream.is_streaming and relay["isActive"]
        if not live:  # figures of a relay that is not running are history, not news
            relay.update(bitrateKbps=None, fps=None, since=None, lastError=None)
        rows.append(
            {
                **relay,
                "shown": SHOWN_STATE[relay["state"]] if live else "offline",
                "since": _since(relay["since"]),
                "server": ingest_base(destination.service, destination.server_url),
            }
        )
    return rows


def _live_context(stream: Stream) -> dict[str, Any]:
    session = stream.session
    return {
        "stream": stream,
        "stream_state": "live" if stream.is_streaming else "offline",
        "reason": session.end_reason or None if session else None,
        "relays": _relays(stream),
    }


@require_GET
@page
def stream(request: HttpRequest, stream_id: str) -> HttpResponse:
    return _stream_page(request, stream_id)


def _stream_page(
    request: HttpRequest,
    stream_id: str,
    *,
    form: dict[str, str] | None = None,
    error: ApiError | None = None,
) -> HttpResponse:
    detail = selectors.stream_get_detailed(user=_user(request), stream_id=stream_id)
    context = {
        **_live_context(detail),
        "server": _obs_server(detail),
        "services": Service.values,
        "form": form or {"service": Service.CUSTOM},
        "errors": field_errors(error),
        "sessions": [
            {**session, "started": _since(session["startedAt"])}
            for session in selectors.session_list(stream=detail)[:RECENT_SESSIONS]
        ],
    }
    return render(request, "dashboard/stream.html", context, status=error.status if error else 200)


@require_GET
@page
def stream_live(request: HttpRequest, stream_id: str) -> HttpResponse:
    """What the stream page polls every 2 s: its live parts, each swapped in by id."""
    detail = selectors.stream_get_detailed(user=_user(request), stream_id=stream_id)
    return render(request, "dashboard/_live.html", {**_live_context(detail), "oob": True})


def _stream_action(view: Callable[[HttpRequest, Stream], HttpResponse]) -> Callable[..., Any]:
    """A button on the stream page, on the user's own stream. Opening its address (a reload
    after a form error, a bookmark) leads back to the stream page."""

    @require_http_methods(["GET", "POST"])
    @page
    @wraps(view)
    def wrapped(request: HttpRequest, stream_id: str) -> HttpResponse:
        stream = selectors.stream_get(user=_user(request), stream_id=stream_id)
        if request.method == "GET":
            return redirect(_back(stream))
        return view(request, stream)

    return wrapped


def _back(stream: Stream) -> str:
    return f"/app/streams/{stream.id}"


@_stream_action
def stream_rotate_key(request: HttpRequest, stream: Stream) -> HttpResponse:
    error = attempt(lambda: services.stream_key_rotate(stream=stream))
    return _done(request, error, "New stream key: update it in OBS.", _back(stream))


@_stream_action
def stream_active(request: HttpRequest, stream: Stream) -> HttpResponse:
    active = request.POST.get("isActive") == "true"
    error = attempt(lambda: services.stream_update(stream=stream, is_active=active))
    return _done(
        request, error, "Stream activated." if active else "Stream deactivated.", _back(stream)
    )


@_stream_action
def stream_delete(request: HttpRequest, stream: Stream) -> HttpResponse:
    error = attempt(lambda: services.stream_delete(stream=stream))
    return _done(request, error, "Stream deleted.", "/app/")


@_stream_action
def destination_add(request: HttpRequest, stream: Stream) -> HttpResponse:
    form = _form(request, "service", "streamKey", "serverUrl")

    def add() -> None:
        data = validate(DestinationAddApi.InputSerializer, form)
        services.destination_add(
            stream=stream,
            service=data["service"],
            stream_key=data["streamKey"],
            server_url=data.get("serverUrl", ""),
        )

    error = attempt(add)
    if error is not None:
        form.pop("streamKey", None)  # a key is never sent back into a page
        return _stream_page(request, str(stream.id), form=form, error=error)
    messages.success(request, "Destination added.")
    return redirect(_back(stream))


def _destination_action(view: Callable[..., HttpResponse]) -> Callable[..., Any]:
    """A button on one destination's card, on the user's own destination (GET: its page)."""

    @require_http_methods(["GET", "POST"])
    @page
    @wraps(view)
    def wrapped(request: HttpRequest, stream_id: str, destination_id: str) -> HttpResponse:
        destination = selectors.destination_get(
            user=_user(request), stream_id=stream_id, destination_id=destination_id
        )
        if request.method == "GET":
            return redirect(_back(destination.stream))
        return view(request, destination)

    return wrapped


@_destination_action
def destination_active(request: HttpRequest, destination: Any) -> HttpResponse:
    active = request.POST.get("isActive") == "true"
    error = attempt(lambda: services.destination_update(destination=destination, is_active=active))
    message = "Destination enabled." if active else "Destination disabled."
    return _done(request, error, message, _back(destination.stream))


@_destination_action
def destination_mute(request: HttpRequest, destination: Any) -> HttpResponse:
    muted = request.POST.get("isMuted") == "true"
    error = attempt(lambda: services.relay_mute(destination=destination, muted=muted))
    message = "Audio muted for this destination." if muted else "Audio restored."
    return _done(request, error, message, _back(destination.stream))


@_destination_action
def destination_restart(request: HttpRequest, destination: Any) -> HttpResponse:
    error = attempt(lambda: services.relay_restart(destination=destination))
    return _done(request, error, "Restart requested.", _back(destination.stream))


@_destination_action
def destination_delete(request: HttpRequest, destination: Any) -> HttpResponse:
    error = attempt(lambda: services.destination_delete(destination=destination))
    return _done(request, error, "Destination deleted.", _back(destination.stream))


@require_GET
@page
def relay_log(request: HttpRequest, stream_id: str, destination_id: str) -> HttpResponse:
    destination = selectors.destination_get(
        user=_user(request), stream_id=stream_id, destination_id=destination_id
    )
    lines = selectors.relay_detail(destination=destination)["log"]
    return render(request, "dashboard/_log.html", {"lines": lines})


# --- webhooks ------------------------------------------------------------------------------


def _webhooks_page(
    request: HttpRequest,
    *,
    form: dict[str, Any] | None = None,
    error: ApiError | None = None,
    secret: tuple[str, str] | None = None,
) -> HttpResponse:
    endpoints = webhook_selectors.webhook_list(user=_user(request))
    rows = [(e, list(webhook_selectors.delivery_list(endpoint=e)[:10])) for e in endpoints]
    context = {
        "webhooks": rows,
        "events": EVENTS,
        "form": form or {},
        "errors": field_errors(error),
        "secret": secret,  # shown once, in the answer to the POST that made it
    }
    return render(
        request, "dashboard/webhooks.html", context, status=error.status if error else 200
    )


@require_http_methods(["GET", "POST"])
@page
def webhooks(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _webhooks_page(request)
    form: dict[str, Any] = {
        "url": request.POST.get("url", ""),
        "events": request.POST.getlist("events"),
    }
    made = []
    error = attempt(
        lambda: made.append(
            webhook_services.webhook_create(
                user=_user(request), **validate(WebhookListCreateApi.InputSerializer, form)
            )
        )
    )
    if error is not None:
        return _webhooks_page(request, form=form, error=error)
    endpoint = made[0]
    return _webhooks_page(request, secret=(str(endpoint.id), endpoint.secret))


def _webhook_action(view: Callable[..., HttpResponse]) -> Callable[..., Any]:
    @require_POST
    @page
    @wraps(view)
    def wrapped(request: HttpRequest, webhook_id: str) -> HttpResponse:
        endpoint = webhook_selectors.webhook_get(user=_user(request), webhook_id=webhook_id)
        return view(request, endpoint)

    return wrapped


@_webhook_action
def webhook_rotate(request: HttpRequest, endpoint: Any) -> HttpResponse:
    endpoint = webhook_services.webhook_secret_rotate(endpoint=endpoint)
    return _webhooks_page(request, secret=(str(endpoint.id), endpoint.secret))


@_webhook_action
def webhook_test(request: HttpRequest, endpoint: Any) -> HttpResponse:
    error = _throttled(request, "webhook_test") or attempt(
        lambda: webhook_services.webhook_test(endpoint=endpoint)
    )
    return _done(request, error, "Test event queued.", "/app/webhooks")


@_webhook_action
def webhook_active(request: HttpRequest, endpoint: Any) -> HttpResponse:
    active = request.POST.get("isActive") == "true"
    webhook_services.webhook_update(endpoint=endpoint, is_active=active)
    message = "Webhook enabled." if active else "Webhook paused."
    return _done(request, None, message, "/app/webhooks")


@_webhook_action
def webhook_delete(request: HttpRequest, endpoint: Any) -> HttpResponse:
    webhook_services.webhook_delete(endpoint=endpoint)
    return _done(request, None, "Webhook deleted.", "/app/webhooks")


# --- operators -----------------------------------------------------------------------------


_INTEGER = re.compile(r"-?[0-9]{1,9}")


def _staff(request: HttpRequest) -> None:
    """Operators' pages are not there for other users (the same 404 as any unknown page)."""
    if not _user(request).is_staff:
        raise not_found("Page")


@require_GET
@page
def node_list(request: HttpRequest) -> HttpResponse:
    _staff(request)
    return render(request, "dashboard/nodes.html", {"nodes": nodes.node_list()})


@require_POST
@page
def node_update(request: HttpRequest, node_id: str) -> HttpResponse:
    _staff(request)
    node = nodes.node_get(node_id=node_id)
    changes: dict[str, Any] = {}
    if "isDraining" in request.POST:
        changes["isDraining"] = request.POST["isDraining"] == "true"
    if "capacity" in request.POST:
        raw = request.POST["capacity"].strip()
        changes["capacity"] = int(raw) if _INTEGER.fullmatch(raw) else raw

    def update() -> None:
        data = validate(NodeDetailApi.UpdateSerializer, changes)
        node_services.node_update(node=node, **data)

    error = attempt(update)
    return _done(request, error, f"Node {node.name} updated.", "/app/nodes")


# --- errors --------------------------------------------------------------------------------


def not_found_page(request: HttpRequest, path: str = "") -> HttpResponse:
    return _not_found(request)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A form sent without this site's CSRF token (another site's form, or a stale page)."""
    return _headers(render(request, "dashboard/403_csrf.html", status=403))
