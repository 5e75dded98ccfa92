"""JWT issuing and checking on top of simplejwt, with the user's token version as a claim."""

from typing import Any

from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User

VERSION_CLAIM = "ver"


def tokens_for(user: User) -> dict[str, str]:
    refresh = RefreshToken.for_user(user)
    # simplejwt records the whole token; its id is all rig needs (blacklisting), and a database
    # dump must not hold working refresh tokens.
    OutstandingToken.objects.filter(jti=refresh["jti"]).update(token="")
    refresh[VERSION_CLAIM] = user.token_version
    access = refresh.access_token  # copies the custom claim
    return {"token": str(access), "refreshToken": str(refresh)}


def token_is_current(user: User, token: Any) -> bool:
    return bool(user.is_active) and token.get(VERSION_CLAIM) == user.token_version
