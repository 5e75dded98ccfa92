"""Ingest nodes: an nginx-rtmp + agent pair that authenticates with its own token."""

import hashlib
import secrets
from typing import Any

from django.db import models

from agents.node.protocol import agent_secret
from rig.crypto import EncryptedTextField

TOKEN_PREFIX = "rign_"  # noqa: S105 - a prefix, not a secret: tells node tokens from JWTs


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_node_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class IngestNode(models.Model):
    name = models.SlugField(max_length=64, unique=True)
    # sha256 of the token: the token itself is shown once and never stored.
    token_hash = models.CharField(max_length=64, unique=True)
    # What workers present to the agent (agents.node.protocol.agent_secret), encrypted at rest;
    # empty for a node whose token predates it, until its token is set again (node_create).
    agent_secret = EncryptedTextField(blank=True, default="")
    rtmp_url = models.CharField(max_length=255, help_text="Public ingest URL OBS connects to")
    agent_url = models.CharField(max_length=255, blank=True, help_text="Where workers nudge it")
    region = models.CharField(max_length=64, default="local")
    hostname = models.CharField(max_length=255, blank=True)
    capacity = models.PositiveIntegerField(default=100, help_text="Most relays it may run")
    is_draining = models.BooleanField(default=False)
    # Heartbeat: the agent's report every few seconds, with what it runs.
    last_seen_at = models.DateTimeField(null=True, blank=True)
    relays_running = models.PositiveIntegerField(default=0)
    load_avg = models.FloatField(null=True, blank=True)
    # Set when heartbeats stopped for RIG_NODE_STALE_S (its sessions were ended); cleared by
    # the next heartbeat.
    lost_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # Set only where read with the node (agents.selectors.node_with_live_streams).
    live_rows: list[list[Any]]

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_authenticated(self) -> bool:  # lets DRF's IsAuthenticated accept a node
        return True

    def set_token(self, token: str) -> None:
        self.token_hash = token_hash(token)
        self.agent_secret = agent_secret(token)


class NodeWatch(models.Model):
    """The node watch's own record (one row): when it last ran, and since when the control plane
    has been up to receive heartbeats. A node's silence is judged only over that time: during a
    control-plane outage no node can report, and that is no node's fault."""

    checked_at = models.DateTimeField(null=True, blank=True)
    # None while the API does not answer (RIG_API_URL); set when it does again.
    up_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"node watch: checked {self.checked_at}, control plane up since {self.up_since}"
