"""In-process instruments: the nginx-rtmp hook latency histogram and Celery task outcomes.

The histogram lives in the process that serves the hook; under gunicorn with several workers,
prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR) merges the workers' files at
scrape time. Task outcomes happen in the Celery worker, possibly on another host, so they are
counted in a Redis hash that /metrics reads. Neither may ever break a hook, a task or a scrape.
This module imports no models: rig.celery imports it before Django's apps are ready.
"""

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from celery.signals import task_failure, task_retry, task_success
from django.conf import settings
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily
from rest_framework.exceptions import APIException

from rig.api import ApiError

logger = logging.getLogger(__name__)

HOOKS = ("publish", "publish_done")
HOOK_DURATION = Histogram(
    "rig_hook_duration_seconds",
    "Time the control plane takes to answer an nginx-rtmp hook",
    ["hook", "outcome"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

TASK_OUTCOMES_KEY = "rig:metrics:celery_tasks"
TASK_OUTCOMES = ("succeeded", "failed", "retried")
_REDIS_TIMEOUT_S = 0.5


def observe_hook(view_method: Callable[..., Any]) -> Callable[..., Any]:
    """Time a hook view method (`post(self, request, token, event)`) into HOOK_DURATION.

    outcome: `ok` (2xx), `refused` (an answered error: unknown key, bad token, in use...),
    `error` (an unexpected exception, answered 500)."""

    @functools.wraps(view_method)
    def timed(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        event = kwargs.get("event", "")
        hook = event if event in HOOKS else "unknown"  # the path is caller-controlled
        started = time.perf_counter()
        outcome = "error"
        try:
            response = view_method(self, request, *args, **kwargs)
            outcome = "ok" if 200 <= response.status_code < 300 else "refused"
            return response
        except (ApiError, APIException):
            outcome = "refused"
            raise
        finally:
            HOOK_DURATION.labels(hook=hook, outcome=outcome).observe(time.perf_counter() - started)

    return timed


@functools.lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_connect_timeout=_REDIS_TIMEOUT_S, socket_timeout=_REDIS_TIMEOUT_S
    )


def task_outcome_record(*, task: str, outcome: str) -> None:
    """Count one outcome in Redis; a Redis outage is logged and the count is lost."""
    try:
        _redis(settings.REDIS_URL).hincrby(TASK_OUTCOMES_KEY, f"{task}|{outcome}", 1)
    except Exception:  # a metric must never fail the task
        logger.warning("could not record task outcome %s %s", task, outcome, exc_info=True)


def task_outcome_counts() -> dict[tuple[str, str], int] | None:
    """(task, outcome) -> count from Redis, or None when Redis cannot be read."""
    try:
        raw = _redis(settings.REDIS_URL).hgetall(TASK_OUTCOMES_KEY)
    except Exception:  # a scrape must not fail because Redis is down
        logger.warning("could not read task outcomes from Redis", exc_info=True)
        return None
    counts: dict[tuple[str, str], int] = {}
    for field, value in raw.items():
        text = field.decode() if isinstance(field, bytes) else str(field)
        task, _, outcome = text.rpartition("|")
        if task and outcome in TASK_OUTCOMES:
            counts[(task, outcome)] = int(value)
    return counts


class TaskOutcomeCollector:
    """`rig_celery_tasks_total{task, outcome}` from the Redis hash the workers write."""

    def __init__(self, task_names: Callable[[], list[str]]) -> None:
        self._task_names = task_names

    def collect(self) -> Any:
        counts = task_outcome_counts()
        if counts is None:
            return
        family = CounterMetricFamily(
            "rig_celery_tasks", "Celery task runs by outcome", labels=["task", "outcome"]
        )
        for task in self._task_names():  # known tasks start at 0 so rate() sees the first one
            for outcome in TASK_OUTCOMES:
                counts.setdefault((task, outcome), 0)
        for (task, outcome), value in sorted(counts.items()):
            family.add_metric([task, outcome], value)
        yield family


def _task_name(sender: Any) -> str:
    return str(getattr(sender, "name", None) or sender)


@task_success.connect(weak=False, dispatch_uid="rig.metrics.task_success")
def _on_task_success(sender: Any = None, **kwargs: Any) -> None:
    task_outcome_record(task=_task_name(sender), outcome="succeeded")


@task_failure.connect(weak=False, dispatch_uid="rig.metrics.task_failure")
def _on_task_failure(sender: Any = None, **kwargs: Any) -> None:
    task_outcome_record(task=_task_name(sender), outcome="failed")


@task_retry.connect(weak=False, dispatch_uid="rig.metrics.task_retry")
def _on_task_retry(sender: Any = None, **kwargs: Any) -> None:
    task_outcome_record(task=_task_name(sender), outcome="retried")
