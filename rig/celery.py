"""The Celery app: node nudges and the node watch (agents/tasks.py), webhook deliveries
(webhooks/tasks.py).

Workers log through Django's LOGGING with the task id as the request id, and count task
outcomes for /metrics (rig.metrics).
"""

import logging.config
import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rig.settings")

app = Celery("rig")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

import rig.metrics  # noqa: E402, F401 - connects the task outcome counters
from rig.logs import request_id_var  # noqa: E402


@setup_logging.connect(weak=False)
def _django_logging(**kwargs: Any) -> None:
    """Use rig's LOGGING (request ids, JSON) instead of Celery's own root logger setup."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@task_prerun.connect(weak=False)
def _task_request_id(task_id: str | None = None, **kwargs: Any) -> None:
    request_id_var.set(task_id or "-")


@task_postrun.connect(weak=False)
def _task_request_id_done(**kwargs: Any) -> None:
    request_id_var.set("-")
