"""Node authentication: ``Authorization: Bearer rign_...`` checked against the stored hash."""

from typing import Any

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from agents.selectors import node_by_token


class NodeTokenAuthentication(BaseAuthentication):
    """A view may read the node its own way, with what it answers in the same query: its
    ``find_node(token=...)`` (GET /agents/streams, which every agent polls)."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        parts = get_authorization_header(request).split()
        if len(parts) != 2 or parts[0].lower() != b"bearer":
            return None
        view = request.parser_context.get("view")
        find = getattr(view, "find_node", node_by_token)
        node = find(token=parts[1].decode("latin-1"))
        if node is None:
            raise AuthenticationFailed("Invalid node token")
        return node, None

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"
