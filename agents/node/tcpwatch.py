"""Whether the far end of a relay's connection still reads what the relay sends.

A destination that keeps its connection open but stops reading (a hung platform) goes on
acknowledging bytes until its receive buffer is full, megabytes later: for the sender
everything looks fine for many seconds. What shows at once is the right edge of its receive
window (bytes acknowledged + the window it advertises): a reader frees room as it reads and
the edge moves on; a peer that reads nothing freezes it while the bytes keep coming in. The
kernel tells us both figures for every socket (sock_diag, as ``ss -ti`` shows them); one
dump a second serves every relay of the node.

Standard library only (Linux netlink); elsewhere nothing is known and nothing is judged.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time

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
_NOTSENT = struct.Struct("=I")  # tcp_info.tcpi_notsent_bytes at 144
_RWND_LIMITED = struct.Struct("=Q")  # tcp_info.tcpi_rwnd_limited (µs) at 176
_SND_WND = struct.Struct("=I")  # tcp_info.tcpi_snd_wnd at 228 (Linux 6.2+)
_DUMP_EVERY_S = 1.0

_lock = threading.Lock()
_cached: tuple[float, dict[int, tuple[int, int, int, int]]] = (-1e9, {})


def tcp_windows() -> dict[int, tuple[int, int, int, int]]:
    """{socket inode: (bytes acknowledged, the peer's advertised window, bytes waiting to be
    sent)} for every established TCP socket of this host, at most a second old; {} where
    unknown."""
    global _cached
    with _lock:
        taken, windows = _cached
        if time.monotonic() - taken >= _DUMP_EVERY_S:
            windows = {}
            for family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):
                    windows.update(_dump(family))
            _cached = (time.monotonic(), windows)
        return windows


def _dump(family: int) -> dict[int, tuple[int, int, int, int]]:
    found: dict[int, tuple[int, int, int, int]] = {}
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
                inode = _DIAG.unpack_from(data, body)[-1]
                info = _attribute(data, body + _DIAG.size, offset + length, _INET_DIAG_INFO)
                if info is not None and info[1] - info[0] >= 232:
                    start = info[0]
                    acked = _BYTES_ACKED.unpack_from(data, start + 120)[0]
                    window = _SND_WND.unpack_from(data, start + 228)[0]
                    waiting = _NOTSENT.unpack_from(data, start + 144)[0]
                    limited = _RWND_LIMITED.unpack_from(data, start + 176)[0]
                    found[inode] = (acked, window, waiting, limited)
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
    """Follows the busiest TCP connection of one process (a relay's output: it sends far more
    than its input does) and tells how long its peer has not been reading what it is sent.

    A second counts as not reading when the peer made room for less than a quarter of the
    bytes it acknowledged (its buffers fill: a hung reader), or when the sender spent most of
    it waiting for the peer's window (they are full: a reader that stopped, or reads too slowly
    for the stream). Both compare the peer with the stream itself, whatever its bitrate."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._next = 0.0
        self._last: tuple[int, float, int, int, int] | None = (
            None  # inode, time, acked, edge, limited
        )
        self._since: float | None = None  # start of the current run of seconds not reading

    def not_reading_for(self, now: float) -> float:
        """Seconds the peer has not been reading; 0 when it reads, or when nothing is known
        (no TCP output: SRT; no sock_diag)."""
        if now >= self._next:
            self._next = now + _DUMP_EVERY_S
            self._sample(now)
        return now - self._since if self._since is not None else 0.0

    def _sample(self, now: float) -> None:
        windows = tcp_windows()
        mine = [(windows[inode], inode) for inode in socket_inodes(self.pid) if inode in windows]
        if not mine:
            self._last = self._since = None
            return
        (acked, window, _, limited), inode = max(mine)
        last, self._last = self._last, (inode, now, acked, acked + window, limited)
        if last is None or last[0] != inode:
            self._since = None
            return
        _, then, acked_then, edge_then, limited_then = last
        sent, room = acked - acked_then, acked + window - edge_then
        waited_s = max(0, limited - limited_then) / 1e6
        if (sent > 0 and 4 * room < sent) or waited_s > (now - then) / 2:
            self._since = then if self._since is None else self._since
        else:
            self._since = None
