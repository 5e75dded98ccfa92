"""Template filters of the dashboard."""

from typing import Any

from django import template

register = template.Library()


@register.filter
def duration(seconds: float) -> str:
    """``42`` -> "42 s", ``754`` -> "12 min 34 s", ``7260`` -> "2 h 1 min"."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


@register.filter
def get(mapping: dict[str, Any], key: str) -> Any:
    """``errors|get:name``: a dictionary's item by a variable key."""
    return mapping.get(key) if isinstance(mapping, dict) else None
