"""Encrypt every stored secret again with the newest key of RIG_ENCRYPTION_KEYS (rotation)."""

from typing import Any

from django.core.management.base import BaseCommand

from rig.crypto import reencrypt
from streams.models import Destination
from webhooks.models import WebhookEndpoint


class Command(BaseCommand):
    help = "Re-encrypt destination keys and webhook secrets with the first RIG_ENCRYPTION_KEYS key."

    def handle(self, *args: Any, **options: Any) -> None:
        keys = reencrypt(Destination, "stream_key")
        secrets = reencrypt(WebhookEndpoint, "secret")
        self.stdout.write(f"re-encrypted {keys} destination keys and {secrets} webhook secrets")
