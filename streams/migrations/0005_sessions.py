# A publish session becomes a row (Session), and each relay's report belongs to one session.
# The live state kept on Stream (provision_status and five columns) is carried over in 0006.

import uuid

import django.db.models.deletion
from django.db import migrations, models

RELAY_STATES = [(s, s) for s in ("starting", "live", "reconnecting", "failed", "stopped")]
SERVICES = [("YouTube", "Youtube"), ("Twitch", "Twitch"), ("Facebook", "Facebook"), ("Custom", "Custom")]


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0003_node_watch"),
        ("streams", "0004_encrypted_secrets"),
    ]

    operations = [
        migrations.CreateModel(
            name="Session",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("node_name", models.CharField(max_length=64)),
                ("region", models.CharField(max_length=64)),
                ("hostname", models.CharField(blank=True, max_length=255)),
                ("ingest_url", models.CharField(max_length=255)),
                ("client_id", models.CharField(blank=True, max_length=32)),
                ("started_at", models.DateTimeField()),
                ("ended_at", models.DateTimeField(blank=True, null=True)),
                ("resumed_at", models.DateTimeField(blank=True, null=True)),
                ("end_reason", models.CharField(blank=True, max_length=64)),
                ("publisher_seen_at", models.DateTimeField(blank=True, null=True)),
                ("publisher_missed", models.PositiveIntegerField(default=0)),
                (
                    "node",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="sessions",
                        to="agents.ingestnode",
                    ),
                ),
                (
                    "stream",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="sessions",
                        to="streams.stream",
                    ),
                ),
            ],
            options={
                "ordering": ["-started_at", "-id"],
                "indexes": [models.Index(fields=["node", "ended_at"], name="streams_ses_node_id_cf329b_idx")],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(ended_at__isnull=True),
                        fields=("stream",),
                        name="one_live_session_per_stream",
                    )
                ],
            },
        ),
        migrations.AddField(
            model_name="stream",
            name="session",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="streams.session",
            ),
        ),
        migrations.RenameModel(old_name="Relay", new_name="LegacyRelay"),
        migrations.CreateModel(
            name="Relay",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("service", models.CharField(choices=SERVICES, max_length=16)),
                ("state", models.CharField(choices=RELAY_STATES, max_length=16)),
                ("bitrate_kbps", models.FloatField(blank=True, null=True)),
                ("fps", models.FloatField(blank=True, null=True)),
                ("bytes_sent", models.BigIntegerField(default=0)),
                ("restarts", models.IntegerField(default=0)),
                ("since", models.DateTimeField(blank=True, null=True)),
                ("last_error", models.TextField(blank=True)),
                ("log", models.JSONField(blank=True, default=list)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "destination",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="relays",
                        to="streams.destination",
                    ),
                ),
                (
                    "session",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="relays",
                        to="streams.session",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("session", "destination"),
                        name="one_relay_per_session_and_destination",
                    )
                ],
            },
        ),
    ]
