"""Ingest-node nginx-rtmp: config rendering, process management and its HTTP API.

An ingest node runs a private nginx with the RTMP module. OBS publishes to
``rtmp://host:<rtmp_port>/live/<streamKey>``; nginx-rtmp asks the control plane whether the
key may publish (``on_publish``) and reports the end (``on_publish_done``); liveness and
revocation are the agent's job (see the template). The per-destination relays play
``rtmp://127.0.0.1:<rtmp_port>/live/<key>`` from it.

This module is what the node agent, ``make up`` tooling and the tests (which run it with
``tests.nginx.NginxIngest``) use to

* render ``deploy/nginx-rtmp.conf.template`` for an :class:`IngestConfig`
  (:func:`render_nginx_conf`, :func:`write_nginx_conf`),
* build the foreground command for a Procfile/systemd unit (:func:`nginx_command`),
* read the live publishers from nginx-rtmp's ``/stat`` XML (:func:`live_publishers`) and drop
  a publisher through ``/control`` (:func:`drop_publisher`) on the loopback HTTP port.

Standard library only: it runs on nodes that have no Django.
"""

from __future__ import annotations

import os
import string
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TEMPLATE_PATH",
    "IngestConfig",
    "drop_publisher",
    "live_publishers",
    "local_encoded_url",
    "local_stream_url",
    "nginx_command",
    "players",
    "publishers_from_stat",
    "pull_publish_url",
    "render_nginx_conf",
    "write_nginx_conf",
]

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "deploy" / "nginx-rtmp.conf.template"

# Directories inside the prefix that the rendered config refers to.
_PREFIX_SUBDIRS = (
    "logs",
    "tmp/client_body",
    "tmp/proxy",
    "tmp/fastcgi",
    "tmp/uwsgi",
    "tmp/scgi",
)

# The nginx-rtmp application OBS publishes to and relays play from: rtmp://host/live/<key>.
APP = "live"
ENCODED_APP = "encoded"


@dataclass(frozen=True)
class IngestConfig:
    """Everything that varies between ingest nginx instances."""

    prefix: Path  # private working dir: conf, pid, logs, temp paths all inside it
    rtmp_port: int = 1935
    rtmp_bind: str = "0.0.0.0"  # noqa: S104 - OBS publishes from anywhere; tests use loopback
    http_port: int = 8089  # loopback-only HTTP server for /stat and /control (never exposed)
    hook_base_url: str = "http://127.0.0.1:8000/agents/hooks/TOKEN"
    # Where on_publish goes when not to ``hook_base_url``: the node's agent, which asks the
    # control plane and starts the relays before nginx admits the publisher (see
    # Agent.admit_publish), so they get the stream from its first keyframe.
    publish_hook_url: str = ""

    @property
    def conf_path(self) -> Path:
        return self.prefix.resolve() / "nginx.conf"

    @property
    def error_log_path(self) -> Path:
        return self.prefix.resolve() / "logs" / "error.log"

    @property
    def http_base(self) -> str:
        """Base URL of the loopback stat/control server, for live_publishers/drop_publisher."""
        return f"http://127.0.0.1:{self.http_port}"


def _template_body(text: str) -> str:
    # The template opens with a comment block documenting the placeholders (it mentions
    # them with "$", so it cannot go through substitute()); it ends at the first blank line.
    header, sep, body = text.partition("\n\n")
    if sep and all(not line or line.startswith("#") for line in header.splitlines()):
        return body
    return text


def _user_directive() -> str:
    # As root, keep the worker root too: Debian's default worker user is "nobody", which
    # may not even be able to enter a private prefix (e.g. a 0700 temp dir). As anyone
    # else nginx ignores "user" with a warning, so leave it out.
    if os.geteuid() == 0:
        return "user root;"
    return "# user: not rendered as root, nginx keeps running as the invoking user"


def render_nginx_conf(cfg: IngestConfig) -> str:
    """Render the nginx config for *cfg* from deploy/nginx-rtmp.conf.template."""
    hook = cfg.hook_base_url.rstrip("/")
    publish_hook = cfg.publish_hook_url or f"{hook}/publish"
    for url in (hook, publish_hook):
        # nginx-rtmp's notify client speaks plain HTTP/1.0 only: an https:// URL would be
        # parsed as a host named "https" and every publish would fail.
        if not url.startswith("http://"):
            raise ValueError(f"hook_base_url must be a plain http:// URL, got {url!r}")
        if any(c.isspace() or c in ";{}'\"$" for c in url):
            raise ValueError(f"hook_base_url contains characters unsafe in nginx.conf: {url!r}")
    for port in (cfg.rtmp_port, cfg.http_port):
        if not 0 < port < 65536:
            raise ValueError(f"invalid port {port}")

    template = string.Template(_template_body(TEMPLATE_PATH.read_text(encoding="utf-8")))
    body = template.substitute(
        prefix=str(cfg.prefix.resolve()),
        user_directive=_user_directive(),
        rtmp_bind=cfg.rtmp_bind,
        rtmp_port=cfg.rtmp_port,
        http_port=cfg.http_port,
        hook_base_url=hook,
        publish_hook_url=publish_hook,
    )
    return (
        "# Generated by agents/node/ingest.py from deploy/nginx-rtmp.conf.template."
        " Do not edit.\n\n" + body
    )


def write_nginx_conf(cfg: IngestConfig) -> Path:
    """Create the prefix layout and write ``<prefix>/nginx.conf``; return its path."""
    prefix = cfg.prefix.resolve()
    for sub in _PREFIX_SUBDIRS:
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = cfg.conf_path
    # The hook URLs carry the node's token: keep the file private to the owner.
    tmp = conf.with_suffix(".conf.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(render_nginx_conf(cfg))
    os.replace(tmp, conf)  # atomic: a concurrent `nginx -s reload` never sees half a file
    return conf


def nginx_command(cfg: IngestConfig, *, nginx: str = "nginx") -> list[str]:
    """Foreground nginx command line (the config itself says ``daemon off``).

    ``-p`` keeps relative paths inside the prefix; ``-c`` points at the rendered config.
    Before the config is read, Debian's nginx logs to stderr (its compiled-in error log), so
    startup errors land in the supervisor's output rather than /var/log/nginx.
    """
    prefix = cfg.prefix.resolve()
    return [nginx, "-p", f"{prefix}/", "-c", str(cfg.conf_path)]


def local_stream_url(rtmp_port: int, key: str) -> str:
    """Where processes on the node play a stream from its ingest (relays, snapshots)."""
    return f"rtmp://127.0.0.1:{rtmp_port}/{APP}/{key}"


def local_encoded_url(rtmp_port: int, key: str, profile: tuple[int, int, int, int]) -> str:
    """Where a stream's shared encoder for one transcode profile publishes and the relays of
    the destinations with that profile play (the ingest's ``encoded`` application: loopback
    only, no hooks)."""
    height, fps, video_kbps, audio_kbps = profile
    return (
        f"rtmp://127.0.0.1:{rtmp_port}/{ENCODED_APP}/{key}_{height}p{fps}_{video_kbps}_{audio_kbps}"
    )


def pull_publish_url(rtmp_port: int, key: str, token: str) -> str:
    """Where a pull publishes the stream it pulls: the ingest, under the stream's key, with the
    token that tells the control plane's hook it is the stream's own pull."""
    return f"{local_stream_url(rtmp_port, key)}?pull={token}"


def _http_get(url: str, timeout: float) -> bytes:
    # Only ever loopback http:// URLs built by this module; no proxies for loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as resp:
        data: bytes = resp.read()
        return data


def live_publishers(http_base: str, *, app: str = APP, timeout: float = 2.0) -> dict[str, int]:
    """Map each stream name currently being published in *app* to its nginx client id.

    Parsed from nginx-rtmp's ``/stat`` XML::

        <rtmp><server><application><name>live</name><live>
          <stream><name>KEY</name>...<client><id>7</id>...<publishing/>...</client>...

    The client id is nginx's connection number: it is what ``/control`` accepts as
    ``clientid`` and what the hooks send as ``clientid``. Raises ``OSError`` (URLError)
    when nginx does not answer, ``xml.etree.ElementTree.ParseError`` on a garbled answer.
    """
    return publishers_from_stat(_http_get(f"{http_base.rstrip('/')}/stat", timeout), app=app)


def publishers_from_stat(xml: bytes, *, app: str = APP) -> dict[str, int]:
    """The parsing half of :func:`live_publishers`: ``/stat`` XML -> {stream name: client id}."""
    found: dict[str, int] = {}
    for name, client in _clients(xml, app):
        # A stream entry also lists its players (relays); only the client carrying
        # <publishing/> is the publisher.
        if client.find("publishing") is None:
            continue
        cid = (client.findtext("id") or "").strip()
        if cid.isdigit():
            found[name] = int(cid)
    return found


def players(http_base: str, name: str, *, app: str = APP, timeout: float = 1.0) -> int:
    """How many clients play *name* in *app* (relays, recorders), published or not yet."""
    xml = _http_get(f"{http_base.rstrip('/')}/stat", timeout)
    return sum(
        1
        for found, client in _clients(xml, app)
        if found == name and client.find("publishing") is None
    )


def _clients(xml: bytes, app: str) -> Iterator[tuple[str, ET.Element]]:
    """(stream name, client element) for every client of every stream of *app* in ``/stat``."""
    root = ET.fromstring(xml)  # noqa: S314 - from our own loopback nginx
    for application in root.iter("application"):
        if application.findtext("name") != app:
            continue
        for stream in application.iterfind("live/stream"):
            name = stream.findtext("name")
            if name is not None:
                for client in stream.iterfind("client"):
                    yield name, client


def drop_publisher(http_base: str, name: str, *, app: str = APP, timeout: float = 2.0) -> bool:
    """Disconnect whoever is publishing *name* in *app*; True if a publisher was dropped.

    Uses ``/control/drop/publisher``, whose body is the number of sessions dropped. nginx
    closes the connection and sends ``on_publish_done`` within milliseconds. The publisher
    (OBS) may reconnect at once, so revoke the key in the control plane first, or the next
    on_publish will let it back in.
    """
    query = urllib.parse.urlencode({"app": app, "name": name})
    body = _http_get(f"{http_base.rstrip('/')}/control/drop/publisher?{query}", timeout)
    try:
        return int(body.strip() or b"0") > 0
    except ValueError as exc:
        raise RuntimeError(f"unexpected /control answer: {body[:200]!r}") from exc
