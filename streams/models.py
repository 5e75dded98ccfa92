"""Streams, their destinations, their publish sessions and each session's relays."""

import uuid

from django.conf import settings
from django.db import models

from agents.node.protocol import RelayState
from rig.crypto import EncryptedTextField


class Service(models.TextChoices):
    YOUTUBE = "YouTube"
    TWITCH = "Twitch"
    FACEBOOK = "Facebook"
    KICK = "Kick"
    CUSTOM = "Custom"


class Stream(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="streams"
    )
    stream_key = models.CharField(max_length=64, unique=True)
    is_active = models.BooleanField(default=True)
    # Record every live session on its node (fragmented MP4), within the owner's quota.
    record = models.BooleanField(default=False)
    # The latest publish session (live while it has not ended); None until the first publish.
    session = models.ForeignKey(
        "Session", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Read with the locked stream by the publish hooks (streams.selectors.stream_by_key_for_update),
    # not columns: whether the owner has an active webhook endpoint, and for a publish (relays
    # its node runs for other sessions, relays the stream would add).
    owner_listens: bool
    relays_asked: tuple[int, int]

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return str(self.id)

    @property
    def live_session(self) -> "Session | None":
        session = self.session
        return session if session is not None and session.ended_at is None else None

    @property
    def is_streaming(self) -> bool:
        return self.live_session is not None


class Session(models.Model):
    """One publish: from nginx-rtmp's on_publish until the publisher leaves, the session is
    replaced, or its node is lost (a lost node that comes back with the same publisher
    resumes it). Where it ran is copied in, so the history outlives node changes."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="sessions")
    node = models.ForeignKey(
        "agents.IngestNode", null=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    node_name = models.CharField(max_length=64)
    region = models.CharField(max_length=64)
    hostname = models.CharField(max_length=255, blank=True)
    ingest_url = models.CharField(max_length=255)
    # nginx-rtmp's client id of the publisher: the agent binds relays to it.
    client_id = models.CharField(max_length=32, blank=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    resumed_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=64, blank=True)
    publisher_seen_at = models.DateTimeField(null=True, blank=True)
    # Reports in a row from the serving node that did not list the publisher (nginx restarted,
    # or the publisher vanished without on_publish_done): from two on, a new publish may take over.
    publisher_missed = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["stream"],
                condition=models.Q(ended_at__isnull=True),
                name="one_live_session_per_stream",
            )
        ]
        indexes = [models.Index(fields=["node", "ended_at"])]

    def __str__(self) -> str:
        return f"session {self.pk} of stream {self.stream_id}"


class Destination(models.Model):
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="destinations")
    service = models.CharField(max_length=16, choices=Service.choices)
    stream_key = EncryptedTextField()  # the platform's key: encrypted at rest (rig.crypto)
    server_url = models.CharField(max_length=512, blank=True)  # Custom only
    is_active = models.BooleanField(default=True)
    is_muted = models.BooleanField(default=False)
    # A transcode profile ({height, fps, videoBitrateKbps, audioBitrateKbps}); None: copy.
    transcode = models.JSONField(null=True, blank=True)
    # Bumped by a user's restart request; the agent restarts the relay when it changes.
    restart_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.service} #{self.pk}"


class Relay(models.Model):
    """What the serving node reported about the relay to one destination in one session."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="relays")
    # Kept (without the destination) when the destination is deleted: it is history.
    destination = models.ForeignKey(
        Destination, null=True, on_delete=models.SET_NULL, related_name="relays"
    )
    service = models.CharField(max_length=16, choices=Service.choices)
    state = models.CharField(max_length=16, choices=[(s.value, s.value) for s in RelayState])
    bitrate_kbps = models.FloatField(null=True, blank=True)
    fps = models.FloatField(null=True, blank=True)
    bytes_sent = models.BigIntegerField(default=0)
    restarts = models.IntegerField(default=0)
    since = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    log = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["session", "destination"], name="one_relay_per_session_and_destination"
            )
        ]

    def __str__(self) -> str:
        return f"relay to destination #{self.destination_id}: {self.state}"


class Pull(models.Model):
    """A pull-mode stream's source: the URL a node pulls into its own ingest instead of waiting
    for OBS, the node doing it, and what that node last reported about it."""

    stream = models.OneToOneField(
        Stream, primary_key=True, on_delete=models.CASCADE, related_name="pull"
    )
    url = EncryptedTextField()  # may carry a camera's password: encrypted at rest
    node = models.ForeignKey(
        "agents.IngestNode", null=True, blank=True, on_delete=models.SET_NULL, related_name="pulls"
    )
    # Bumped by a user's restart request; the node restarts the pull when it changes.
    restart_seq = models.PositiveIntegerField(default=0)
    state = models.CharField(max_length=16, default="pending")
    bitrate_kbps = models.FloatField(null=True, blank=True)
    fps = models.FloatField(null=True, blank=True)
    restarts = models.IntegerField(default=0)
    since = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    log = models.JSONField(default=list, blank=True)
    reported_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"pull of stream {self.stream_id}: {self.state}"


class Recording(models.Model):
    """One recording file on the node that wrote it: a recorded session yields one (more if
    its recorder had to start again, or the session moved to another node)."""

    class State(models.TextChoices):
        RECORDING = "recording"
        DONE = "done"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, editable=False)  # chosen by the node
    stream = models.ForeignKey(Stream, on_delete=models.CASCADE, related_name="recordings")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="recordings"
    )
    node = models.ForeignKey(
        "agents.IngestNode", null=True, on_delete=models.SET_NULL, related_name="recordings"
    )
    node_name = models.CharField(max_length=64)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_s = models.FloatField(default=0)
    bytes = models.BigIntegerField(default=0)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RECORDING)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"recording {self.pk} of stream {self.stream_id}: {self.state}"
