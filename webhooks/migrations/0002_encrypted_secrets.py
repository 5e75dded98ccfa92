# Webhook signing secrets encrypted at rest (rig.crypto); existing rows are encrypted here.

from django.db import migrations

import rig.crypto
import webhooks.models


def encrypt_existing(apps, schema_editor):
    rig.crypto.reencrypt(apps.get_model("webhooks", "WebhookEndpoint"), "secret")


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="webhookendpoint",
            name="secret",
            field=rig.crypto.EncryptedTextField(default=webhooks.models.new_secret),
        ),
        migrations.RunPython(encrypt_existing, migrations.RunPython.noop),
    ]
