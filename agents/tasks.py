"""Celery tasks for nodes. A nudge only asks the agent to reconcile now: it carries no state,
so sending it twice, late, or out of order with other nudges is harmless."""

import logging
import urllib.error
import urllib.request

from celery import shared_task
from django.conf import settings

from agents import services
from agents.models import IngestNode
from streams.pulls import pulls_assign

logger = logging.getLogger(__name__)


@shared_task(
    autoretry_for=(OSError,), retry_backoff=1, retry_backoff_max=8, max_retries=3, acks_late=True
)
def node_nudge(node_id: int) -> bool:
    node = IngestNode.objects.filter(pk=node_id).first()
    if node is None or not node.agent_url:
        return False
    request = services.agent_request(node, "/reconcile", b"{}")
    with urllib.request.urlopen(request, timeout=settings.RIG_NUDGE_TIMEOUT_S) as response:  # noqa: S310
        return bool(200 <= response.status < 300)


@shared_task(acks_late=True, ignore_result=True)
def nodes_check() -> list[str]:
    """Beat task: mark nodes whose heartbeats stopped as lost (see services.nodes_mark_lost),
    then give pulls without a node (theirs was lost, or none could take them) to one."""
    lost = services.nodes_mark_lost()
    pulls_assign()
    return lost


@shared_task(acks_late=True, ignore_result=True)
def recordings_expire() -> int:
    """Beat task: delete recordings past RIG_RECORDING_RETENTION_DAYS (with their files)."""
    return services.recordings_expire()
