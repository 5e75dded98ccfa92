"""What every dashboard page shares: login and 404 handling, security headers, running a
service and showing its error next to the field, and the throttles the API's own buckets keep.

The pages are thin views over the same services and selectors as the JSON API: each form is
checked by the API operation's own InputSerializer and carried out by the same service, so a page
can do nothing the API cannot. Another user's object is the same 404 page as a missing one.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from accounts.models import User
from rig.api import ApiError, ErrorCode
from rig.errors import to_api_error

View = TypeVar("View", bound=Callable[..., HttpResponse])

# Pages load their scripts and styles from rig only, and may not be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def secure_headers(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Cache-Control"] = "no-store"  # pages show stream keys: never from a cache
    return response


def user_of(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


def not_found_response(request: HttpRequest) -> HttpResponse:
    return secure_headers(render(request, "dashboard/404.html", status=404))


def page(view: View) -> View:
    """A signed-in user's page: anonymous visitors go to the login page; an object that is not
    theirs (or not there) is the 404 page."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        try:
            return secure_headers(view(request, *args, **kwargs))
        except ApiError as error:
            if error.status == 404:
                return not_found_response(request)
            raise

    return wrapped  # type: ignore[return-value]


def public(view: View) -> View:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return secure_headers(view(request, *args, **kwargs))

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


def form_values(request: HttpRequest, *names: str) -> dict[str, str]:
    return {name: request.POST[name] for name in names if request.POST.get(name, "") != ""}


def done(request: HttpRequest, error: ApiError | None, success: str, back: str) -> HttpResponse:
    """After a button's action: say what happened, in plain words, on the page it came from."""
    if error is None:
        messages.success(request, success)
    else:
        messages.error(request, " ".join(m for ms in field_errors(error).values() for m in ms))
    return redirect(back)


class PageThrottle(SimpleRateThrottle):
    """The API's rate for the same scope, counted in the same bucket as the API's calls (by
    client address, or by ``ident`` when given): a page is no way around the API's limit."""

    def __init__(self, scope: str, ident: str | None) -> None:
        self.scope = scope
        self.ident = ident
        super().__init__()

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        ident = self.get_ident(request) if self.ident is None else self.ident
        return self.cache_format % {"scope": self.scope, "ident": ident} if ident else None


def throttled(request: HttpRequest, scope: str, ident: str | None = None) -> ApiError | None:
    throttle = PageThrottle(scope, ident)
    if throttle.allow_request(Request(request), APIView()):
        return None
    wait = int(throttle.wait() or 0) + 1
    return ApiError(ErrorCode.TOO_MANY_REQUESTS, f"Too many attempts: try again in {wait} s.", 429)


# --- errors --------------------------------------------------------------------------------


def not_found_page(request: HttpRequest, path: str = "") -> HttpResponse:
    return not_found_response(request)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A form sent without this site's CSRF token (another site's form, or a stale page)."""
    return secure_headers(render(request, "dashboard/403_csrf.html", status=403))
