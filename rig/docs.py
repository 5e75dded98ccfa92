"""Serving the API description: the schema at /schema and Swagger UI at /docs, both public.

Kept apart from rig.schema, which DRF imports as DEFAULT_SCHEMA_CLASS while these views load.
"""

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
