"""Operators' pages (staff users only): ingest nodes, drain and capacity."""

import re
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from agents import selectors as nodes
from agents import services as node_services
from agents.apis import NodeDetailApi
from dashboard.views.base import attempt, done, page, user_of
from rig.api import not_found, validate

# --- operators -----------------------------------------------------------------------------


_INTEGER = re.compile(r"-?[0-9]{1,9}")


def _staff(request: HttpRequest) -> None:
    """Operators' pages are not there for other users (the same 404 as any unknown page)."""
    if not user_of(request).is_staff:
        raise not_found("Page")


@require_GET
@page
def node_list(request: HttpRequest) -> HttpResponse:
    _staff(request)
    return render(request, "dashboard/nodes.html", {"nodes": nodes.node_list()})


@require_POST
@page
def node_update(request: HttpRequest, node_id: str) -> HttpResponse:
    _staff(request)
    node = nodes.node_get(node_id=node_id)
    changes: dict[str, Any] = {}
    if "isDraining" in request.POST:
        changes["isDraining"] = request.POST["isDraining"] == "true"
    if "capacity" in request.POST:
        raw = request.POST["capacity"].strip()
        changes["capacity"] = int(raw) if _INTEGER.fullmatch(raw) else raw

    def update() -> None:
        data = validate(NodeDetailApi.UpdateSerializer, changes)
        node_services.node_update(node=node, **data)

    error = attempt(update)
    return done(request, error, f"Node {node.name} updated.", "/app/nodes")
