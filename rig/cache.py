"""The shared cache (throttle counters, login-page throttles): Redis, so that every gunicorn
worker and every control-plane host counts against the same limits.

A cache outage must not become an API outage: reads miss and writes are dropped (throttles
fail open for the outage, logged), each within a short socket timeout."""

import logging
import time
from typing import Any

from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_WARN_EVERY_S = 30.0


class ResilientRedisCache(RedisCache):
    _warned_at = 0.0

    def _failed(self, error: Exception) -> None:
        now = time.monotonic()
        if now - ResilientRedisCache._warned_at >= _WARN_EVERY_S:
            ResilientRedisCache._warned_at = now
            logger.warning("cache unreachable, throttles fail open meanwhile: %s", error)

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        try:
            return super().get(key, default, version)
        except (RedisError, OSError) as error:
            self._failed(error)
            return default

    def set(self, key: Any, value: Any, timeout: Any = None, version: int | None = None) -> None:
        try:
            super().set(key, value, timeout, version)
        except (RedisError, OSError) as error:
            self._failed(error)
