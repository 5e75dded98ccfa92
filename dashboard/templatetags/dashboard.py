"""Template filters of the dashboard."""

from typing import Any

from django import template

register = template.Library()


@register.filter
def get(mapping: dict[str, Any], key: str) -> Any:
    """``errors|get:name``: a dictionary's item by a variable key."""
    return mapping.get(key) if isinstance(mapping, dict) else None
