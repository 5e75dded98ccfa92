"""Node authentication: ``Authorization: Bearer rign_...`` checked against the stored hash."""

from typing import Any

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from agents.selectors import node_by_token


class NodeTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        parts = get_authorization_header(request).split()
        if len(parts) != 2 or parts[0].lower() != b"bearer":
            return None
        node = node_by_token(token=parts[1].decode("latin-1"))
        if node is None:
            raise AuthenticationFailed("Invalid node token")
        return node, None

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"
