"""Reads of accounts."""

from accounts.models import User


def user_find_by_username(*, username: str) -> User | None:
    return User.objects.filter(username__iexact=username).first()
