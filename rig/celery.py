"""The Celery app: provisioning, teardown and node nudges run here (see agents/tasks.py)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rig.settings")

app = Celery("rig")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
