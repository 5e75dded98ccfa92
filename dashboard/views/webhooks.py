"""Webhook endpoints: add, pause, test, rotate the secret, delete, recent deliveries."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods, require_POST

from dashboard.views.base import attempt, done, field_errors, page, throttled, user_of
from rig.api import ApiError, validate
from webhooks import selectors as webhook_selectors
from webhooks import services as webhook_services
from webhooks.apis import WebhookListCreateApi
from webhooks.models import EVENTS

# --- webhooks ------------------------------------------------------------------------------


def _webhooks_page(
    request: HttpRequest,
    *,
    form: dict[str, Any] | None = None,
    error: ApiError | None = None,
    secret: tuple[str, str] | None = None,
) -> HttpResponse:
    endpoints = webhook_selectors.webhook_list(user=user_of(request))
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
                user=user_of(request), **validate(WebhookListCreateApi.InputSerializer, form)
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
        endpoint = webhook_selectors.webhook_get(user=user_of(request), webhook_id=webhook_id)
        return view(request, endpoint)

    return wrapped


@_webhook_action
def webhook_rotate(request: HttpRequest, endpoint: Any) -> HttpResponse:
    endpoint = webhook_services.webhook_secret_rotate(endpoint=endpoint)
    return _webhooks_page(request, secret=(str(endpoint.id), endpoint.secret))


@_webhook_action
def webhook_test(request: HttpRequest, endpoint: Any) -> HttpResponse:
    error = throttled(request, "webhook_test") or attempt(
        lambda: webhook_services.webhook_test(endpoint=endpoint)
    )
    return done(request, error, "Test event queued.", "/app/webhooks")


@_webhook_action
def webhook_active(request: HttpRequest, endpoint: Any) -> HttpResponse:
    active = request.POST.get("isActive") == "true"
    webhook_services.webhook_update(endpoint=endpoint, is_active=active)
    message = "Webhook enabled." if active else "Webhook paused."
    return done(request, None, message, "/app/webhooks")


@_webhook_action
def webhook_delete(request: HttpRequest, endpoint: Any) -> HttpResponse:
    webhook_services.webhook_delete(endpoint=endpoint)
    return done(request, None, "Webhook deleted.", "/app/webhooks")
