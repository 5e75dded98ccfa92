"""One stream read once and written to many destinations from one process: rig's relays for
RTMP(S) destinations (issue 14; `make bench` measures it beside ffmpeg relays and nginx's push).

It plays the ingest's local stream itself (agents.node.rtmp.Player: no reader process, so a
spare process is ready to play the moment a publisher arrives); each tag is prepared once
(agents.node.rtmp.Tag: its RTMP chunks); every BATCH_S the process reads what the source sent
meanwhile and writes it to each leg in one write, built once for all the legs in step (those
that started in the same GOP and keep up: the same bytes, timestamps included). A leg that
connects mid-stream starts at the last keyframe (metadata, sequence headers, then the tags
since that keyframe), so its viewers decode at once; a leg whose destination stops reading
has its tags dropped until it has room again and the next keyframe comes, so it never holds
the others back. A muted leg gets no audio.

Run by the agent (agents.node.legs), one process per publish session, its source and legs given
on stdin as JSON lines (``{"source": url}`` first, then ``{"add": id, "url": ..., "mute": false}``
and ``{"remove": id}``), so no destination's key shows on a command line; it reports on
stdout (``{"leg": id, "connected": true}``, ``{"leg": id, "bytes": n, "frames": n, "timeUs": n,
"tcp": [acked, window, queued]}`` every second (its socket's figures, which tell the agent
whether the destination still reads: agents.node.tcpwatch), ``{"leg": id, "end": why}`` when its
connection ends: the agent's relay decides whether and when to try again). It exits when the
source ends (0), or with 1 and why on stderr when it cannot be played or its connection breaks.
By hand, legs on the command line reconnect by themselves a second after they break:

    python -m agents.node.fanout rtmp://127.0.0.1:1935/live/KEY rtmp://a/app/k1 rtmps://b/app/k2
    python -m agents.node.fanout --control  # then {"source": ...} and legs on stdin

Standard library only: it runs on nodes that have no Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.node.rtmp import AUDIO, DATA, VIDEO, Player, Publisher, Tag
from agents.node.tcpwatch import tcp_figures

# What a leg may have waiting in its socket's buffer before its tags are dropped (4 MiB: five
# seconds of a 6 Mb/s stream).
MAX_BUFFERED = 4 * 1024 * 1024
RECONNECT_S = 1.0
# The source is read this often, and what came is written to each leg in one write: about 23
# tags a write instead of one (a 30 fps video and 48 kHz AAC make about 77 tags a second), for
# at most this much delay (a platform's own latency is seconds; SRS merges a player's writes
# over 350 ms by default; the stream's first two seconds are read as they come:
# agents.node.rtmp.Player). `make bench`, 10 legs, on 2026-12-01: reading and writing as each
# of nginx's writes arrived cost 0.55-0.59 % of a core per leg, every 100 ms 0.23-0.27 %; on
# 2026-12-02 (another machine) the process spent 1.13 % of a core for its 10 legs every 100 ms
# and 0.75-0.85 % every 200 ms; on 2026-12-03 0.64-0.68 % every 200 ms, 0.49-0.52 every 300.
BATCH_S = 0.3


# How often a controlled leg's figures go to the agent. Each report wakes the agent's thread
# of the process and each leg's relay thread, and a wakeup costs 0.1-0.25 ms of CPU on these
# VMs: every 0.5 s (ffmpeg relays' -stats_period) the agent spent 0.20 % of a core for 10 legs.
REPORT_S = 1.0

Report = Callable[..., None]  # events (dicts), written together


@dataclass
class Leg:
    url: str = field(repr=False)  # it holds the destination's key
    mute: bool = False
    reconnect: bool = True  # by itself (by hand); under the agent, its relay decides
    publisher: Publisher | None = None
    live: bool = False
    waiting_for_key: bool = True
    dropped: int = 0
    connects: int = 0
    frames: int = 0  # video frames handed to the connection
    last_video: int = 0  # the source timestamp (ms) of the last of them
    last_error: str = ""
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Fanout:
    def __init__(self, source_url: str, *, report: Report | None = None):
        self.source_url = source_url
        self.report = report
        self.legs: dict[str, Leg] = {}
        self._metadata: Tag | None = None
        self._configs: dict[int, Tag] = {}  # by kind: the latest sequence header
        self._gop: list[Tag] = []  # since the last keyframe
        self._read: list[Tag] = []  # by the last read of the source, for every leg

    def add(self, leg_id: str, url: str, *, mute: bool = False, reconnect: bool = True) -> None:
        self.remove(leg_id)
        leg = Leg(url, mute=mute, reconnect=reconnect)
        self.legs[leg_id] = leg
        leg.task = asyncio.get_running_loop().create_task(self._keep_connected(leg_id, leg))

    def remove(self, leg_id: str) -> None:
        leg = self.legs.pop(leg_id, None)
        if leg is not None and leg.task is not None:
            leg.task.cancel()
            if leg.publisher is not None:
                leg.publisher.close()

    async def _keep_connected(self, leg_id: str, leg: Leg) -> None:
        while True:
            publisher = Publisher(leg.url)
            leg.connects += 1
            try:
                await publisher.connect()
            # TimeoutError and ssl's errors are OSErrors; a server that hangs up mid-handshake
            # ends the read early (EOFError); a server's odd answer may be a ValueError
            except Exception as error:
                publisher.close()
                leg.last_error = _reason(error)
            except BaseException:  # removed while connecting: no half-open connection stays
                publisher.close()
                raise
            else:
                leg.publisher = publisher
                if self.report is not None:
                    self.report({"leg": leg_id, "connected": True})
                self._start(leg)
                await publisher.closed.wait()
                leg.live, leg.publisher, leg.last_error = False, None, publisher.error
                publisher.close()
            if not leg.reconnect:
                if self.report is not None:
                    self.report({"leg": leg_id, "end": leg.last_error or "connection closed"})
                self.legs.pop(leg_id, None)
                return
            await asyncio.sleep(RECONNECT_S)

    def _start(self, leg: Leg) -> None:
        """A new leg: metadata and sequence headers, then what came since the last keyframe."""
        assert leg.publisher is not None
        if self._gop:
            leg.publisher.start_at(self._gop[0].timestamp)
        leg.live = True
        leg.waiting_for_key = not self._gop  # before the stream's first keyframe: wait for it
        for tag in [
            *([self._metadata] if self._metadata else []),
            *self._configs.values(),
            *self._gop,
        ]:
            self._send(leg, tag)
        leg.publisher.flush()

    def _send(self, leg: Leg, tag: Tag) -> None:
        if tag.kind == AUDIO and leg.mute:
            return
        assert leg.publisher is not None
        leg.publisher.send(tag)
        if tag.kind == VIDEO and not (tag.config or tag.sequence_end):
            leg.frames += 1
            leg.last_video = tag.timestamp

    def _dispatch(self, tag: Tag) -> None:
        """A tag the source sent: kept for legs that start later, and queued for this read's
        writes (``_flush``)."""
        if tag.kind == DATA:
            self._metadata = tag
        elif tag.config:
            self._configs[tag.kind] = tag
        elif tag.keyframe:
            self._gop = [tag]
        elif tag.sequence_end:  # the publisher's stream ended: a leg joining now gets no frame
            self._gop = []
        elif self._gop and tag.kind in (AUDIO, VIDEO):
            self._gop.append(tag)
        self._read.append(tag)

    def _flush(self) -> None:
        """What the last read of the source brought, to every leg in one write each. Legs in
        step (the same last tag placed at the same time of their own clock, on the same stream
        id, muted alike: legs that started in the same GOP and kept up) are sent the same
        bytes, built and joined once; a leg catching up or falling behind goes tag by tag."""
        tags, self._read = self._read, []
        size = sum(tag.wire_size for tag in tags)
        built: dict[tuple[Any, ...], tuple[bytes, tuple[int, int] | None, int, int]] = {}
        for leg in self.legs.values():
            publisher = leg.publisher
            if publisher is None or not leg.live:
                continue
            if leg.waiting_for_key or publisher.buffered + size > MAX_BUFFERED:
                for tag in tags:
                    self._offer(leg, tag)
            elif tags:
                step = (publisher.clock, publisher.stream_id, leg.mute)
                if (batch := built.get(step)) is None:
                    frames = leg.frames
                    for tag in tags:
                        self._send(leg, tag)
                    data, clock = publisher.batch()
                    built[step] = (data, clock, leg.frames - frames, leg.last_video)
                else:
                    data, clock, frames, last_video = batch
                    publisher.send_batch(data, clock)
                    if frames:
                        leg.frames, leg.last_video = leg.frames + frames, last_video
            publisher.flush()

    def _offer(self, leg: Leg, tag: Tag) -> None:
        """One tag to a leg that may have to drop it: one whose destination took too little of
        what it was sent, until it has room again and a keyframe comes."""
        assert leg.publisher is not None
        if tag.kind == DATA or tag.config:  # small, and what every frame after needs
            self._send(leg, tag)
            return
        if leg.publisher.buffered > MAX_BUFFERED:
            leg.waiting_for_key = True
        if leg.waiting_for_key:
            if not (tag.keyframe and leg.publisher.buffered <= MAX_BUFFERED // 2):
                leg.dropped += 1
                return
            leg.waiting_for_key = False
        self._send(leg, tag)

    async def _report_loop(self, report: Report) -> None:
        """Each connected leg's figures: bytes the destination's socket took, the video frames
        (and the last one's time) handed to it, and its socket's TCP figures."""
        while True:
            await asyncio.sleep(REPORT_S)
            report(
                {},  # alive, even with no leg connected: the agent kills a wedged process
                *(
                    {"leg": leg_id, "bytes": publisher.bytes_sent - publisher.buffered,
                     "frames": leg.frames, "timeUs": leg.last_video * 1000,
                     "tcp": tcp_figures(publisher.socket) if publisher.socket else None}
                    for leg_id, leg in self.legs.items()
                    if (publisher := leg.publisher) is not None
                ),
            )  # fmt: skip

    async def run(self) -> int:
        """Play the source until it ends (the publisher left): 0; 1 when it could not be
        played or its connection broke (why, on stderr)."""
        player = Player(self.source_url, self._dispatch, self._flush, every=BATCH_S)
        loop = asyncio.get_running_loop()
        helpers = []
        if self.report is not None:
            helpers.append(loop.create_task(self._report_loop(self.report)))
        try:
            await player.connect()
            await player.closed.wait()
        except Exception as error:  # could not play it (refused, unreachable, timed out)
            player.error = _reason(error)
        finally:
            for helper in helpers:
                helper.cancel()
            player.close()
        if player.ended:
            return 0
        print(player.error, file=sys.stderr, flush=True)
        return 1

    def close(self) -> None:
        for leg_id in list(self.legs):
            self.remove(leg_id)


async def _orders(fanout: Fanout, reader: asyncio.StreamReader) -> None:
    """The agent's orders, one JSON object a line on stdin, until it closes stdin."""
    while line := await reader.readline():
        try:
            order = json.loads(line)
            if "add" in order:
                url, mute = str(order["url"]), bool(order.get("mute"))
                fanout.add(str(order["add"]), url, mute=mute, reconnect=False)
            elif "remove" in order:
                fanout.remove(str(order["remove"]))
        except (ValueError, TypeError, KeyError):  # not echoed: an order may hold a key
            print("fan-out: a malformed order was ignored", file=sys.stderr, flush=True)


def _reason(error: BaseException) -> str:
    """What went wrong, as ffmpeg would say it ("Connection refused", not Python's wording)."""
    plain = not isinstance(error, (ssl.SSLError, socket.gaierror, TimeoutError))
    if isinstance(error, OSError) and error.errno and plain:  # not asyncio's "Connect call..."
        return os.strerror(error.errno)
    return str(error) or type(error).__name__


def _print(*events: dict[str, Any]) -> None:
    """Events for the agent, a JSON object a line, in one write."""
    sys.stdout.write("".join(json.dumps(event) + "\n" for event in events))
    sys.stdout.flush()


async def _serve(fanout: Fanout, orders: asyncio.StreamReader | None = None) -> int:
    """Run until the source ends, a signal, or (with ``orders``) the agent closes stdin."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    running = loop.create_task(fanout.run())
    waits: list[asyncio.Task[Any]] = [running, loop.create_task(stopping.wait())]
    if orders is not None:  # the agent closing stdin (it stopped or died) ends the process too
        waits.append(loop.create_task(_orders(fanout, orders)))
    await asyncio.wait(waits, return_when="FIRST_COMPLETED")
    if orders is None:
        for leg_id, leg in fanout.legs.items():  # what became of each leg
            print(json.dumps({"leg": leg_id, "connects": leg.connects, "dropped": leg.dropped}))
    fanout.close()
    if running.done():
        return running.result()
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    return 0


async def _controlled() -> int:
    """Under the agent: started ahead of need, it waits for its source (``{"source": url}``,
    the first line on stdin), so a new session costs no Python start-up; legs follow."""
    reader = asyncio.StreamReader(limit=1 << 16)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    first = await reader.readline()
    if not first:
        return 0
    return await _serve(Fanout(json.loads(first)["source"], report=_print), reader)


async def _by_hand(source: str, targets: list[str]) -> int:
    fanout = Fanout(source)
    for n, url in enumerate(targets):
        fanout.add(str(n), url)
    return await _serve(fanout)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--control"]:
        return asyncio.run(_controlled())
    return asyncio.run(_by_hand(argv[0], argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
