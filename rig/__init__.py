"""rig: the control plane project (settings, urls, Celery app, API envelope)."""

from rig.celery import app as celery_app

__all__ = ["celery_app"]
