"""Whether the far end of a relay's connection still reads what the relay sends.

A destination that keeps its connection open but stops reading (a hung platform) goes on
acknowledging bytes until its receive buffer is full, megabytes later: for the sender
everything looks fine for many seconds. What shows at once is the right edge of its receive
window (bytes acknowledged + the window it advertises): a reader frees room as it reads and
the edge moves on; a peer that reads nothing freezes it while the bytes keep coming in. The
kernel tells us both figures for every socket (sock_diag, as ``ss -ti`` shows them); one
dump a second serves every ffmpeg relay of the node. A dump walks the kernel's whole table of
TCP connections (1.2 ms of CPU per address family here, with almost no connections), so a
process that holds its sockets itself (the fan-out, agents.node.fanout) asks each of its own
(``tcp_figures``: TCP_INFO) instead, and reports the figures with its progress.

Standard library only (Linux netlink); elsewhere nothing is known and nothing is judged.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_DONE, _NLMSG_ERROR = 3, 2
_INET_DIAG_INFO = 2
_TCP_ESTABLISHED = 1
_MSG = struct.Struct("=IHHII")  # nlmsghdr
_REQ = struct.Struct("=BBBxI48x")  # inet_diag_req_v2 (the socket id left empty: every socket)
_DIAG = struct.Struct("=BBBB48xIIIII")  # inet_diag_msg: ..., expires, rqueue, wqueue, uid, inode
_BYTES_ACKED = struct.Struct("=Q")  # tcp_info.tcpi_bytes_acked at 120
_SND_WND = struct.Struct("=I")  # tcp_info.tcpi_snd_wnd at 228 (older kernels: a shorter struct)
_DUMP_EVERY_S = 1.0
_TCP_INFO_BYTES = 232  # up to tcpi_snd_wnd

_lock = threading.Lock()
_cached: tuple[float, dict[int, tuple[int, int, int]]] = (-1e9, {})


def tcp_windows() -> tuple[float, dict[int, tuple[int, int, int]]]:
    """When (monotonic) and {socket inode: (bytes acknowledged, the peer's advertised window,
    bytes sent or queued but not acknowledged)} for every established TCP socket of this host,
    at most a second old; {} where unknown."""
    global _cached
    with _lock:
        if time.monotonic() - _cached[0] >= _DUMP_EVERY_S:
            windows: dict[int, tuple[int, int, int]] = {}
            for family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):
                    windows.update(_dump(family))
            _cached = (time.monotonic(), windows)
        return _cached


def _dump(family: int) -> dict[int, tuple[int, int, int]]:
    found: dict[int, tuple[int, int, int]] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as sock:
        request = _REQ.pack(family, socket.IPPROTO_TCP, 1 << (_INET_DIAG_INFO - 1),
                            1 << _TCP_ESTABLISHED)  # fmt: skip
        header = _MSG.pack(_MSG.size + len(request), _SOCK_DIAG_BY_FAMILY,
                           _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)  # fmt: skip
        sock.sendall(header + request)
        while True:
            data = sock.recv(1 << 17)
            offset = 0
            while offset + _MSG.size <= len(data):
                length, kind, _, _, _ = _MSG.unpack_from(data, offset)
                if kind in (_NLMSG_DONE, _NLMSG_ERROR) or length < _MSG.size:
                    return found
                body = offset + _MSG.size
                _, _, queued, _, inode = _DIAG.unpack_from(data, body)[-5:]
                info = _attribute(data, body + _DIAG.size, offset + length, _INET_DIAG_INFO)
                if info is not None and info[1] - info[0] >= 232:
                    start = info[0]
                    acked = _BYTES_ACKED.unpack_from(data, start + 120)[0]
                    window = _SND_WND.unpack_from(data, start + 228)[0]
                    found[inode] = (acked, window, queued)
                offset += (length + 3) & ~3


def _attribute(data: bytes, offset: int, end: int, wanted: int) -> tuple[int, int] | None:
    """(start, end) of the payload of the rtattr of type ``wanted`` in data[offset:end]."""
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return None
        if kind == wanted:
            return offset + 4, offset + length
        offset += (length + 3) & ~3
    return None


def tcp_figures(sock: socket.socket) -> tuple[int, int, int] | None:
    """(bytes acknowledged, the peer's advertised window, bytes sent or queued but not
    acknowledged) of one TCP socket of this process, as a dump tells them; None where the
    kernel does not tell them (an older kernel's shorter tcp_info; not TCP)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return None
    if len(info) < _TCP_INFO_BYTES:
        return None
    acked, window = _BYTES_ACKED.unpack_from(info, 120)[0], _SND_WND.unpack_from(info, 228)[0]
    return acked, window, struct.unpack("=i", queued)[0]


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds (empty if it is gone)."""
    inodes: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


class PeerReading:
    """Tells how long the peer of a TCP connection has not been reading what it is sent, from
    that connection's figures (``observe``) taken now and then.

    An interval between two observations counts as not reading when the peer made room for
    less than a quarter of the bytes it acknowledged (its buffers fill: a hung reader), or, its
    buffers full, acknowledged nothing while bytes wait for it. A slow link or a small window
    does not count: such a reader frees room as fast as it takes bytes.

    With ``sockets`` (their inodes: a relay process's, whose output sends far more than its
    input does), it takes the busiest of them from the node's dump itself, at most once a
    second."""

    def __init__(self, sockets: Callable[[], set[int]] | None = None) -> None:
        self._sockets = sockets
        self._last: tuple[int, float, int, int] | None = None  # connection, time, acked, edge
        self._since: float | None = None  # start of the current run of not reading

    def not_reading_for(self, now: float) -> float:
        """Seconds the peer has not been reading; 0 when it reads, or when nothing is known
        (no TCP output: SRT; no sock_diag)."""
        if self._sockets is not None:
            taken, windows = tcp_windows()
            if self._last is None or taken != self._last[1]:
                mine = [(windows[inode], inode) for inode in self._sockets() if inode in windows]
                if mine:
                    (acked, window, queued), inode = max(mine)
                    self.observe(taken, inode, acked, window, queued)
                else:
                    self._last = self._since = None
        return now - self._since if self._since is not None else 0.0

    def observe(self, taken: float, connection: int, acked: int, window: int, queued: int) -> None:
        """The connection's figures at ``taken`` (monotonic): ``tcp_figures``'s, or a dump's;
        another ``connection`` than the last observed one starts afresh."""
        last, self._last = self._last, (connection, taken, acked, acked + window)
        if last is None or last[0] != connection:
            self._since = None
            return
        _, then, acked_then, edge_then = last
        sent, room = acked - acked_then, acked + window - edge_then
        if (sent > 0 and 4 * room < sent) or (sent == 0 and room <= 0 and queued > 0):
            self._since = then if self._since is None else self._since
        else:
            self._since = None
