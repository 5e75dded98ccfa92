"""Node entry points: `python -m agents.node agent` and `python -m agents.node ingest`."""

import argparse
import logging
import os
import signal
import sys
import threading

from agents.node.agent import Agent
from agents.node.config import AgentConfig, ingest_config_from_env
from agents.node.env import env_str
from agents.node.ingest import nginx_command, write_nginx_conf


def run_ingest() -> None:
    """Render the nginx-rtmp config and become nginx (foreground, for honcho or systemd)."""
    config = ingest_config_from_env()
    write_nginx_conf(config)
    command = nginx_command(config, nginx=env_str("RIG_NGINX", "nginx"))
    os.execvp(command[0], command)  # noqa: S606 - fixed program from our own config


def run_agent() -> None:
    config = AgentConfig.from_env()
    if not config.token:
        sys.exit("RIG_NODE_TOKEN (or RIG_NODE_TOKEN_FILE) is required")
    agent = Agent(config)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    agent.start()
    done.wait()
    agent.stop()


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("RIG_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    parser = argparse.ArgumentParser(prog="python -m agents.node")
    parser.add_argument("command", choices=["agent", "ingest"])
    args = parser.parse_args()
    run_agent() if args.command == "agent" else run_ingest()


if __name__ == "__main__":
    main()
