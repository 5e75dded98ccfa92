"""User authentication for the API: simplejwt access tokens that are still current."""

from typing import Any

from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed

from accounts.models import User
from accounts.tokens import token_is_current


def request_user(request: Request) -> User:
    """The user a view behind UserJWTAuthentication and IsAuthenticated serves."""
    assert isinstance(request.user, User)
    return request.user


class UserJWTAuthentication(JWTAuthentication):
    """A JWT issued before the user's last password change no longer authenticates."""

    def get_user(self, validated_token: Any) -> Any:
        user = super().get_user(validated_token)
        if not isinstance(user, User) or not token_is_current(user, validated_token):
            raise AuthenticationFailed("Token is no longer valid")
        return user
