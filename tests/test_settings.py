"""Settings: production unless told otherwise, and then safe or refusing to start; typed
environment readers."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agents.node.env import env_bool, env_int, env_list, env_str
from rig.env import database_from_url

ROOT = Path(__file__).resolve().parent.parent


GOOD_KEY = "a-real-production-secret-" + "0123456789abcdef" * 2


def _check(env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.run(
        list(command) or [sys.executable, "-c", "import django; django.setup()"],
        env={**clean, "DJANGO_SETTINGS_MODULE": "rig.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_forgotten_debug_means_production_and_the_dev_key_is_refused() -> None:
    result = _check({})  # neither DEBUG nor SECRET_KEY given
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


@pytest.mark.parametrize("key", ["short-key", "x" * 60])
def test_a_weak_secret_is_refused(key: str) -> None:
    result = _check({"SECRET_KEY": key})
    assert result.returncode != 0 and "at least 50 characters" in result.stderr


def test_production_with_a_real_secret_starts() -> None:
    assert _check({"DEBUG": "0", "SECRET_KEY": GOOD_KEY}).returncode == 0


def test_production_settings_pass_the_deploy_check() -> None:
    env = {"SECRET_KEY": GOOD_KEY, "ALLOWED_HOSTS": "rig.example.com"}
    command = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    result = _check(env, *command)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_production_refuses_private_destinations_and_foreign_hosts() -> None:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DEBUG, s.RIG_ALLOW_PRIVATE_DESTINATIONS, s.ALLOWED_HOSTS, "
        "s.SESSION_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.CACHES['default']['BACKEND'])"
    )
    result = _check({"SECRET_KEY": GOOD_KEY}, sys.executable, "-c", code)
    # Throttle counters shared by every worker (Redis), not one memory cache per process.
    assert result.stdout.split() == [
        "False",
        "False",
        "[]",
        "True",
        "True",
        "rig.cache.ResilientRedisCache",
    ]


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text(GOOD_KEY + "\n")
    assert _check({"DEBUG": "0", "SECRET_KEY_FILE": str(secret)}).returncode == 0


def test_env_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", "42")
    monkeypatch.setenv("X_LIST", "a, b,,c")
    monkeypatch.setenv("X_STR", "s")
    assert env_bool("X_BOOL", False) is True
    assert env_int("X_INT", 1) == 42
    assert env_list("X_LIST", []) == ["a", "b", "c"]
    assert env_str("X_STR", "d") == "s"
    assert env_str("X_MISSING", "d") == "d"
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ValueError, match="X_BOOL"):
        env_bool("X_BOOL", False)
    monkeypatch.setenv("X_INT", "4x")
    with pytest.raises(ValueError, match="X_INT"):
        env_int("X_INT", 1)


def test_database_urls() -> None:
    pg = database_from_url("postgres://u:p%40ss@db.example:6543/rig?sslmode=require")
    assert (pg["ENGINE"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"], pg["NAME"]) == (
        "rig.postgres",
        "u",
        "p@ss",
        "db.example",
        "6543",
        "rig",
    )
    assert pg["OPTIONS"] == {
        "sslmode": "require",
        "server_side_binding": True,
        "prepare_threshold": 5,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    assert (pg["CONN_MAX_AGE"], pg["CONN_HEALTH_CHECKS"]) == (600, True)
    behind_pgbouncer = database_from_url("postgres://db.example/rig?prepare_threshold=none")
    assert behind_pgbouncer["OPTIONS"]["prepare_threshold"] is None
    assert database_from_url("sqlite:////tmp/x.db")["NAME"] == "/tmp/x.db"
    with pytest.raises(ValueError, match="mysql"):
        database_from_url("mysql://x/y")


@pytest.mark.django_db
def test_a_kept_database_connection_sends_keepalives() -> None:
    """Kept connections (CONN_MAX_AGE) carry TCP keepalives: a middlebox that drops idle
    connections sees traffic, and a server that vanished is found without waiting for a query."""
    from django.db import connection

    connection.ensure_connection()
    with socket.socket(fileno=os.dup(connection.connection.pgconn.socket)) as sock:  # a copy
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
