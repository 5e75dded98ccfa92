"""The OpenAPI description of the rig API (drf-spectacular), served at /schema and /docs.

What the generator cannot see on its own is filled in here, once, for every view:
- request bodies come from a view's nested ``InputSerializer`` (``UpdateSerializer`` for PATCH);
- every success is the envelope ``{message, payload}`` with status 200; a view names the payload's
  shape with ``@payload(Shape)`` on the method. An undeclared payload is documented as any JSON
  and is a generator warning (``manage.py spectacular --fail-on-warn`` fails on it). The one
  exception is /metrics, Prometheus' text format (``plain_text``);
- error responses reference one ``Error`` component; the usual ones (400/413/415 for a body, 401
  for a token, 403 for staff-only views, 404 for path parameters, 429 for throttling) are added
  from what the view does;
- a view that checks a credential itself, outside DRF's authentication, names its security scheme
  with a ``security_scheme = (name, definition, optional)`` attribute;
- routes are ``re_path``s with an optional trailing slash: the preprocessing hook keeps one clean
  path per route and leaves out the catch-all.
"""

import re
from collections.abc import Callable, Iterable, Mapping
from functools import cache, wraps
from typing import Any

from django.views.generic import View
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.drainage import warn
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent, build_parameter_type
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAdminUser

from rig.api import ErrorCode, StrictInput

ERROR_DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.NOT_FOUND: "Not found: unknown route, id or key (another tenant's ids alike)",
    ErrorCode.METHOD_NOT_ALLOWED: "Method not allowed",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "Content-Type should be application/json (or body not JSON)",
    ErrorCode.INVALID_CREDENTIALS: "Invalid credentials: missing, invalid or superseded token",
    ErrorCode.MISSING_INPUT: "Missing required input",
    ErrorCode.INVALID_INPUT: "Invalid input (also: unknown field, wrong type, body too large)",
    ErrorCode.CREATE_FAILED: "Unable to create resource",
    ErrorCode.UPDATE_FAILED: "Unable to update resource",
    ErrorCode.FETCH_FAILED: "Unable to fetch resource (internal error)",
    ErrorCode.IN_USE: "In use: stream already live; node draining or not reporting (503)",
    ErrorCode.TOO_MANY_REQUESTS: "Too many requests (details.retryAfter: seconds)",
    ErrorCode.LIMIT_REACHED: "Limit reached (streams per user, destinations per stream, "
    "webhooks per user, ingest node capacity)",
    ErrorCode.UNAVAILABLE: "Not ready: a dependency (database, broker) is unreachable",
    ErrorCode.WRONG_STATE: "Not possible in the current state (restart of a relay whose stream "
    "is not live or whose destination is inactive)",
}


class ErrorSerializer(serializers.Serializer):
    """The error envelope: every 4xx and 5xx answer of the API has this body."""

    message = serializers.CharField()
    errorCode = serializers.ChoiceField(
        choices=[(int(code), ERROR_DESCRIPTIONS[code]) for code in ErrorCode]
    )
    details = serializers.DictField(
        allow_null=True, help_text="What went wrong per field (camelCase), or null."
    )


@cache
def envelope(shape: type[serializers.Serializer] | None, many: bool = False) -> type:
    """The success envelope ``{message, payload}`` around a payload shape (one class per shape,
    so every operation returning it shares one component)."""
    if shape is None:
        name = "AnyEnvelope"
        payload_field: serializers.Field = serializers.JSONField(
            allow_null=True, help_text="Any JSON (shape not documented yet)."
        )
    else:
        base = component_name(shape)
        name = f"{base}ListEnvelope" if many else f"{base}Envelope"
        payload_field = shape(many=many) if many else shape()
    return type(
        name,
        (serializers.Serializer,),
        {
            "__module__": __name__,
            "__doc__": "Success envelope: HTTP 200 with a message and the payload.",
            "message": serializers.CharField(),
            "payload": payload_field,
        },
    )


def success_response(
    shape: type[serializers.Serializer] | None, many: bool = False
) -> OpenApiResponse:
    return OpenApiResponse(response=envelope(shape, many), description="Success (HTTP 200).")


def error_response(*codes: ErrorCode, note: str = "") -> OpenApiResponse:
    """The Error body, described by its codes (and what this status means here, if noted)."""
    text = "; ".join(f"{int(code)}: {ERROR_DESCRIPTIONS[code]}" for code in codes)
    return OpenApiResponse(
        response=ErrorSerializer, description=f"{text} ({note})" if note else text
    )


# The error of a staff-only view (IsAdminUser) to a user who is not staff.
NOT_STAFF = error_response(
    ErrorCode.INVALID_CREDENTIALS, note="here: a valid token, not a staff user's"
)


def payload(
    shape: type[serializers.Serializer] | None,
    *,
    many: bool = False,
    errors: Mapping[int, Iterable[ErrorCode]] | None = None,
    **extend: Any,
) -> Callable[[Any], Any]:
    """Decorate a view method with the shape of its payload and the errors it adds to the
    defaults, e.g. ``@payload(DestinationPayload, errors={409: [ErrorCode.LIMIT_REACHED]})``.

    The shape documents the payload and renders it: what the method returns goes out through
    ``shape(...).data``, so only the documented fields leave, in the documented order and
    types, and a documented field the method forgot fails loudly instead of going missing."""
    responses: dict[int, Any] = {200: success_response(shape, many)}
    for status, codes in (errors or {}).items():
        responses[status] = error_response(*codes)
    document = extend_schema(responses=responses, **extend)
    if shape is None:
        return document

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(method)
        def render(view: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            response = method(view, request, *args, **kwargs)
            body = getattr(response, "data", None)
            if isinstance(body, dict) and body.get("payload") is not None:
                one = _renderer(shape)
                data = body["payload"]
                body["payload"] = [one(item) for item in data] if many else one(data)
            return response

        return document(render)

    return decorate


_MISSING = object()


@cache
def _renderer(shape: type[serializers.Serializer]) -> Callable[[Any], Any]:
    """What ``shape(data).data`` gives, field by field in the shape's order, for a payload
    built as a dict of the documented keys, without DRF's per-field machinery: that costs five
    times the rest of the render on /agents/streams (bench/api.py). A missing key fails as it
    does in DRF (None where the field allows null, left out where it is not required). A shape
    with a field that reads anything but its own key, or a payload that is not a dict, renders
    through DRF itself."""
    fields = []
    for name, field in shape().fields.items():
        if field.source != name or isinstance(field, serializers.SerializerMethodField):
            return lambda data: shape(data).data
        fields.append((name, field, _OUTPUT_TYPES.get(type(field)), _field_renderer(field)))

    def render(data: Any) -> Any:
        if type(data) is not dict and not isinstance(data, Mapping):
            return shape(data).data
        out = {}
        for name, field, output, to_representation in fields:
            value = data.get(name, _MISSING)
            if value is _MISSING:
                if field.allow_null:
                    value = None
                elif not field.required:
                    continue
                else:
                    raise KeyError(f"{shape.__name__} payload lacks {name!r}")
            if value is None or type(value) is output:
                out[name] = value
            else:
                out[name] = to_representation(value)
        return out

    return render


# What these fields' to_representation gives: a value already of that type is given as it is.
_OUTPUT_TYPES: dict[type[serializers.Field], type] = {
    serializers.CharField: str,
    serializers.BooleanField: bool,
    serializers.IntegerField: int,
    serializers.FloatField: float,
}


def _field_renderer(field: serializers.Field) -> Callable[[Any], Any]:
    if isinstance(field, serializers.ListSerializer):
        child = _renderer(type(field.child))  # type: ignore[arg-type]
        return lambda items: [child(item) for item in items]
    if isinstance(field, serializers.Serializer):
        return _renderer(type(field))
    return field.to_representation


def plain_text(
    media_type: str, description: str, errors: Mapping[int, OpenApiResponse] | None = None
) -> Callable[[Any], Any]:
    """Decorate a view method that answers text, not the envelope (only /metrics does); its
    errors are still the Error body (``error_response``)."""
    responses: dict[Any, Any] = {
        (200, media_type): OpenApiResponse(response=OpenApiTypes.STR, description=description),
        **(errors or {}),
    }
    return extend_schema(responses=responses)


def component_name(serializer_class: type) -> str:
    """``StreamPayload`` -> ``Stream``; a view's nested ``InputSerializer`` -> ``<View>Input``."""
    outer, _, inner = serializer_class.__qualname__.rpartition(".")
    name = inner.lstrip("_").removesuffix("Serializer").removesuffix("Payload")
    if outer and "<locals>" not in outer:
        name = outer.rpartition(".")[2].lstrip("_").removesuffix("Api") + name
    return name


# Path parameters of the URLconf, by name; any other is a plain string.
PATH_PARAMETERS: dict[str, tuple[dict[str, Any], str]] = {
    "stream_id": ({"type": "string", "format": "uuid"}, "The stream's id."),
    "destination_id": ({"type": "integer"}, "The destination's id."),
    "stream_key": ({"type": "string"}, "The stream key the publisher uses."),
    "token": ({"type": "string"}, "The node's token (nginx-rtmp cannot send headers)."),
    "event": (
        {"type": "string", "enum": ["publish", "publish_done"]},
        "nginx-rtmp's on_publish or on_publish_done.",
    ),
    "node_id": ({"type": "integer"}, "The ingest node's id."),
    "webhook_id": ({"type": "string", "format": "uuid"}, "The webhook's id."),
}

_BODY_METHODS = {"POST", "PUT", "PATCH"}


def _is_strict_input(serializer: Any) -> bool:
    cls = serializer if isinstance(serializer, type) else type(serializer)
    return issubclass(cls, StrictInput)


class RigAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, taught the conventions of rig's views (module docstring)."""

    def get_request_serializer(self) -> Any:
        if self.method not in _BODY_METHODS:
            return None
        names = ["UpdateSerializer", "InputSerializer"]
        if self.method != "PATCH":
            names.reverse()
        for name in names:
            found = getattr(self.view, name, None)
            if isinstance(found, type) and issubclass(found, serializers.BaseSerializer):
                return found
        return None

    def get_operation_id(self) -> str:
        """``StreamDetailApi`` PATCH -> ``stream_detail_patch``: one view per route, so unique."""
        name = type(self.view).__name__.removesuffix("Api")
        return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() + "_" + self.method.lower()

    def get_response_serializers(self) -> Any:
        """Only for a method without ``@payload`` (which replaces this): any JSON, and a warning."""
        warn(
            f"{type(self.view).__name__}.{self.method.lower()} does not declare its payload: "
            "decorate it with @rig.schema.payload(Shape)"
        )
        return {200: success_response(None)}

    def get_auth(self) -> list[dict[str, list[str]]]:
        scheme: tuple[str, dict[str, Any], bool] | None = getattr(
            self.view, "security_scheme", None
        )
        if scheme is None:
            return list(super().get_auth())
        name, definition, optional = scheme
        self.registry.register_on_missing(
            ResolvedComponent(
                name=name,
                type=ResolvedComponent.SECURITY_SCHEMA,
                object=name,
                schema=definition,
            )
        )
        return [{name: []}, {}] if optional else [{name: []}]  # {}: also without a credential

    def get_serializer_name(self, serializer: Any, direction: Any) -> str:
        return component_name(type(serializer))

    def _map_basic_serializer(self, serializer: Any, direction: Any) -> Any:
        schema = super()._map_basic_serializer(serializer, direction)
        if not type(serializer).__dict__.get("__doc__"):
            schema.pop("description", None)  # a base class's docstring says nothing about this one
        if isinstance(serializer, StrictInput):
            schema["additionalProperties"] = False  # unknown fields are refused (1005)
        return schema

    def _resolve_path_parameters(self, variables: list[str]) -> list[Any]:
        parameters = []
        for variable in variables:
            schema, description = PATH_PARAMETERS.get(variable, ({"type": "string"}, ""))
            parameters.append(
                build_parameter_type(
                    name=variable,
                    location=OpenApiParameter.PATH,
                    description=description,
                    schema=dict(schema),
                )
            )
        return parameters

    def _requires_token(self) -> bool:
        permissions = [type(p) for p in self.view.get_permissions()]
        return bool(self.view.get_authenticators()) and AllowAny not in permissions

    def _default_errors(self) -> dict[int, list[ErrorCode] | OpenApiResponse]:
        errors: dict[int, list[ErrorCode] | OpenApiResponse] = {}
        body = self.get_request_serializer() if self.method in _BODY_METHODS else None
        if body is not None:
            if _is_strict_input(body):  # validated by rig.api.parse
                errors[400] = [ErrorCode.MISSING_INPUT, ErrorCode.INVALID_INPUT]
            errors[413] = [ErrorCode.INVALID_INPUT]
            errors[415] = [ErrorCode.UNSUPPORTED_MEDIA_TYPE]
        if self._requires_token():
            errors[401] = [ErrorCode.INVALID_CREDENTIALS]
        if IsAdminUser in [type(p) for p in self.view.get_permissions()]:
            errors[403] = NOT_STAFF
        if re.search(r"{\w+}", self.path):
            errors[404] = [ErrorCode.NOT_FOUND]
        if self.view.get_throttles():
            errors[429] = [ErrorCode.TOO_MANY_REQUESTS]
        return errors

    def _get_response_bodies(self, direction: Any = "response") -> Any:
        responses = super()._get_response_bodies(direction)
        for status, error in self._default_errors().items():
            if str(status) not in responses:
                if not isinstance(error, OpenApiResponse):
                    error = error_response(*error)
                responses[str(status)] = self._get_response_for_code(
                    error, str(status), direction=direction
                )
        return dict(sorted(responses.items()))


class UserJWTScheme(SimpleJWTScheme):
    """simplejwt's scheme (``jwtAuth``) for rig's subclass, which the extension does not match."""

    target_class = "accounts.authentication.UserJWTAuthentication"


class NodeTokenScheme(OpenApiAuthenticationExtension):
    """Ingest nodes authenticate with their own token, not a user's JWT."""

    target_class = "agents.authentication.NodeTokenAuthentication"
    name = "nodeToken"

    def get_security_definition(self, auto_schema: Any) -> Any:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "rign_...",
            "description": "An ingest node's token (`manage.py node_create` prints it).",
        }


def _clean_path(path: str) -> str:
    """``/streams/{stream_id}/?``, as generated from a rig.api.route -> ``/streams/{stream_id}``"""
    path = path.removesuffix("?").rstrip("/")
    return path or "/"


def clean_routes(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    """Preprocessing hook: one clean path per route; no admin, no catch-all."""
    cleaned: list[tuple[Any, ...]] = []
    seen: set[tuple[str, str]] = set()
    for path, path_regex, method, callback in endpoints:
        view: type[View] | None = getattr(callback, "cls", None)
        if view is None:
            continue
        path = _clean_path(path)
        if path.startswith("/admin") or "*" in path or (path, method) in seen:
            continue
        seen.add((path, method))
        cleaned.append((path, path_regex, method, callback))
    return cleaned
