"""Routes: the v1 API at the root (as the seed defines it), admin, the OpenAPI schema and its
Swagger UI, and a JSON 404 for the rest."""

from typing import Any

from django.contrib import admin
from django.urls import include, path, re_path
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.views.accounts import admin_login
from rig import docs, monitoring
from rig.api import not_found, route


class UnknownRouteApi(APIView):
    """Every method on an unknown path is 1000/404, whatever the token (no auth probing)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def http_method_not_allowed(self, request: Any, *args: Any, **kwargs: Any) -> Response:
        raise not_found("Route")


urlpatterns = [
    # The agents' routes first: nodes poll them all the time, and routes are tried in order.
    path("", include("agents.urls")),
    path("admin/login/", admin_login, name="admin-login"),  # throttled like every login
    path("admin/", admin.site.urls),
    route("metrics", monitoring.MetricsApi.as_view(), "metrics"),
    route("healthz", monitoring.HealthzApi.as_view(), "healthz"),
    route("readyz", monitoring.ReadyzApi.as_view(), "readyz"),
    path("", include("accounts.urls")),
    path("", include("streams.urls")),
    path("", include("webhooks.urls")),
    path("", include("dashboard.urls")),
    re_path(r"^schema(?:\.(?P<format>json|yaml))?/?$", docs.SchemaApi.as_view(), name="schema"),
    re_path(r"^docs/?$", docs.DocsApi.as_view(), name="docs"),
    re_path(r"^.*$", UnknownRouteApi.as_view(), name="unknown-route"),
]

handler400 = "rig.errors.handler400"
handler404 = "rig.errors.handler404"
handler500 = "rig.errors.handler500"
