"""Webhook endpoints of the rig API: register URLs, rotate secrets, send a test, read deliveries."""

from typing import Any

from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from accounts.authentication import request_user
from rig.api import ErrorCode, StrictBooleanField, StrictCharField, StrictInput, ok, parse
from rig.schema import payload
from webhooks import selectors, services
from webhooks.models import EVENTS, WebhookDelivery, WebhookEndpoint
from webhooks.payloads import (
    WebhookDeletedPayload,
    WebhookDeliveryPayload,
    WebhookPayload,
    WebhookWithSecretPayload,
)
from webhooks.sender import MAX_URL_LENGTH


def webhook_payload(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> dict[str, Any]:
    body = {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "events": endpoint.events,
        "isActive": endpoint.is_active,
        "createdAt": endpoint.created_at.isoformat(),
    }
    if with_secret:
        body["secret"] = endpoint.secret
    return body


def delivery_payload(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.pk,
        "eventId": str(delivery.event_id),
        "event": delivery.event,
        "status": delivery.status,
        "responseCode": delivery.response_code,
        "attempts": delivery.attempts,
        "lastError": delivery.last_error or None,
        "createdAt": delivery.created_at.isoformat(),
        "deliveredAt": delivery.delivered_at.isoformat() if delivery.delivered_at else None,
        "nextAttemptAt": (
            delivery.next_attempt_at.isoformat()
            if delivery.next_attempt_at and delivery.status == "pending"
            else None
        ),
    }


class _Url(StrictCharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=MAX_URL_LENGTH, trim_whitespace=False, **kwargs)


class _Events(serializers.ListField):
    def __init__(self, **kwargs: Any) -> None:
        child = serializers.ChoiceField(choices=EVENTS)
        super().__init__(child=child, max_length=len(EVENTS) * 2, **kwargs)


class WebhookListCreateApi(APIView):
    class InputSerializer(StrictInput):
        url = _Url()
        events = _Events(required=False)
        isActive = StrictBooleanField(required=False)

    @payload(WebhookPayload, many=True)
    def get(self, request: Request) -> Response:
        endpoints = selectors.webhook_list(user=request_user(request))
        return ok("Webhook list for user", [webhook_payload(e) for e in endpoints])

    @payload(WebhookWithSecretPayload, errors={409: [ErrorCode.LIMIT_REACHED]})
    def post(self, request: Request) -> Response:
        data = parse(self.InputSerializer, request)
        endpoint = services.webhook_create(
            user=request_user(request),
            url=data["url"],
            events=data.get("events"),
            is_active=data.get("isActive", True),
        )
        return ok("Webhook created", webhook_payload(endpoint, with_secret=True))


class WebhookDetailApi(APIView):
    class UpdateSerializer(StrictInput):
        url = _Url(required=False)
        events = _Events(required=False)
        isActive = StrictBooleanField(required=False)

    @payload(WebhookPayload)
    def get(self, request: Request, webhook_id: str) -> Response:
        endpoint = selectors.webhook_get(user=request_user(request), webhook_id=webhook_id)
        return ok("Webhook detail", webhook_payload(endpoint))

    @payload(WebhookPayload)
    def patch(self, request: Request, webhook_id: str) -> Response:
        endpoint = selectors.webhook_get(user=request_user(request), webhook_id=webhook_id)
        data = parse(self.UpdateSerializer, request)
        endpoint = services.webhook_update(
            endpoint=endpoint,
            url=data.get("url"),
            events=data.get("events"),
            is_active=data.get("isActive"),
        )
        return ok("Webhook updated", webhook_payload(endpoint))

    @payload(WebhookDeletedPayload)
    def delete(self, request: Request, webhook_id: str) -> Response:
        endpoint = selectors.webhook_get(user=request_user(request), webhook_id=webhook_id)
        deleted_id = str(endpoint.id)  # the canonical spelling, whatever the path said
        services.webhook_delete(endpoint=endpoint)
        return ok("Webhook deleted", {"id": deleted_id})


class WebhookRotateSecretApi(APIView):
    """A new signing secret at once: retries of earlier events are signed with it too."""

    @payload(WebhookWithSecretPayload)
    def post(self, request: Request, webhook_id: str) -> Response:
        endpoint = selectors.webhook_get(user=request_user(request), webhook_id=webhook_id)
        endpoint = services.webhook_secret_rotate(endpoint=endpoint)
        return ok("Webhook secret rotated", webhook_payload(endpoint, with_secret=True))


class WebhookTestApi(APIView):
    """Queue a `ping` to this webhook only, active or not, whatever it subscribes to."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "webhook_test"

    @payload(WebhookDeliveryPayload)
    def post(self, request: Request, webhook_id: str) -> Response:
        endpoint = selectors.webhook_get(user=request_user(request), webhook_id=webhook_id)
        delivery = services.webhook_test(endpoint=endpoint)
        return ok("Test event queued", delivery_payload(delivery))


class WebhookDeliveryListApi(APIView):
    """The webhook's most recent deliveries, newest first."""

    @payload(WebhookDeliveryPayload, many=True)
    def get(self, request: Request, webhook_id: str) -> Response:
        endpoint = selectors.webhook_get(user=request_user(request), webhook_id=webhook_id)
        deliveries = selectors.delivery_list(endpoint=endpoint)
        return ok("Webhook deliveries", [delivery_payload(d) for d in deliveries])
