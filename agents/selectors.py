"""Reads for the agent API: a node's live streams and a stream's relay configuration."""

from typing import Any

from agents.models import TOKEN_PREFIX, IngestNode, token_hash
from rig.api import not_found
from streams.destinations import rtmp_url
from streams.models import Stream
from streams.selectors import stream_by_key


def node_by_token(*, token: str) -> IngestNode | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    return IngestNode.objects.filter(token_hash=token_hash(token)).first()


def agent_config_for_key(*, key: str) -> list[dict[str, Any]]:
    """The seed's Stream Config payload: every destination, with isActive for the agent."""
    stream = stream_by_key(key=key)
    if stream is None:
        raise not_found("Stream")
    return [
        {
            "id": d.pk,
            "service": d.service,
            "streamKey": d.stream_key,
            "rtmpUrl": rtmp_url(d.service, d.stream_key, d.server_url),
            "isActive": d.is_active,
            "isMuted": d.is_muted,
        }
        for d in stream.destinations.order_by("id")
    ]


def node_live_streams(*, node: IngestNode) -> list[dict[str, str]]:
    """What should be live on this node right now: the agent's desired set of streams."""
    streams = Stream.objects.filter(node=node, is_streaming=True, is_active=True).order_by("id")
    return [{"streamID": str(s.id), "streamKey": s.stream_key} for s in streams]
