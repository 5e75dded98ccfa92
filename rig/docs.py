"""Serving the API description: the schema at /schema and Swagger UI at /docs, both public.

Kept apart from rig.schema, which DRF imports as DEFAULT_SCHEMA_CLASS while these views load.
"""

from pathlib import Path

import drf_spectacular_sidecar
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.views.static import serve as static_serve
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny


class SchemaApi(SpectacularAPIView):
    """The OpenAPI document: YAML, or JSON with ``?format=json`` or ``/schema.json``."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    # rig.api.JSONOnlyNegotiation always picks the first renderer; here the format is a choice.
    content_negotiation_class = DefaultContentNegotiation


class DocsApi(SpectacularSwaggerView):
    """Swagger UI over /schema, with its assets from drf-spectacular-sidecar (no CDN)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    content_negotiation_class = DefaultContentNegotiation
    url_name = "schema"


SIDECAR_STATIC_DIR = Path(drf_spectacular_sidecar.__file__).resolve().parent / "static"


def sidecar_asset(request: HttpRequest, path: str) -> HttpResponseBase:
    """Swagger UI's files under STATIC_URL, served by rig: `make up` runs gunicorn without a
    static file server, and these few files are all the docs need."""
    if ".." in path.split("/"):
        raise Http404(path)  # static_serve would refuse it too, but as a 400 and a security log
    return static_serve(request, f"drf_spectacular_sidecar/{path}", str(SIDECAR_STATIC_DIR))
