"""The rig API envelope: success bodies, the application error type, and strict input fields.

Success: ``{"message", "payload"}`` with HTTP 200. Errors: ``{"message", "errorCode", "details"}``,
produced in one place (rig.errors.exception_handler) from ``ApiError`` or DRF's exceptions.
"""

import re
from enum import IntEnum
from typing import Any, TypeVar

from django.db.models import Model, QuerySet
from django.urls import URLPattern, re_path
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response


class ErrorCode(IntEnum):
    NOT_FOUND = 1000
    METHOD_NOT_ALLOWED = 1001
    UNSUPPORTED_MEDIA_TYPE = 1002
    INVALID_CREDENTIALS = 1003
    MISSING_INPUT = 1004
    INVALID_INPUT = 1005
    CREATE_FAILED = 1006
    UPDATE_FAILED = 1007
    FETCH_FAILED = 1008
    IN_USE = 1009
    # Extensions to the v1 list (new codes only, existing ones unchanged).
    TOO_MANY_REQUESTS = 1010
    LIMIT_REACHED = 1011
    UNAVAILABLE = 1012  # /readyz: a dependency (database, broker) cannot be reached
    WRONG_STATE = 1013  # not possible in the resource's current state (restart when not live)


class ApiError(Exception):
    """An error a service raises; rendered as the error envelope by rig.errors."""

    def __init__(
        self, code: ErrorCode, message: str, status: int, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details


_INT_ID = re.compile(r"[0-9]{1,18}")


def int_id(value: str) -> int | None:
    """An integer id from a URL, or None. ASCII digits only: str.isdigit() also takes '²'."""
    return int(value) if _INT_ID.fullmatch(value) else None


def invalid_input(field: str, message: str) -> ApiError:
    """1005/400 naming the field, as DRF's validation errors are rendered."""
    return ApiError(ErrorCode.INVALID_INPUT, "Invalid input", 400, {field: [message]})


Owner = TypeVar("Owner", bound=Model)


def enforce_limit(
    owner: QuerySet[Owner], owned: QuerySet[Any], limit: int, *, what: str, field: str, per: str
) -> Owner:
    """Within the caller's transaction: lock the ``owner`` row, then refuse (409, 1011) when it
    already has ``limit`` of ``owned``. The lock queues two creates made at once, so they
    cannot both take the last slot. Returns the owner as locked."""
    locked = owner.select_for_update().get()
    if owned.count() >= limit:
        raise ApiError(
            ErrorCode.LIMIT_REACHED,
            f"{what.capitalize()} limit reached",
            409,
            {field: [f"At most {limit} {what}s per {per}."]},
        )
    return locked


def invalid_credentials(status: int = 401) -> ApiError:
    """A missing or wrong token or password (401), or a token without the right (403)."""
    return ApiError(ErrorCode.INVALID_CREDENTIALS, "Invalid credentials", status)


def not_found(what: str = "Resource") -> ApiError:
    return ApiError(ErrorCode.NOT_FOUND, f"{what} not found", 404)


def ok(message: str, payload: Any = None) -> Response:
    return Response({"message": message, "payload": payload}, status=200)


def route(pattern: str, view: Any, name: str) -> URLPattern:
    """A route that matches with or without a trailing slash, so nothing is ever redirected."""
    return re_path(rf"^{pattern}/?$", view, name=name)


class SafeJSONParser(JSONParser):
    """JSON bodies, refusing what would break later instead of being answered: nesting too deep
    for the parser (a RecursionError is no parse error to DRF), and lone surrogates anywhere,
    keys included (they cannot be stored, nor echoed back in an error as UTF-8)."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON nested too deeply.") from None
        if _has_lone_surrogate(data):
            raise ParseError("JSON text with a lone surrogate (invalid Unicode).")
        return data


def _has_lone_surrogate(data: Any) -> bool:
    pending = [data]
    while pending:  # iterative: the document may be as deep as the parser allowed
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


_SURROGATE = re.compile("[\ud800-\udfff]")


class JSONOnlyNegotiation(BaseContentNegotiation):
    """Always answer JSON, whatever Accept says: the API has one representation."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        for parser in parsers:
            if parser.media_type == content_type:
                return parser
        return None

    def select_renderer(
        self, request: Request, renderers: Any, format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return renderers[0], renderers[0].media_type


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of quietly turning them into text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictBooleanField(serializers.BooleanField):
    """Only JSON true/false; "yes", 1 and "true" are not booleans."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    """Only JSON integers: "5", 5.0 and true are not integers."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class StrictInput(serializers.Serializer):
    """Base for request bodies: the body must be an object and may not carry unknown fields."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


def validate(serializer_class: type[StrictInput], data: Any) -> dict[str, Any]:
    """Validate input (a body, or a dashboard form); errors become 1004/1005 in rig.errors."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def parse(serializer_class: type[StrictInput], request: Request) -> dict[str, Any]:
    """Validate a request body."""
    return validate(serializer_class, request.data)
