"""Operations endpoints: Prometheus /metrics, liveness /healthz and readiness /readyz.

Gauges about streams, relays and nodes are read from the database at scrape time, so every
gunicorn worker answers the same whichever one Prometheus reaches, in a fixed number of queries.
"""

import hmac
import ipaddress
import logging
import os
from collections import Counter
from collections.abc import Iterable
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import IngestNode
from agents.node.protocol import RelayState
from rig.api import ApiError, ErrorCode, invalid_credentials, ok
from rig.celery import app as celery_app
from rig.metrics import TaskOutcomeCollector
from rig.payloads import HealthPayload, ReadinessPayload
from rig.schema import error_response, payload, plain_text
from streams.models import Relay
from streams.selectors import live_streams

logger = logging.getLogger(__name__)

# A node runs a relay while it is in one of these states.
_RUNNING = {RelayState.STARTING, RelayState.LIVE, RelayState.RECONNECTING}


class DatabaseCollector:
    """Streams, relays and nodes as gauges, in three queries whatever their number."""

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "rig_streams_live",
            "Streams with a publisher right now",
            value=live_streams().count(),
        )
        by_state: Counter[str] = Counter()
        by_node: Counter[str] = Counter()
        bytes_sent = GaugeMetricFamily(
            "rig_relay_bytes_sent",
            "Bytes the relay has sent, as its node last reported (resets with the relay)",
            labels=["stream_id", "destination_id", "service"],
        )
        restarts = GaugeMetricFamily(
            "rig_relay_restarts",
            "Restarts of the relay in its current session, as its node last reported",
            labels=["stream_id", "destination_id", "service"],
        )
        # Relays of live sessions only: series come and go with sessions, so their number is
        # bounded by what runs now, not by every destination that ever streamed.
        relays = (
            Relay.objects.filter(session__ended_at__isnull=True, destination__isnull=False)
            .values_list(
                "destination_id",
                "session__stream_id",
                "service",
                "state",
                "bytes_sent",
                "restarts",
                "session__node__name",
            )
            .order_by("destination_id")
        )
        for dest_id, stream_id, service, state, sent, restarted, node in relays:
            labels = [str(stream_id), str(dest_id), service]
            bytes_sent.add_metric(labels, sent)
            restarts.add_metric(labels, restarted)
            by_state[state] += 1
            if node and state in _RUNNING:
                by_node[node] += 1
        states = GaugeMetricFamily("rig_relays", "Relays by state", labels=["state"])
        for state in RelayState:
            states.add_metric([state], by_state[state])
        yield states
        yield bytes_sent
        yield restarts

        now = timezone.now()
        age = GaugeMetricFamily(
            "rig_node_heartbeat_age_seconds",
            "Seconds since the node's agent last reported (+Inf: never)",
            labels=["node", "region"],
        )
        running = GaugeMetricFamily(
            "rig_node_relays", "Relays the node is running for live streams", labels=["node"]
        )
        for name, region, last_seen in IngestNode.objects.values_list(
            "name", "region", "last_seen_at"
        ):
            seconds = (now - last_seen).total_seconds() if last_seen else float("inf")
            age.add_metric([name, region], max(seconds, 0.0))
            running.add_metric([name], by_node[name])
        yield age
        yield running


def _task_names() -> list[str]:
    return sorted(name for name in celery_app.tasks if not name.startswith("celery."))


class _Scrape:
    """Everything /metrics shows: in-process metrics plus the database and Redis collectors."""

    def __init__(self) -> None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # several gunicorn workers: merge every worker's files, not just this one's
            local = CollectorRegistry()
            multiprocess.MultiProcessCollector(local)
            self._sources: list[Any] = [local]
        else:
            self._sources = [REGISTRY]
        self._sources += [DatabaseCollector(), TaskOutcomeCollector(_task_names)]

    def collect(self) -> Iterable[Metric]:
        for source in self._sources:
            yield from source.collect()


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP", "HTTP_VIA")


def _proxied(request: Request) -> bool:
    """May have come through a reverse proxy on this host, so loopback says nothing about the
    client: rig is configured behind one (RIG_TRUSTED_PROXIES), or a proxy's header is there
    (a proxy that adds none is what RIG_TRUSTED_PROXIES is for)."""
    return settings.RIG_TRUSTED_PROXIES > 0 or any(name in request.META for name in _PROXY_HEADERS)


def metrics_authorize(request: Request) -> None:
    """With RIG_METRICS_TOKEN, a matching bearer token; without it, loopback clients only."""
    expected = settings.RIG_METRICS_TOKEN
    if expected:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), expected.encode()
        ):
            raise invalid_credentials()
    elif not _is_loopback(request.META.get("REMOTE_ADDR", "")) or _proxied(request):
        raise invalid_credentials(403)


class _OpsEndpoint(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []


class MetricsApi(_OpsEndpoint):
    """Prometheus' scrape target. With RIG_METRICS_TOKEN set, send it as a bearer token;
    without it, only loopback clients are answered (others get 403)."""

    # Checked by metrics_authorize, not by DRF: for the schema only.
    security_scheme = (
        "metricsToken",
        {
            "type": "http",
            "scheme": "bearer",
            "description": "RIG_METRICS_TOKEN; unset, /metrics answers loopback clients only.",
        },
        True,
    )

    @plain_text(
        "text/plain",
        "Prometheus text exposition format 0.0.4 "
        "(`Content-Type: text/plain; version=0.0.4; charset=utf-8`).",
        errors={
            401: error_response(
                ErrorCode.INVALID_CREDENTIALS, note="here: not RIG_METRICS_TOKEN, or none"
            ),
            403: error_response(
                ErrorCode.INVALID_CREDENTIALS,
                note="here: RIG_METRICS_TOKEN unset, client not on loopback",
            ),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        metrics_authorize(request)
        return HttpResponse(generate_latest(_Scrape()), content_type=CONTENT_TYPE_PLAIN_0_0_4)


class HealthzApi(_OpsEndpoint):
    """The process is up and answering; touches nothing else."""

    @payload(HealthPayload)
    def get(self, request: Request) -> Response:
        return ok("ok", {"status": "ok"})


def _database_check() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _broker_check() -> None:
    timeout = settings.RIG_READYZ_TIMEOUT_S
    client = redis.Redis.from_url(
        settings.CELERY_BROKER_URL, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        client.ping()
    finally:
        client.close()


class ReadyzApi(_OpsEndpoint):
    """Ready to serve: the database answers and the Celery broker's Redis answers PING."""

    checks = {"database": _database_check, "broker": _broker_check}

    @payload(ReadinessPayload, errors={503: [ErrorCode.UNAVAILABLE]})
    def get(self, request: Request) -> Response:
        results: dict[str, str] = {}
        failed: dict[str, list[str]] = {}
        for name, check in self.checks.items():
            try:
                check()
                results[name] = "ok"
            except Exception as error:  # any failure means not ready
                logger.warning("readiness: %s unavailable: %s", name, error)
                failed[name] = [f"unavailable ({type(error).__name__})"]
        if failed:
            raise ApiError(ErrorCode.UNAVAILABLE, "Not ready", 503, failed)
        return ok("ready", results)
