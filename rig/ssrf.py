"""The SSRF guard for URLs users give us that the platform then connects to (Custom
destinations, webhook endpoints): loopback, private, link-local and multicast hosts are refused
unless RIG_ALLOW_PRIVATE_DESTINATIONS is set (dev and tests, where everything is on loopback)."""

import concurrent.futures
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")
PRIVATE_HOST = "Loopback, private and link-local hosts are not allowed."


# IPv6 prefixes that carry an IPv4 address in their last 32 bits: NAT64 (well-known and local
# use) and the deprecated IPv4-compatible form. 6to4 and Teredo have accessors of their own.
_EMBEDDING_V4 = [ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96")]


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [v4 for v4 in (ip.ipv4_mapped, ip.sixtofour) if v4 is not None]
    if ip.teredo:
        found.extend(ip.teredo)
    if any(ip in network for network in _EMBEDDING_V4):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_public(address: str) -> bool:
    """A global unicast address, and so is any IPv4 address an IPv6 one carries (a NAT64 or
    6to4 form of 127.0.0.1 reaches loopback all the same)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        return all(is_public(str(v4)) for v4 in _embedded_ipv4(ip))
    return True


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
    host = host.lower()
    if host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
        return PRIVATE_HOST
    try:
        addresses = _resolve(host, port)
    except (OSError, UnicodeError):
        return "The host does not resolve."
    if not all(is_public(address) for address in addresses):
        return PRIVATE_HOST
    return None


def url_error(
    url: str, *, default_ports: dict[str, int], max_length: int, allow_query: bool
) -> str | None:
    """Why a URL the platform would connect to is refused, or None: its shape (scheme, host, no
    credentials or fragment), then its host (host_error). ``default_ports`` names the schemes."""
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
    if parts.username or parts.password or parts.fragment:
        return "Must not contain credentials or a fragment."
    if parts.query and not allow_query:
        return "Must not contain a query string."
    return host_error(parts.hostname, port or default_ports[parts.scheme])


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
