# Destination keys encrypted at rest (rig.crypto); existing rows are encrypted here.

from django.db import migrations

import rig.crypto


def encrypt_existing(apps, schema_editor):
    rig.crypto.reencrypt(apps.get_model("streams", "Destination"), "stream_key")


class Migration(migrations.Migration):
    dependencies = [
        ("streams", "0003_publisher_missed"),
    ]

    operations = [
        migrations.AlterField(
            model_name="destination",
            name="stream_key",
            field=rig.crypto.EncryptedTextField(),
        ),
        migrations.RunPython(encrypt_existing, migrations.RunPython.noop),
    ]
