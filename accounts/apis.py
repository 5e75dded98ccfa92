"""Accounts endpoints of the rig v1 API (plus refresh and /accounts/me)."""

import hashlib
import re
from typing import Any

from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle
from rest_framework.views import APIView

from accounts import services
from accounts.models import User
from accounts.payloads import TokenPairPayload, UserPayload
from rig.api import ErrorCode, StrictCharField, StrictInput, ok, parse
from rig.schema import payload

USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class _Username(StrictCharField):
    def __init__(self) -> None:
        super().__init__(min_length=3, max_length=32)

    def to_internal_value(self, data: object) -> str:
        value = super().to_internal_value(data)
        if not USERNAME_RE.fullmatch(value):
            raise serializers.ValidationError(
                "Use letters, digits, '.', '_' or '-', starting with a letter or digit."
            )
        return value


class _Password(StrictCharField):
    def __init__(self) -> None:
        super().__init__(min_length=8, max_length=128, trim_whitespace=False)


def _user_payload(user: User) -> dict[str, str]:
    return {"userID": str(user.id), "username": user.username, "email": user.email}


def account_ident(username: str) -> str:
    """Who login attempts are counted against, whichever client sends them: a digest of the
    name, so that any text makes a key every cache takes."""
    name = username.lower()[:150].encode("utf-8", "replace")
    return hashlib.sha256(name).hexdigest()[:32]


class AccountThrottle(SimpleRateThrottle):
    """Login attempts per account: spreading guesses over many addresses gets no more."""

    scope = "login_account"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        data = request.data
        username = data.get("username") if isinstance(data, dict) else None
        if not isinstance(username, str) or not username:
            return None
        return self.cache_format % {"scope": self.scope, "ident": account_ident(username)}


class _PublicEndpoint(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]


class AccountCreateApi(_PublicEndpoint):
    throttle_scope = "signup"

    class InputSerializer(StrictInput):
        username = _Username()
        password = _Password()
        email = serializers.EmailField(max_length=254)

    @payload(UserPayload, errors={409: [ErrorCode.CREATE_FAILED]})
    def post(self, request: Request) -> Response:
        data = parse(self.InputSerializer, request)
        user = services.user_create(**data)
        return ok("User created", _user_payload(user))


class LoginApi(_PublicEndpoint):
    throttle_scope = "login"
    throttle_classes = [ScopedRateThrottle, AccountThrottle]

    class InputSerializer(StrictInput):
        username = StrictCharField(max_length=150)
        password = StrictCharField(max_length=128, trim_whitespace=False)

    @payload(TokenPairPayload, errors={401: [ErrorCode.INVALID_CREDENTIALS]})
    def post(self, request: Request) -> Response:
        data = parse(self.InputSerializer, request)
        user, tokens = services.user_login(username=data["username"], password=data["password"])
        return ok("Authentication successful", {"username": user.username, **tokens})


class RefreshApi(_PublicEndpoint):
    throttle_scope = "login"

    class InputSerializer(StrictInput):
        refreshToken = StrictCharField(max_length=4096)

    @payload(TokenPairPayload, errors={401: [ErrorCode.INVALID_CREDENTIALS]})
    def post(self, request: Request) -> Response:
        data = parse(self.InputSerializer, request)
        user, tokens = services.user_refresh(refresh_token=data["refreshToken"])
        return ok("Token refreshed", {"username": user.username, **tokens})


class PasswordChangeApi(APIView):
    throttle_classes = [ScopedRateThrottle]  # per user: no guessing the old password
    throttle_scope = "password"

    class InputSerializer(StrictInput):
        oldPassword = _Password()
        newPassword = _Password()

    @payload(TokenPairPayload)
    def post(self, request: Request) -> Response:
        data = parse(self.InputSerializer, request)
        user = request.user
        assert isinstance(user, User)
        tokens = services.user_password_change(
            user=user, old_password=data["oldPassword"], new_password=data["newPassword"]
        )
        return ok("User password changed", {"username": user.username, **tokens})


class MeApi(APIView):
    @payload(UserPayload)
    def get(self, request: Request) -> Response:
        assert isinstance(request.user, User)
        return ok("User detail", _user_payload(request.user))
