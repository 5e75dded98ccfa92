"""The SSRF guard for URLs users give us that the platform then connects to (Custom
destinations, webhook endpoints): loopback, private, link-local and multicast hosts are refused
unless RIG_ALLOW_PRIVATE_DESTINATIONS is set (dev and tests, where everything is on loopback).
What counts as public is agents.node.addresses, which the nodes check again before connecting."""

import concurrent.futures
import socket
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from agents.node.addresses import PRIVATE_HOST, is_public, local_name


def _resolve(host: str, port: int) -> set[str]:
    """The addresses a name resolves to, waiting at most RIG_DNS_TIMEOUT_MS: a slow resolver
    must not hold up a request (the lookup itself goes on in its thread)."""
    future = _resolver.submit(socket.getaddrinfo, host, port)
    try:
        return {str(info[4][0]) for info in future.result(timeout=settings.RIG_DNS_TIMEOUT_S)}
    except concurrent.futures.TimeoutError:
        raise OSError("name lookup timed out") from None


_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="rig-dns")


def host_error(host: str, port: int) -> str | None:
    """Why connecting to this host is refused, or None: names are resolved and every address
    they resolve to must be public."""
    if settings.RIG_ALLOW_PRIVATE_DESTINATIONS:
        return None
    if local_name(host):
        return PRIVATE_HOST
    try:
        addresses = _resolve(host, port)
    except (OSError, UnicodeError):
        return "The host does not resolve."
    if not all(is_public(address) for address in addresses):
        return PRIVATE_HOST
    return None


def url_error(
    url: str,
    *,
    default_ports: dict[str, int | None],
    max_length: int,
    allow_query: bool,
    allow_credentials: bool = False,
) -> str | None:
    """Why a URL the platform would connect to is refused, or None: its shape (scheme, host, no
    credentials (unless allowed: a camera's login) or fragment), then its host (host_error).
    ``default_ports`` names the schemes (a scheme without a default port needs one in the
    URL)."""
    schemes = " or ".join(f"{scheme}://" for scheme in default_ports)
    if len(url) > max_length or any(ch.isspace() or ord(ch) < 32 for ch in url):
        return f"Must be an {schemes} URL of at most {max_length} characters without spaces."
    if not url.isascii():  # http.client cannot send it; an IDN host or path is percent-encoded
        return "Must be ASCII: percent-encode other characters (punycode for host names)."
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "Not a valid URL."
    if parts.scheme not in default_ports or not parts.hostname:
        return f"Must be an {schemes} URL with a host."
    if parts.fragment:
        return "Must not contain a fragment."
    if (parts.username or parts.password) and not allow_credentials:
        return "Must not contain credentials."
    if parts.query and not allow_query:
        return "Must not contain a query string."
    port = port or default_ports[parts.scheme]
    if not port:
        return f"Must give a port: {parts.scheme}://host:port."
    return host_error(parts.hostname, port)


def create_connection(
    address: tuple[str, int], timeout: Any = None, source_address: Any = None
) -> socket.socket:
    """socket.create_connection that connects only to addresses it has just checked, so a name
    that resolves to a public address at validation and a private one now (DNS rebinding) is
    refused."""
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not settings.RIG_ALLOW_PRIVATE_DESTINATIONS and not all(
        is_public(str(info[4][0])) for info in infos
    ):
        raise OSError(PRIVATE_HOST)
    error: OSError = OSError(f"{host} does not resolve")
    # Two addresses at most: one attempt must end well within its delivery's lease.
    for family, kind, proto, _, sockaddr in infos[:2]:
        sock = socket.socket(family, kind, proto)
        try:
            if isinstance(timeout, int | float):
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error
