"""A small RTMP player and publisher over asyncio, and the FLV tags between them: a fan-out that
reads a stream once and writes every destination from one process.

Why: an ``ffmpeg -c copy`` relay makes about 2,500 system calls a second at 6 Mb/s (its RTMP
writer sends each 4 KiB chunk and its 1-byte header apart); here each tag (one RTMP message) is
cut into chunks once, shared by every destination, and a leg's messages go out together when
its owner flushes (agents.node.fanout: every 300 ms, about three writes a second). The player
reads the ingest's stream in the same process: no reader process to start when a publisher
arrives.

What is spoken (Adobe's RTMP 1.0 specification): the plain handshake (C0/C1/C2), Set Chunk Size
(64 KiB), ``connect`` and ``createStream`` in AMF0; a publisher then ``releaseStream``,
``FCPublish`` and ``publish``, and sends ``@setDataFrame onMetaData``, audio and video messages
with absolute timestamps that start at 0 for each leg; a player ``play``s, and reads the
server's chunk stream (types 0-3, extended timestamps) into messages until the publisher leaves.
Both answer the server's control messages (chunk sizes, acknowledgements, pings) and its command
results, so a refusal (``NetStream.Publish.BadName``, a closed connection) is an error, and a
server that stops reading is seen by how much is buffered for it.

Standard library only: it runs on nodes that have no Django.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

CHUNK_SIZE = 65536
SEND_BUFFER_BYTES = 256 * 1024
_READ_BYTES = 1 << 20  # at most this much read at once
_SPACED_READ_BYTES = 256 * 1024  # at most this much at once when reads are spaced (Player)
# A type-0 chunk header: basic header and timestamp, size and type (big-endian), then the
# stream id (little-endian, as RTMP has it).
_HEADER, _STREAM_ID = struct.Struct(">II"), struct.Struct("<I")
_SPACED_AFTER_MS = 2000  # a Player reads as bytes arrive for this much of the stream (Player)
_CLEAN_END_BYTES = 1024 * 1024  # more waiting for a destination than this: it does not read
_CONTROL_CSID, _COMMAND_CSID, _DATA_CSID, _AUDIO_CSID, _VIDEO_CSID = 2, 3, 4, 6, 7
AUDIO, VIDEO, DATA = 8, 9, 18  # FLV tag types are RTMP message types
_SET_CHUNK_SIZE, _ACK, _USER_CONTROL, _WINDOW_ACK, _PEER_BW, _AMF0_COMMAND = 1, 3, 4, 5, 6, 20


class RtmpError(Exception):
    """The destination refused the publish, or the connection broke."""


# --- AMF0 -------------------------------------------------------------------------------------


def amf0(*values: Any) -> bytes:
    out = bytearray()
    for value in values:
        if value is None:
            out += b"\x05"
        elif isinstance(value, bool):
            out += b"\x01" + (b"\x01" if value else b"\x00")
        elif isinstance(value, int | float):
            out += b"\x00" + struct.pack(">d", float(value))
        elif isinstance(value, str):
            data = value.encode()
            out += b"\x02" + struct.pack(">H", len(data)) + data
        elif isinstance(value, dict):
            out += b"\x03"
            for key, item in value.items():
                name = key.encode()
                out += struct.pack(">H", len(name)) + name + amf0(item)
            out += b"\x00\x00\x09"
        else:
            raise TypeError(f"no AMF0 form for {type(value).__name__}")
    return bytes(out)


_ON_METADATA, _SET_DATA_FRAME = amf0("onMetaData"), amf0("@setDataFrame")


def amf0_decode(data: bytes) -> list[Any]:
    """Every value in ``data`` (numbers, booleans, strings, objects, arrays, null)."""
    values, offset = [], 0
    while offset < len(data):
        value, offset = _amf0_value(data, offset)
        values.append(value)
    return values


def _amf0_value(data: bytes, at: int) -> tuple[Any, int]:
    marker = data[at]
    at += 1
    if marker == 0x00:
        return struct.unpack_from(">d", data, at)[0], at + 8
    if marker == 0x01:
        return data[at] != 0, at + 1
    if marker == 0x02:
        (size,) = struct.unpack_from(">H", data, at)
        return data[at + 2 : at + 2 + size].decode(errors="replace"), at + 2 + size
    if marker in (0x03, 0x08):  # object; ECMA array (a count, then the same properties)
        at += 4 if marker == 0x08 else 0
        found: dict[str, Any] = {}
        while data[at : at + 3] != b"\x00\x00\x09":
            (size,) = struct.unpack_from(">H", data, at)
            key = data[at + 2 : at + 2 + size].decode(errors="replace")
            found[key], at = _amf0_value(data, at + 2 + size)
        return found, at + 3
    if marker in (0x05, 0x06):  # null, undefined
        return None, at
    if marker == 0x0A:  # strict array
        (count,) = struct.unpack_from(">I", data, at)
        items, at = [], at + 4
        for _ in range(count):
            item, at = _amf0_value(data, at)
            items.append(item)
        return items, at
    raise ValueError(f"AMF0 marker {marker:#x} not understood")


# --- chunks -------------------------------------------------------------------------------------


def chunk_body(csid: int, body: bytes, chunk_size: int = CHUNK_SIZE) -> list[bytes]:
    """A message's body cut into chunks, each after the first led by its 1-byte type-3
    header: the part of a message that is the same for every leg."""
    parts = [body[:chunk_size]]
    for start in range(chunk_size, len(body), chunk_size):
        parts += [bytes([0xC0 | csid]), body[start : start + chunk_size]]
    return parts


def message_header(csid: int, timestamp: int, size: int, kind: int, stream_id: int) -> bytes:
    """A type-0 chunk header with an absolute timestamp (from 0xFFFFFF on, in the extended
    field after it)."""
    extended = timestamp >= 0xFFFFFF  # every tag to every leg has one of these: few calls
    head = _HEADER.pack(csid << 24 | min(timestamp, 0xFFFFFF), size << 8 | kind)
    head += _STREAM_ID.pack(stream_id)
    return head + struct.pack(">I", timestamp & 0xFFFFFFFF) if extended else head


def message(csid: int, kind: int, body: bytes, stream_id: int = 0, timestamp: int = 0) -> bytes:
    return message_header(csid, timestamp, len(body), kind, stream_id) + b"".join(
        chunk_body(csid, body)
    )


@dataclass
class _Inbound:
    """One chunk stream's message being received, and what its next headers leave out."""

    timestamp: int = 0
    delta: int = 0  # the last header's timestamp field: a type-3 header's new message adds it
    extended: bool = False  # that field was extended: every type-3 chunk repeats it
    size: int = 0
    kind: int = 0
    stream_id: int = 0
    body: bytearray | None = None


class ChunkParser:
    """Messages out of a server's chunk stream, fed as its bytes arrive (any split): control
    and commands, and a played stream's audio, video and data."""

    def __init__(self) -> None:
        self.chunk_size = 128
        self.received = 0
        self._streams: dict[int, _Inbound] = {}
        self._pending = bytearray()  # the start of a chunk not yet whole

    def feed(self, data: bytes | memoryview) -> list[tuple[int, int, int, bytes]]:
        """(type, stream id, timestamp, body) of every message ``data`` completes."""
        self.received += len(data)
        buffer = self._pending
        buffer += data
        found: list[tuple[int, int, int, bytes]] = []
        at = 0
        while (end := self._chunk(buffer, at, found)) is not None:
            at = end
        del buffer[:at]
        return found

    def _chunk(
        self, buf: bytearray, at: int, found: list[tuple[int, int, int, bytes]]
    ) -> int | None:
        """Take the chunk at ``at``, if it is all there: where the next one starts."""
        n = len(buf)
        if at >= n:
            return None
        fmt, csid, at = buf[at] >> 6, buf[at] & 0x3F, at + 1
        if csid < 2:  # a 2- or 3-byte basic header
            if at + 1 + csid > n:
                return None
            csid, at = 64 + buf[at] + (256 * buf[at + 1] if csid else 0), at + 1 + csid
        state = self._streams.get(csid) or _Inbound()
        size = (11, 7, 3, 0)[fmt]
        if at + size > n:
            return None
        header, at = bytes(buf[at : at + size]), at + size
        stamp = int.from_bytes(header[0:3], "big") if fmt <= 2 else state.delta
        extended = stamp == 0xFFFFFF if fmt <= 2 else state.extended
        if extended:  # a type-3 chunk repeats its message's extended field
            if at + 4 > n:
                return None
            if fmt <= 2:
                stamp = struct.unpack_from(">I", buf, at)[0]
            at += 4
        length = int.from_bytes(header[3:6], "big") if fmt <= 1 else state.size
        have = 0 if state.body is None or fmt <= 2 else len(state.body)
        take = min(self.chunk_size, length - have)
        if at + take > n:
            return None
        # The chunk is whole: it changes the chunk stream's state.
        self._streams[csid] = state
        if fmt <= 1:
            state.size, state.kind = length, header[6]
        if fmt == 0:
            state.stream_id = struct.unpack("<I", header[7:11])[0]
        if fmt <= 2:
            state.extended, state.delta, state.body = extended, stamp, None
            state.timestamp = stamp if fmt == 0 else (state.timestamp + stamp) & 0xFFFFFFFF
        elif state.body is None:  # a new message like the last, as far after it
            state.timestamp = (state.timestamp + state.delta) & 0xFFFFFFFF  # wraps at 49.7 days
        if state.body is None:
            state.body = bytearray()
        state.body += buf[at : at + take]
        if len(state.body) >= state.size:
            body, state.body = bytes(state.body), None
            if state.kind == _SET_CHUNK_SIZE:
                self.chunk_size = struct.unpack(">I", body[:4])[0] & 0x7FFFFFFF
            found.append((state.kind, state.stream_id, state.timestamp, body))
        return at + take


# --- clients ------------------------------------------------------------------------------------


def _split(url: str) -> tuple[str, int, bool, str, str, str]:
    """(host, port, tls, app, stream key, tcUrl) of rtmp[s]://host[:port]/app[/inst]/key."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("rtmp", "rtmps") or not parts.hostname:
        raise RtmpError("not an rtmp:// or rtmps:// URL")
    tls = parts.scheme == "rtmps"
    path = parts.path.lstrip("/")
    app, _, key = path.rpartition("/")
    if not app or not key:
        raise RtmpError("the URL has no application and stream key")
    port = parts.port or (443 if tls else 1935)
    tc_url = f"{parts.scheme}://{parts.hostname}:{port}/{app}"
    return parts.hostname, port, tls, app, key + (f"?{parts.query}" if parts.query else ""), tc_url


class _Client:
    """What a publisher and a player share: the connection (TLS for rtmps://, certificates
    verified), the handshake, ``connect`` and ``createStream``, commands and their results, and
    the server's control messages (acknowledgements, pings) answered as they come."""

    peer = "server"

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self.stream_id = 0
        self.bytes_sent = 0
        self._writer: asyncio.StreamWriter | None = None
        self._chunks = ChunkParser()
        self.read_every = 0.0  # seconds between reads (0: as bytes arrive)
        self._reading: asyncio.Task[None] | None = None
        self._results: dict[int, asyncio.Future[list[Any]]] = {}
        self._status: asyncio.Future[dict[str, Any]] | None = None
        self.closed = asyncio.Event()
        self.error = ""
        # Its TCP socket (under TLS too), for figures such as agents.node.tcpwatch.tcp_figures.
        self.socket: socket.socket | None = None
        self._key = ""

    async def _open(self, flash_ver: str) -> None:
        """Connected to the URL's application, with a stream created for the key."""
        host, port, tls, app, self._key, tc_url = _split(self.url)
        context = ssl.create_default_context() if tls else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, limit=_READ_BYTES), self.timeout
        )
        self._writer = writer
        self.socket = writer.get_extra_info("socket")
        await asyncio.wait_for(self._handshake(reader, writer), self.timeout)
        loop = asyncio.get_running_loop()
        self._reading = loop.create_task(self._read_loop(reader))
        self._status = loop.create_future()
        self._write(message(_CONTROL_CSID, _SET_CHUNK_SIZE, struct.pack(">I", CHUNK_SIZE)))
        connect = {"app": app, "type": "nonprivate", "flashVer": flash_ver, "tcUrl": tc_url}
        await self._call("connect", 1, connect)

    async def _create_stream(self, transaction: int) -> None:
        created = await self._call("createStream", transaction, None)
        self.stream_id = int(created[1]) if len(created) > 1 and created[1] else 1

    async def _status_of(self, command: str, transaction: int, *args: Any) -> dict[str, Any]:
        """Send a stream's command (publish, play) and wait for the server's first word on it."""
        body = amf0(command, transaction, None, *args)
        self._write(message(_DATA_CSID, _AMF0_COMMAND, body, self.stream_id))
        assert self._status is not None
        return await asyncio.wait_for(self._status, self.timeout)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        c1 = struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0) + os.urandom(1528)
        writer.write(b"\x03" + c1)
        s0s1 = await reader.readexactly(1 + 1536)
        if s0s1[0] != 3:
            raise RtmpError("not an RTMP server")
        await reader.readexactly(1536)  # S2: our C1 echoed (not checked, as most clients)
        writer.write(s0s1[1:])  # C2: S1 echoed

    def _command(self, name: str, transaction: int, *args: Any) -> None:
        self._write(message(_COMMAND_CSID, _AMF0_COMMAND, amf0(name, transaction, *args)))

    async def _call(self, name: str, transaction: int, *args: Any) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._results[transaction] = future
        self._command(name, transaction, *args)
        return await asyncio.wait_for(future, self.timeout)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        acknowledged, window = 0, 0
        spaced, room = -1, memoryview(b"")  # once reads are spaced: the socket, and room
        try:
            while True:
                if spaced < 0:
                    data: bytes | memoryview = await reader.read(_READ_BYTES)
                else:  # what came meanwhile waited in the kernel: one wakeup, not dozens
                    if len(data) < len(room):  # all that had come was read
                        await asyncio.sleep(self.read_every)
                    if self._writer is None or self._writer.transport.is_closing():
                        break  # its descriptor may be another connection's by now
                    try:
                        data = room[: os.readv(spaced, [room])]
                    except BlockingIOError:  # nothing came: wait again
                        data = room[:0]
                        continue
                if not data:
                    break
                for kind, _, timestamp, body in self._chunks.feed(data):
                    if kind in (AUDIO, VIDEO, DATA):
                        self._on_media(kind, timestamp, body)
                    elif kind == _WINDOW_ACK:
                        window = struct.unpack(">I", body[:4])[0]
                    elif kind == _USER_CONTROL and body[:2] == b"\x00\x06":  # ping request
                        self._write(message(_CONTROL_CSID, _USER_CONTROL, b"\x00\x07" + body[2:6]))
                    elif kind == _AMF0_COMMAND:
                        self._on_command(amf0_decode(body))
                self._on_read()
                received = self._chunks.received
                if window and received - acknowledged >= window:
                    self._write(message(_CONTROL_CSID, _ACK, struct.pack(">I", received)))
                    acknowledged = received
                if self.read_every and spaced < 0 and len(data) < _READ_BYTES:
                    spaced = self._stop_reading()  # the stream reader holds nothing more
                    room = memoryview(bytearray(_SPACED_READ_BYTES if spaced >= 0 else 0))
            self._fail(f"connection closed by the {self.peer}")
        except (OSError, ValueError, IndexError, struct.error) as error:
            self._fail(f"connection closed by the {self.peer} ({type(error).__name__})")

    def _stop_reading(self) -> int:
        """The transport stops reading: the descriptor of its socket, for reads at our own
        pace (without the transport's and stream reader's wakeups and copies); -1 over TLS,
        whose bytes only the transport can read: it goes on reading them as they come."""
        transport = self._writer.transport if self._writer is not None else None
        sock = transport.get_extra_info("socket") if transport is not None else None
        if transport is None or sock is None or transport.get_extra_info("sslcontext"):
            return -1
        cast(asyncio.ReadTransport, transport).pause_reading()
        return cast(int, sock.fileno())

    def _on_read(self) -> None:
        """What was read has been handled."""

    def _on_media(self, kind: int, timestamp: int, body: bytes) -> None:
        """Audio, video or data the server sent (a publisher gets none)."""

    def _on_command(self, values: list[Any]) -> None:
        name = values[0] if values else None
        if name in ("_result", "_error") and len(values) > 1:
            future = self._results.pop(int(values[1]), None)
            if future is not None and not future.done():
                if name == "_error":
                    info = values[3] if len(values) > 3 and isinstance(values[3], dict) else {}
                    future.set_exception(RtmpError(f"refused: {info.get('code', 'error')}"))
                else:
                    future.set_result(values[2:])
        elif name == "onStatus" and len(values) > 3 and isinstance(values[3], dict):
            if self._status is not None and not self._status.done():
                self._status.set_result(values[3])
            else:
                self._on_status(values[3])

    def _on_status(self, info: dict[str, Any]) -> None:
        """What the server says about the stream once it is published or played."""
        if info.get("level") == "error":
            self._fail(f"{self.peer} said {info.get('code')}")

    def _fail(self, reason: str) -> None:
        if not self.closed.is_set():
            self.error = reason
            self.closed.set()
            for future in [*self._results.values(), self._status]:
                if future is not None and not future.done():
                    future.set_exception(RtmpError(reason))

    def _write(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        self.bytes_sent += len(data)

    @property
    def buffered(self) -> int:
        """Bytes queued and not yet taken by the server's socket."""
        transport = self._writer.transport if self._writer else None
        return transport.get_write_buffer_size() if transport else 0

    def _goodbye(self) -> None:
        """What is said before the connection is closed cleanly."""

    def close(self) -> None:
        """End the connection: cleanly (``_goodbye``) while the server still takes what it is
        sent; a broken one, or one the server no longer reads, is dropped (nothing would
        flush to it)."""
        if self._reading is not None:
            self._reading.cancel()
        if self._writer is not None:
            if self.closed.is_set() or self.buffered > _CLEAN_END_BYTES:
                self._writer.transport.abort()
            else:
                self._goodbye()
                self._writer.close()
        self.closed.set()


class Publisher(_Client):
    """One destination's RTMP connection: ``await connect()``, then ``send`` prepared tags and
    ``flush`` them now and then (one write for several tags)."""

    peer = "destination"

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        super().__init__(url, timeout=timeout)
        # The last tag this leg placed: (its source timestamp, its time on this leg, in ms).
        self._last: tuple[int, int] | None = None
        self._pending: list[bytes] = []  # sent, not yet flushed
        self._pending_bytes = 0

    async def connect(self) -> None:
        await self._open("FMLE/3.0 (compatible; rig)")
        self._command("releaseStream", 2, None, self._key)
        self._command("FCPublish", 3, None, self._key)
        await self._create_stream(4)
        status = await self._status_of("publish", 5, self._key, "live")
        if status.get("code") != "NetStream.Publish.Start":
            raise RtmpError(f"publish refused: {status.get('code')} {status.get('description')}")
        sock = self._writer.get_extra_info("socket") if self._writer else None
        if sock is not None:
            # A bounded kernel buffer, as the ffmpeg relays have (agents.node.relay): what a
            # destination does not take stays in sight (``buffered``), not megabytes deep.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)

    @property
    def buffered(self) -> int:
        return super().buffered + self._pending_bytes

    def start_at(self, timestamp: int) -> None:
        """The source timestamp that is this leg's 0 (its first keyframe's): what was sent
        before it (metadata, sequence headers) goes out at 0."""
        self._last = (timestamp, 0)

    def send(self, tag: Tag) -> None:
        """One tag as one message, its time counted from this leg's start: each tag as far
        after the last placed one as the source says, so the leg's clock runs on where RTMP's
        32-bit clock wraps (every 49.7 days), the source's or the leg's own."""
        if self._last is None:
            self._last = (tag.timestamp, 0)
        source, placed = self._last
        delta = (tag.timestamp - source) & 0xFFFFFFFF
        if delta >= 0x80000000:  # earlier than the last placed tag
            delta -= 0x100000000
        if placed + delta < 0:  # from before this leg's start (sequence headers, metadata)
            stamp = 0
        else:
            self._last = (tag.timestamp, placed + delta)
            stamp = (placed + delta) & 0xFFFFFFFF
        head = message_header(tag.csid, stamp, len(tag.body), tag.kind, self.stream_id)
        chunks, size = tag.chunks, len(head) + tag.wire_size
        if stamp >= 0xFFFFFF and len(chunks) > 1:  # after 4.6 hours: every chunk carries it
            extended = head[-4:]
            chunks = tuple(c + extended if i % 2 else c for i, c in enumerate(chunks))
            size += 4 * (len(chunks) // 2)
        self._pending += [head, *chunks]
        self._pending_bytes += size
        self.bytes_sent += size

    @property
    def clock(self) -> tuple[int, int] | None:
        """The last tag this leg placed: its source timestamp and its time on this leg. With
        the stream id, what the bytes ``send`` makes of the next tags depend on."""
        return self._last

    def batch(self) -> tuple[bytes, tuple[int, int] | None]:
        """What ``send`` queued since the last flush, as one piece, and the clock after it:
        for ``send_batch`` to a leg whose clock and stream id were the same as this one's."""
        data = b"".join(self._pending)
        self._pending = [data]
        return data, self._last

    def send_batch(self, data: bytes, clock: tuple[int, int] | None) -> None:
        """Tags another leg's ``batch`` made: as if ``send`` had made them here."""
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.bytes_sent += len(data)
        self._last = clock

    def flush(self) -> None:
        """Write what ``send`` queued since the last flush, in one write."""
        if self._pending and self._writer is not None and not self.closed.is_set():
            self._writer.writelines(self._pending)
        self._pending, self._pending_bytes = [], 0

    def _goodbye(self) -> None:
        """Say the broadcast ends (FCUnpublish, deleteStream): the platform ends it now, as
        with ffmpeg's relays."""
        if self.stream_id:
            self.flush()
            self._command("FCUnpublish", 6, None, self._key)
            self._command("deleteStream", 7, None, self.stream_id)


class Player(_Client):
    """Plays one live stream: ``await connect()``; from then on each audio, video and metadata
    message goes to ``on_tag``, and ``on_read`` is called after each read, until ``closed``:
    ``ended`` when the publisher left (as ffmpeg's player ends), ``error`` when the connection
    broke or nothing came for ``idle`` seconds (ffmpeg's ``-rw_timeout``). Once it has played
    the stream's first two seconds (by the video's clock, from its first keyframe) it reads
    ``every`` so often what arrived meanwhile (its owner writes its legs after each read), not
    at each of the server's writes: a few wakeups a second instead of a few hundred, each one
    read straight from the socket (not over TLS: a fan-out's source is the local ingest). Not
    before: a viewer at a destination starts after its first frames (ffmpeg probes them), which
    then wait for no interval, nor do the answers to the commands that start playing."""

    peer = "source"

    def __init__(
        self,
        url: str,
        on_tag: Callable[[Tag], None],
        on_read: Callable[[], None] = lambda: None,
        *,
        every: float = 0.0,
        timeout: float = 10.0,
        idle: float = 10.0,
        label: str = "rig fan-out",
    ) -> None:
        super().__init__(url, timeout=timeout)
        self.label = label
        self.on_tag, self.on_read = on_tag, on_read
        self.every, self.idle = every, idle
        self.ended = False
        self._first_key: int | None = None  # the stream's first keyframe's timestamp
        self._watching: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        # Who plays, as nginx's statistics show it (it keeps 31 characters): this process.
        await self._open(f"{self.label} pid {os.getpid()}")
        await self._create_stream(2)
        status = await self._status_of("play", 3, self._key, -2000)
        if status.get("level") == "error":
            raise RtmpError(f"play refused: {status.get('code')} {status.get('description')}")
        self._watching = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        seen = -1
        while not self.closed.is_set():
            await asyncio.sleep(self.idle)
            if self._chunks.received == seen:
                self._fail(f"the source sent nothing for {self.idle:.0f}s")
            seen = self._chunks.received

    def _on_media(self, kind: int, timestamp: int, body: bytes) -> None:
        if kind != DATA or body.startswith((_ON_METADATA, _SET_DATA_FRAME)):  # not |RtmpSample…
            tag = Tag.of(kind, timestamp, body)
            self.on_tag(tag)
            if self.read_every or kind != VIDEO:  # video's clock only ever goes forward
                return
            if self._first_key is None:
                if tag.keyframe:
                    self._first_key = timestamp
            elif (timestamp - self._first_key) & 0xFFFFFFFF >= _SPACED_AFTER_MS:
                self.read_every = self.every

    def _on_read(self) -> None:
        self.on_read()

    def _on_status(self, info: dict[str, Any]) -> None:
        if info.get("code") in ("NetStream.Play.UnpublishNotify", "NetStream.Play.Stop"):
            self.ended = True
            self.closed.set()
        else:
            super()._on_status(info)

    def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
        super().close()


# --- FLV tags ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tag:
    """One FLV tag, with its RTMP chunks built once for every leg."""

    kind: int
    timestamp: int
    body: bytes
    csid: int  # the chunk stream its kind goes on
    chunks: tuple[bytes, ...]
    keyframe: bool = False  # a video frame a decoder can start at
    config: bool = False  # a sequence header (AVC decoder configuration, AAC config)
    wire_size: int = 0  # the bytes of its chunks
    # AVC's end of sequence: the publisher's stream ends (flagged as a key frame, but no frame)
    sequence_end: bool = False

    @staticmethod
    def of(kind: int, timestamp: int, body: bytes) -> Tag:
        if kind == DATA and body.startswith(_ON_METADATA):
            body = _SET_DATA_FRAME + body  # what a publisher sends for metadata
        csid = {AUDIO: _AUDIO_CSID, VIDEO: _VIDEO_CSID}.get(kind, _DATA_CSID)
        chunks = tuple(chunk_body(csid, body))
        avc = kind == VIDEO and len(body) > 1 and body[0] & 0x0F == 7
        sequence_end = avc and body[1] == 2
        keyframe = kind == VIDEO and len(body) > 1 and body[0] >> 4 == 1 and not sequence_end
        config = len(body) > 1 and (
            (avc and body[1] == 0) or (kind == AUDIO and body[0] >> 4 == 10 and body[1] == 0)
        )
        wire_size = sum(map(len, chunks))
        return Tag(kind, timestamp, body, csid, chunks, keyframe, config, wire_size, sequence_end)
