"""What a node runs with, read from the environment (README "Configuration", node side)."""

from dataclasses import dataclass
from pathlib import Path

from agents.node.env import env_bool, env_float, env_int, env_str
from agents.node.ingest import IngestConfig


@dataclass(frozen=True)
class AgentConfig:
    control_url: str
    token: str
    rtmp_port: int = 1935
    stat_url: str = "http://127.0.0.1:8089"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8091
    poll_interval: float = 5.0
    report_interval: float = 2.0
    watch_interval: float = 0.5
    ffmpeg: str = "ffmpeg"
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    give_up_after: int = 8  # failed attempts in a row before a relay is FAILED (see RelayState)
    private_ok: bool = False  # relays may reach loopback and private networks (dev, tests)
    fanout: bool = True  # RTMP(S) destinations are legs of their stream's fan-out process
    recordings_dir: Path = Path(".run/recordings")

    @classmethod
    def from_env(cls) -> "AgentConfig":
        host, port = _agent_listen()
        return cls(
            control_url=env_str("RIG_CONTROL_URL", "http://127.0.0.1:8000"),
            token=env_str("RIG_NODE_TOKEN", ""),
            rtmp_port=env_int("RIG_RTMP_PORT", 1935),
            stat_url=f"http://127.0.0.1:{env_int('RIG_NGINX_HTTP_PORT', 8089)}",
            listen_host=host,
            listen_port=port,
            poll_interval=env_float("RIG_AGENT_POLL_S", 5.0),
            report_interval=env_float("RIG_AGENT_REPORT_S", 2.0),
            watch_interval=env_float("RIG_AGENT_WATCH_S", 0.5),
            ffmpeg=env_str("RIG_FFMPEG", "ffmpeg"),
            backoff_initial=env_float("RIG_RELAY_BACKOFF_INITIAL_S", 1.0),
            backoff_max=env_float("RIG_RELAY_BACKOFF_MAX_S", 30.0),
            give_up_after=env_int("RIG_RELAY_GIVE_UP_AFTER", 8),
            private_ok=env_bool("RIG_ALLOW_PRIVATE_DESTINATIONS", False),
            fanout=env_bool("RIG_RELAY_FANOUT", True),
            recordings_dir=Path(env_str("RIG_RECORDINGS_DIR", ".run/recordings")),
        )


def _agent_listen() -> tuple[str, int]:
    host, _, port = env_str("RIG_AGENT_LISTEN", "127.0.0.1:8091").rpartition(":")
    return host or "127.0.0.1", int(port)


def ingest_config_from_env() -> IngestConfig:
    control = env_str("RIG_HOOK_URL", env_str("RIG_CONTROL_URL", "http://127.0.0.1:8000"))
    token = env_str("RIG_NODE_TOKEN", "")
    host, port = _agent_listen()
    if host in ("0.0.0.0", "::", "[::]"):  # noqa: S104 - listening everywhere: loopback too
        host = "127.0.0.1"
    return IngestConfig(
        prefix=Path(env_str("RIG_NODE_DIR", ".run/node")).resolve(),
        rtmp_port=env_int("RIG_RTMP_PORT", 1935),
        rtmp_bind=env_str("RIG_RTMP_BIND", "0.0.0.0"),  # noqa: S104 - OBS connects from anywhere
        http_port=env_int("RIG_NGINX_HTTP_PORT", 8089),
        hook_base_url=f"{control.rstrip('/')}/agents/hooks/{token}",
        publish_hook_url=f"http://{host}:{port}/hooks/publish",
    )
