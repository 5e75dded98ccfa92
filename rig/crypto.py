"""Secrets at rest: destination keys and webhook signing secrets are stored encrypted.

Fernet (AES-128-CBC with HMAC-SHA256) under the keys of ``RIG_ENCRYPTION_KEYS``, newest first:
the first encrypts, every one decrypts, so a key is rotated by putting a new one in front and
running ``manage.py secrets_reencrypt``, then dropping the old one. Without the variable a key is
derived from SECRET_KEY, so a forgotten variable never means plaintext. A database dump alone
then gives no platform's stream key and no way to forge a webhook.
"""

import base64
import hashlib
from functools import cache, lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

_TOKEN_PREFIX = "gAAAAA"  # noqa: S105 - every Fernet token starts so (version and timestamp)


def keys() -> list[str]:
    """The keys in force, newest first (the one derived from SECRET_KEY when none are set)."""
    if settings.RIG_ENCRYPTION_KEYS:
        return list(settings.RIG_ENCRYPTION_KEYS)
    digest = hashlib.sha256(b"rig-encryption-key:" + settings.SECRET_KEY.encode()).digest()
    return [base64.urlsafe_b64encode(digest).decode()]


@cache
def _fernet() -> MultiFernet:
    try:
        return MultiFernet([Fernet(key) for key in keys()])
    except ValueError as error:
        raise ImproperlyConfigured(f"RIG_ENCRYPTION_KEYS: {error}") from None


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(stored: str) -> str:
    """The plaintext; a value stored before encryption came in is returned as it is."""
    if not stored.startswith(_TOKEN_PREFIX):
        return stored
    try:
        return _decrypted(_fernet(), stored)
    except InvalidToken:
        raise ImproperlyConfigured(
            "A stored secret does not decrypt with RIG_ENCRYPTION_KEYS (a key was dropped "
            "before `manage.py secrets_reencrypt` ran?)"
        ) from None


@lru_cache(maxsize=4096)
def _decrypted(fernet: MultiFernet, token: str) -> str:
    """Decrypting is the costliest step of reading a node's desired state (45 us a key, 30 keys
    for a node of ten streams); a token always decrypts to the same text under the same keys."""
    return fernet.decrypt(token.encode()).decode()


class EncryptedTextField(models.TextField):
    """Text the database only ever sees encrypted. Not for lookups: each encryption differs."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return decrypt(value) if isinstance(value, str) else value

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return encrypt(value) if isinstance(value, str) and value else value


def reencrypt(model: Any, field: str, *, batch: int = 500) -> int:
    """Store ``field`` of every row again, encrypted with the newest key (plaintext left from
    before encryption included). Returns how many rows were written."""
    done = 0
    pks = list(model.objects.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(pks), batch):
        rows = list(model.objects.filter(pk__in=pks[start : start + batch]).only("pk", field))
        model.objects.bulk_update(rows, [field])
        done += len(rows)
    return done
