"""Create (or re-token) an ingest node and hand out its token exactly once."""

import os
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from agents.models import IngestNode, new_node_token, token_hash
from agents.node.protocol import agent_secret


class Command(BaseCommand):
    help = (
        "Create an ingest node and print its token once. With --token-file the token is written "
        "there (mode 0600) instead, and an existing node whose token matches the file is kept."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--rtmp-url", default="rtmp://127.0.0.1:1935/live")
        parser.add_argument("--agent-url", default="http://127.0.0.1:8091")
        parser.add_argument("--region", default="local")
        parser.add_argument("--hostname", default="")
        parser.add_argument("--capacity", type=int, default=100)
        parser.add_argument("--token-file", type=Path)
        parser.add_argument(
            "--rotate", action="store_true", help="give an existing node a new token"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        token_file: Path | None = options["token_file"]
        node = IngestNode.objects.filter(name=name).first()
        if (
            node
            and token_file
            and token_file.exists()
            and token_hash(token_file.read_text().strip()) == node.token_hash
        ):
            if not node.agent_secret:  # a node from before agent secrets: derive it now
                node.set_token(token_file.read_text().strip())
                node.save(update_fields=["agent_secret"])
            self.stdout.write(f"node {name} is set up; token in {token_file}")
            return
        if node and not (options["rotate"] or token_file):
            raise CommandError(f"node {name} exists; pass --rotate to give it a new token")
        token = new_node_token()
        fields = {
            "rtmp_url": options["rtmp_url"],
            "agent_url": options["agent_url"],
            "region": options["region"],
            "hostname": options["hostname"] or os.uname().nodename,
            "capacity": options["capacity"],
            "token_hash": token_hash(token),
            "agent_secret": agent_secret(token),
        }
        IngestNode.objects.update_or_create(name=name, defaults=fields)
        if token_file:
            token_file.parent.mkdir(parents=True, exist_ok=True)
            token_file.touch(mode=0o600)
            token_file.write_text(token + "\n")
            self.stdout.write(f"node {name} ready; token written to {token_file}")
        else:
            self.stdout.write(token)
