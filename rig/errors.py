"""The one error path: every exception raised by an API view becomes the rig error envelope."""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response

from rig.api import ApiError, ErrorCode, invalid_credentials

logger = logging.getLogger(__name__)

_MISSING_CODES = {"required", "null"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _flatten(detail: Any) -> Any:
    """DRF's ErrorDetail tree as plain JSON: lists of messages keyed by camelCase field name."""
    if isinstance(detail, dict):
        return {_camel(str(key)): _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


def _codes(codes: Any) -> set[str]:
    if isinstance(codes, dict):
        return set().union(*(_codes(value) for value in codes.values())) if codes else set()
    if isinstance(codes, list):
        return set().union(*(_codes(value) for value in codes)) if codes else set()
    return {str(codes)}


def _validation_error(exc: exceptions.ValidationError) -> ApiError:
    detail = exc.detail if isinstance(exc.detail, dict) else {"body": exc.detail}
    details = _flatten(detail)
    if "nonFieldErrors" in details:
        details["body"] = details.pop("nonFieldErrors")
    if _codes(exc.get_codes()) & _MISSING_CODES:
        return ApiError(ErrorCode.MISSING_INPUT, "Missing required input", 400, details)
    return ApiError(ErrorCode.INVALID_INPUT, "Invalid input", 400, details)


def to_api_error(exc: Exception) -> ApiError | None:
    """Map an exception to an ApiError; None means unexpected (a 500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, exceptions.ValidationError):
        return _validation_error(exc)
    if isinstance(exc, (Http404, exceptions.NotFound)):
        return ApiError(ErrorCode.NOT_FOUND, "Not found", 404)
    if isinstance(exc, exceptions.MethodNotAllowed):
        return ApiError(ErrorCode.METHOD_NOT_ALLOWED, "Method not allowed", 405)
    if isinstance(exc, (exceptions.UnsupportedMediaType, exceptions.ParseError)):
        return ApiError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "Content-Type should be application/json",
            415,
            {"body": [str(getattr(exc, "detail", exc))]},
        )
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        return invalid_credentials()
    if isinstance(exc, (exceptions.PermissionDenied, DjangoPermissionDenied)):
        return invalid_credentials(403)
    if isinstance(exc, exceptions.Throttled):
        wait = getattr(exc, "wait", None)
        return ApiError(
            ErrorCode.TOO_MANY_REQUESTS,
            "Too many requests",
            429,
            {"retryAfter": wait} if wait is not None else None,
        )
    if isinstance(exc, exceptions.APIException):
        return ApiError(ErrorCode.INVALID_INPUT, str(exc.detail), exc.status_code)
    return None


def _body(error: ApiError) -> dict[str, Any]:
    return {"message": error.message, "errorCode": int(error.code), "details": error.details}


def _internal_error() -> ApiError:
    return ApiError(ErrorCode.FETCH_FAILED, "Internal server error", 500)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    error = to_api_error(exc)
    if error is None:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
        error = _internal_error()
    response = Response(_body(error), status=error.status)
    wait = getattr(exc, "wait", None) if isinstance(exc, exceptions.Throttled) else None
    if wait is not None:
        response["Retry-After"] = str(int(wait) + 1)
    return response


def json_error(error: ApiError) -> JsonResponse:
    """The envelope for the few answers made outside DRF views (middleware, handler500)."""
    return JsonResponse(_body(error), status=error.status)


def handler400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """Django's own refusals (a Host not in ALLOWED_HOSTS, a malformed request): the envelope,
    not Django's HTML page."""
    return json_error(ApiError(ErrorCode.INVALID_INPUT, "Bad request", 400))


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(ApiError(ErrorCode.NOT_FOUND, "Not found", 404))


def handler500(request: HttpRequest) -> JsonResponse:
    return json_error(_internal_error())
