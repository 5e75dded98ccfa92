"""Sign up, log in, log out, change password."""

from django.contrib import admin, messages
from django.contrib.auth import login, logout, update_session_auth_hash
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts import services as accounts
from accounts.apis import AccountCreateApi, LoginApi, PasswordChangeApi, account_ident
from accounts.models import User
from dashboard.views.base import (
    attempt,
    field_errors,
    form_values,
    page,
    public,
    throttled,
    user_of,
)
from rig.api import ApiError, ErrorCode, validate

# --- accounts ------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@public
def signup(request: HttpRequest) -> HttpResponse:
    form = form_values(request, "username", "email", "password")
    error = None
    if request.method == "POST":
        created: list[User] = []
        error = throttled(request, "signup") or attempt(
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
    form = form_values(request, "username", "password")
    error = None
    if request.method == "POST":
        signed_in: list[User] = []
        error = (
            throttled(request, "login")
            or throttled(request, "login_account", account_ident(form.get("username", "")))
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
        user = user_of(request)
        form = form_values(request, "oldPassword", "newPassword")

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


def admin_login(request: HttpRequest) -> HttpResponse:
    """Django admin's login, counted in the same buckets as the API's and the dashboard's (per
    client and per account): a third door is no way around their limits."""
    if request.method == "POST":
        name = request.POST.get("username", "")
        error = throttled(request, "login") or throttled(
            request, "login_account", account_ident(name)
        )
        if error is not None:
            return HttpResponse(error.message, status=429, content_type="text/plain")
    return admin.site.login(request)
