"""Account changes: sign-up, login, token refresh, password change."""

from typing import Any

from django.contrib.auth import password_validation
from django.contrib.auth.hashers import make_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User
from accounts.selectors import user_find_by_username
from accounts.tokens import token_is_current, tokens_for
from rig.api import ApiError, ErrorCode, invalid_credentials


def _check_password_strength(password: str, *, user: User, field: str) -> None:
    try:
        password_validation.validate_password(password, user=user)
    except DjangoValidationError as exc:
        raise ApiError(
            ErrorCode.INVALID_INPUT, "Invalid input", 400, {field: list(exc.messages)}
        ) from None


def user_create(*, username: str, email: str, password: str) -> User:
    user = User(username=username, email=email)
    _check_password_strength(password, user=user, field="password")
    taken = {}
    if User.objects.filter(username__iexact=username).exists():
        taken["username"] = ["A user with this username already exists."]
    if User.objects.filter(email__iexact=email).exists():
        taken["email"] = ["A user with this email already exists."]
    if taken:
        raise ApiError(ErrorCode.CREATE_FAILED, "Unable to create user", 409, taken)
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:  # a concurrent sign-up won the race for the same name or email
        raise ApiError(
            ErrorCode.CREATE_FAILED, "Unable to create user", 409, {"username": ["Taken."]}
        ) from None
    return user


def user_authenticate(*, username: str, password: str) -> User:
    """The user these credentials name; 1003/401 otherwise (the API and the dashboard)."""
    user = user_find_by_username(username=username)
    if user is None:
        make_password(password)  # spend the same time as a real check: no user enumeration
        raise invalid_credentials()
    if not user.is_active or not user.check_password(password):
        raise invalid_credentials()
    return user


def user_login(*, username: str, password: str) -> tuple[User, dict[str, str]]:
    user = user_authenticate(username=username, password=password)
    return user, tokens_for(user)


def user_refresh(*, refresh_token: str) -> tuple[User, dict[str, str]]:
    try:
        refresh = RefreshToken(refresh_token)  # type: ignore[arg-type]
    except TokenError:
        raise invalid_credentials() from None
    user = User.objects.filter(id=refresh.get("sub")).first()
    if user is None or not token_is_current(user, refresh):
        raise invalid_credentials()
    # One use per refresh token, decided by the database: of concurrent uses with the same
    # token, only the one that creates its blacklist row wins.
    outstanding = OutstandingToken.objects.filter(jti=refresh.get("jti")).first()
    if outstanding is None:  # every refresh token rig issues is recorded when it is made
        raise invalid_credentials()
    _, first_use = BlacklistedToken.objects.get_or_create(token=outstanding)
    if not first_use:
        raise invalid_credentials()
    return user, tokens_for(user)


@transaction.atomic
def user_password_change(*, user: User, old_password: str, new_password: str) -> dict[str, Any]:
    if not user.check_password(old_password):
        raise invalid_credentials()
    _check_password_strength(new_password, user=user, field="newPassword")
    user.set_password(new_password)
    user.token_version += 1
    user.save(update_fields=["password", "token_version"])
    outstanding = OutstandingToken.objects.filter(user=user).exclude(blacklistedtoken__isnull=False)
    BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in outstanding], ignore_conflicts=True
    )
    return tokens_for(user)
