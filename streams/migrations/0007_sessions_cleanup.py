# The session record now lives in Session rows (0005, 0006).

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("streams", "0006_sessions_carry_over")]

    operations = [
        migrations.RemoveField(model_name="stream", name="provision_status"),
        migrations.RemoveField(model_name="stream", name="is_streaming"),
        migrations.RemoveField(model_name="stream", name="node"),
        migrations.RemoveField(model_name="stream", name="publish_client_id"),
        migrations.RemoveField(model_name="stream", name="publisher_seen_at"),
        migrations.RemoveField(model_name="stream", name="publisher_missed"),
        migrations.DeleteModel(name="LegacyRelay"),
    ]
