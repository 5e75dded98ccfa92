"""Stream, Destination and the last reported state of each destination's relay."""

import uuid

from django.conf import settings
from django.db import models

from rig.crypto import EncryptedTextField


class Service(models.TextChoices):
    YOUTUBE = "YouTube"
    TWITCH = "Twitch"
    FACEBOOK = "Facebook"
    CUSTOM = "Custom"


class Stream(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="streams"
    )
    stream_key = models.CharField(max_length=64, unique=True)
    is_active = models.BooleanField(default=True)
    is_streaming = models.BooleanField(default=False)
    # The live session: which node serves it and nginx-rtmp's client id for the publisher.
    node = models.ForeignKey(
        "agents.IngestNode", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    publish_client_id = models.CharField(max_length=32, blank=True)
    publisher_seen_at = models.DateTimeField(null=True, blank=True)
    # Reports in a row from the serving node that did not list the publisher (nginx restarted,
    # or the publisher vanished without on_publish_done): from two on, a new publish may take over.
    publisher_missed = models.PositiveIntegerField(default=0)
    provision_status = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return str(self.id)


class Destination(models.Model):
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="destinations")
    service = models.CharField(max_length=16, choices=Service.choices)
    stream_key = EncryptedTextField()  # the platform's key: encrypted at rest (rig.crypto)
    server_url = models.CharField(max_length=512, blank=True)  # Custom only
    is_active = models.BooleanField(default=True)
    is_muted = models.BooleanField(default=False)
    # Bumped by a user's restart request; the agent restarts the relay when it changes.
    restart_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.service} #{self.pk}"


class RelayState(models.TextChoices):
    PENDING = "pending"
    STARTING = "starting"
    LIVE = "live"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"


class Relay(models.Model):
    """What the serving node last reported about the relay to one destination."""

    destination = models.OneToOneField(
        Destination, on_delete=models.CASCADE, primary_key=True, related_name="relay"
    )
    state = models.CharField(max_length=16, choices=RelayState.choices, default=RelayState.PENDING)
    bitrate_kbps = models.FloatField(null=True, blank=True)
    fps = models.FloatField(null=True, blank=True)
    bytes_sent = models.BigIntegerField(default=0)
    restarts = models.IntegerField(default=0)
    since = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    log = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"relay to destination #{self.pk}: {self.state}"
