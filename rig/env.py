"""DATABASE_URL, read into Django's DATABASES (the other readers: agents.node.env)."""

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


def database_from_url(url: str) -> dict[str, Any]:
    """Translate ``postgres://user:pass@host:port/name`` or ``sqlite:///path`` into DATABASES."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": unquote(parts.path[1:] if parts.path.startswith("//") else parts.path),
            # several processes (API, worker, hooks) write at once in `make up`; WAL lets readers
            # run beside the writer, and synchronous=NORMAL skips the per-commit fsync that
            # would otherwise dominate the on_publish hook's latency
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    if parts.scheme in {"postgres", "postgresql"}:
        options: dict[str, Any] = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if "prepare_threshold" in options:  # `?prepare_threshold=none` behind pgbouncer
            threshold = options["prepare_threshold"]
            options["prepare_threshold"] = None if threshold == "none" else int(threshold)
        return {
            "ENGINE": "rig.postgres",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            # Kept ten minutes (checked at each request: rig.postgres): a publish hook on a new
            # connection took 9-12 ms (connecting, a server process with cold caches) against
            # 3 ms once warm, and reconnecting each minute paid that again.
            "CONN_MAX_AGE": 600,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                # Statements a connection runs often are prepared once, then only executed: half
                # the database's CPU per agent request (bench/api.py). Needs server-side binding.
                "server_side_binding": True,
                "prepare_threshold": 5,
                # TCP keepalives on a kept connection: a NAT or firewall that forgets an idle
                # connection silently (AWS's NAT after 350 s) sees traffic every 30 s, and a
                # server that vanished is found within a minute instead of at the next query.
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
                **options,
            },
        }
    raise ValueError(f"DATABASE_URL scheme {parts.scheme!r} is not supported (postgres, sqlite)")
