"""Reads for the agent API (a node's live streams, a stream's relay configuration) and the
operators' view of nodes."""

import inspect
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Count, QuerySet
from django.utils import timezone

from agents.models import TOKEN_PREFIX, IngestNode, token_hash
from rig.api import int_id, not_found
from rig.queries import CompiledQuery, UnflushedCommit, columns, instance
from streams.destinations import fields_of_columns
from streams.models import Session, Stream
from streams.recordings import owners_over_quota
from streams.selectors import STREAM_KEY, live_streams, relays_wanted

# Every agent request reads its node by token and most read destinations: compiled once
# (rig.queries). The placeholders are values no real row or key has.
_NODE = columns(IngestNode)
# What a Stream Config item reads of a destination, in the order _config_item passes it:
# fields_of_columns' arguments (their names are the columns), then restartSeq.
_DESTINATION = [*inspect.signature(fields_of_columns).parameters, "restart_seq"]
_DESTINATIONS = [f"destinations__{name}" for name in _DESTINATION]


def _node_by_token_hash(*, publish: bool) -> CompiledQuery:
    def build(digest: str) -> QuerySet:
        nodes = IngestNode.objects.filter(token_hash=digest)
        if publish:
            # FOR NO KEY UPDATE: it serializes the node's publishes (and its heartbeat's UPDATE)
            # but not the check a foreign key to the node makes at commit, which a transaction
            # holding a stream makes when it gives the stream's pull to the node (against the
            # lock order). The publish's transaction commits without waiting for the WAL flush.
            nodes = nodes.select_for_update(no_key=True).annotate(unflushed=UnflushedCommit())
        # A token's hash is unique: no ordering (the model's, by name, would sort for nothing).
        return nodes.values_list(*_NODE, *(["unflushed"] if publish else [])).order_by()[:1]

    return CompiledQuery(build, digest="\x1fplaceholder-token-hash")


_node_by_token, _node_to_publish = (_node_by_token_hash(publish=p) for p in (False, True))

_stream_destinations = CompiledQuery(
    lambda key: (
        Stream.objects.filter(stream_key=key)
        .values_list(*_DESTINATIONS)
        .order_by("destinations__id")
    ),
    key="\x1fplaceholder-stream-key",
)
# A node's live streams, found by the node's token: the agent's poll authenticates and reads
# its whole desired state in one query. Each row starts with the node's id.
_live_streams_by_token = CompiledQuery(
    lambda digest: (
        live_streams()
        .filter(session__node__token_hash=digest, is_active=True)
        .values_list(
            "session__node_id",
            "id",
            "stream_key",
            "record",
            "owner_id",
            "session__client_id",
            *_DESTINATIONS,
        )
        .order_by("id", "destinations__id")
    ),
    digest="\x1fplaceholder-token-hash",
)


def _token_digest(token: str) -> str | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    return token_hash(token)


def node_by_token(*, token: str, publish: bool = False) -> IngestNode | None:
    """The node whose token this is, or None. ``publish``: read as a publish's first statement,
    which locks the node's row (in a transaction: the row serializes the node's publishes,
    streams.sessions.publish_start) and lets the transaction commit unflushed (UnflushedCommit)."""
    digest = _token_digest(token)
    if digest is None:
        return None
    rows = (_node_to_publish if publish else _node_by_token).rows(digest=digest)
    return instance(IngestNode, _NODE, rows[0][: len(_NODE)]) if rows else None


def node_with_live_streams(*, token: str) -> IngestNode | None:
    """The node whose token this is, carrying the rows of its live streams (``live_rows``, for
    node_live_streams): one query for a node with live streams (the node's other columns are
    then read only if asked for), two for one without."""
    digest = _token_digest(token)
    if digest is None:
        return None
    rows = _live_streams_by_token.rows(digest=digest)
    node = instance(IngestNode, ["id"], rows[0][:1]) if rows else node_by_token(token=token)
    if node is not None:
        node.live_rows = [row[1:] for row in rows]
    return node


def _config_item(row: list[Any]) -> dict[str, Any]:
    item = fields_of_columns(*row[:-1])
    # restartSeq changes when the user asks for a restart: the agent then restarts the relay
    item["restartSeq"] = row[-1]
    return item


def _config_items(rows: list[list[Any]], start: int) -> list[dict[str, Any]]:
    """Stream Config items from rows whose destination columns (_DESTINATION) end them, from
    ``start`` (a stream without destinations is one row of None there)."""
    return [_config_item(row[start:]) for row in rows if row[start] is not None]


def agent_config_for_key(*, key: str) -> list[dict[str, Any]]:
    """The seed's Stream Config payload: every destination, with isActive for the agent. One
    query."""
    rows = _stream_destinations.rows(key=key) if STREAM_KEY.fullmatch(key) else []
    if not rows:
        raise not_found("Stream")
    return _config_items(rows, 0)


def node_live_streams(*, node: IngestNode) -> list[dict[str, Any]]:
    """What should be live on this node right now, with each stream's destinations (the Stream
    Config items) and whether to record it: the agent's whole desired state in one answer,
    from the rows the node was authenticated with (node_with_live_streams) and one more query
    while a stream records, however many streams the node serves."""
    by_stream: dict[Any, list[list[Any]]] = {}
    for row in node.live_rows:
        by_stream.setdefault(row[0], []).append(row)
    over = owners_over_quota({rows[0][3] for rows in by_stream.values() if rows[0][2]})
    return [
        {
            "streamID": str(stream_id),
            "streamKey": key,
            "clientId": client_id,
            "destinations": _config_items(rows, 5),
            # Record this session (streams.recordings): on, and within the owner's quota.
            "record": record and owner_id not in over,
        }
        for stream_id, rows in by_stream.items()
        for _, key, record, owner_id, client_id, *_ in rows[:1]
    ]


def node_health(node: IngestNode, now: datetime) -> str:
    """healthy, stale (heartbeats late, not yet declared lost), lost, or unknown (never seen)."""
    if node.lost_at is not None:
        return "lost"
    if node.last_seen_at is None:
        return "unknown"
    if (now - node.last_seen_at).total_seconds() > settings.RIG_NODE_STALE_S:
        return "stale"
    return "healthy"


def node_get(*, node_id: str) -> IngestNode:
    pk = int_id(node_id)
    node = IngestNode.objects.filter(pk=pk).first() if pk is not None else None
    if node is None:
        raise not_found("Node")
    return node


def node_loads(nodes: list[IngestNode]) -> dict[int, dict[str, int]]:
    """Live sessions and the relays they want, per node: two grouped queries for any number."""
    ids = [node.pk for node in nodes]
    streams = dict(
        Session.objects.filter(node_id__in=ids, ended_at__isnull=True)
        .values_list("node_id")
        .annotate(n=Count("id"))
        .values_list("node_id", "n")
    )
    relays = dict(
        relays_wanted()
        .filter(stream__session__node_id__in=ids)
        .values_list("stream__session__node_id")
        .annotate(n=Count("id"))
        .values_list("stream__session__node_id", "n")
    )
    return {pk: {"streams": streams.get(pk, 0), "relays": relays.get(pk, 0)} for pk in ids}


def node_payload(node: IngestNode, load: dict[str, int], now: datetime) -> dict[str, Any]:
    age = (now - node.last_seen_at).total_seconds() if node.last_seen_at else None
    return {
        "id": node.pk,
        "name": node.name,
        "region": node.region,
        "hostname": node.hostname,
        "rtmpUrl": node.rtmp_url,
        "capacity": node.capacity,
        "isDraining": node.is_draining,
        "health": node_health(node, now),
        "lastSeen": node.last_seen_at.isoformat() if node.last_seen_at else None,
        "heartbeatAgeS": round(age, 1) if age is not None else None,
        "lostAt": node.lost_at.isoformat() if node.lost_at else None,
        "load": {
            "streams": load["streams"],
            "relays": load["relays"],
            "relaysRunning": node.relays_running,
            "loadAvg1": node.load_avg,
            "utilization": round(load["relays"] / node.capacity, 3) if node.capacity else None,
        },
    }


def node_list() -> list[dict[str, Any]]:
    nodes = list(IngestNode.objects.order_by("name"))
    loads = node_loads(nodes)
    now = timezone.now()
    return [node_payload(node, loads[node.pk], now) for node in nodes]


def node_detail(*, node: IngestNode) -> dict[str, Any]:
    return node_payload(node, node_loads([node])[node.pk], timezone.now())


def _usable_nodes() -> tuple[list[IngestNode], dict[int, dict[str, int]]]:
    """Healthy nodes that take publishes (not draining, not full), by region and name, and
    their loads."""
    nodes = list(IngestNode.objects.filter(is_draining=False, lost_at__isnull=True))
    now = timezone.now()
    loads = node_loads(nodes)
    usable = [
        node
        for node in nodes
        if node_health(node, now) == "healthy" and loads[node.pk]["relays"] < node.capacity
    ]
    usable.sort(key=lambda node: (node.region, node.name))
    return usable, loads


def _least_loaded(nodes: list[IngestNode], loads: dict[int, dict[str, int]]) -> IngestNode:
    return min(nodes, key=lambda node: (loads[node.pk]["relays"] / node.capacity, node.name))


def node_to_pull() -> IngestNode | None:
    """The node that should take a stream's pull: the least loaded that takes publishes."""
    usable, loads = _usable_nodes()
    return _least_loaded(usable, loads) if usable else None


def ingest_servers(*, region: str | None = None) -> list[dict[str, Any]]:
    """Where a streamer may point OBS now: healthy nodes that take publishes (not draining, not
    full), by region and name; the least loaded one (in ``region``, if it has one) is marked
    recommended. None take publishes: the configured RIG_INGEST_URL alone."""
    usable, loads = _usable_nodes()
    if not usable:
        return [
            {
                "name": "default",
                "region": None,
                "rtmpUrl": settings.RIG_INGEST_URL,
                "recommended": True,
            }
        ]
    best = _least_loaded([node for node in usable if node.region == region] or usable, loads)
    return [
        {
            "name": node.name,
            "region": node.region,
            "rtmpUrl": node.rtmp_url,
            "recommended": node is best,
        }
        for node in usable
    ]
