"""Which hosts rig may connect to on a user's behalf: global unicast addresses only.

Shared by the control plane (rig.ssrf: when a Custom destination or a webhook URL is saved)
and the node (before each relay attempt: a name that resolved to a public address when it was
saved may point inward now, DNS rebinding). Standard library only.
"""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["PRIVATE_HOST", "is_public", "local_name", "private_now"]

PRIVATE_HOST = "Loopback, private and link-local hosts are not allowed."
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")

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


def local_name(host: str) -> bool:
    """A name that is local by its spelling, whatever it resolves to."""
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(_LOCAL_SUFFIXES)


def private_now(host: str, port: int) -> bool:
    """Whether ``host`` is, or now resolves to, anything but public addresses (a name that
    does not resolve is left to the connection attempt to report)."""
    if local_name(host):
        return True
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return not all(is_public(str(info[4][0])) for info in infos)
