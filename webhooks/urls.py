from rig.api import route
from webhooks import apis

_ID = r"(?P<webhook_id>[^/]+)"

urlpatterns = [
    route(r"webhooks", apis.WebhookListCreateApi.as_view(), "webhook-list"),
    route(rf"webhooks/{_ID}", apis.WebhookDetailApi.as_view(), "webhook-detail"),
    route(
        rf"webhooks/{_ID}/rotateSecret",
        apis.WebhookRotateSecretApi.as_view(),
        "webhook-rotate-secret",
    ),
    route(rf"webhooks/{_ID}/test", apis.WebhookTestApi.as_view(), "webhook-test"),
    route(
        rf"webhooks/{_ID}/deliveries",
        apis.WebhookDeliveryListApi.as_view(),
        "webhook-deliveries",
    ),
]
