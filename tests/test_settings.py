"""Settings: refuse production with the development secret; typed environment readers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rig.env import database_from_url, env_bool, env_int, env_list, env_str

ROOT = Path(__file__).resolve().parent.parent


def _check(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**clean, "DJANGO_SETTINGS_MODULE": "rig.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_debug_off_with_default_secret_refuses_to_start() -> None:
    result = _check({"DEBUG": "0"})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_debug_off_with_real_secret_starts() -> None:
    assert _check({"DEBUG": "0", "SECRET_KEY": "x" * 50}).returncode == 0


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-a-file-" + "y" * 40 + "\n")
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
        "django.db.backends.postgresql",
        "u",
        "p@ss",
        "db.example",
        "6543",
        "rig",
    )
    assert pg["OPTIONS"] == {"sslmode": "require"}
    assert database_from_url("sqlite:////tmp/x.db")["NAME"] == "/tmp/x.db"
    with pytest.raises(ValueError, match="mysql"):
        database_from_url("mysql://x/y")
