"""One stream demuxed once and written to many destinations from one process (a prototype of
issue 14's fan-out; `make bench` measures it beside rig's relays and nginx-rtmp's `push`).

``ffmpeg -c copy`` plays the ingest's local stream once and writes FLV to a pipe; each tag is
prepared once (agents.node.rtmp.Tag: its RTMP chunks) and queued for every leg, whose queue goes
out in one write every FLUSH_S. A
leg that connects mid-stream starts at the last keyframe (metadata, sequence headers, then the
tags since that keyframe), so its viewers decode at once; a leg whose destination stops reading
has its tags dropped until it has room again and the next keyframe comes, so it never holds the
others back; a leg whose connection breaks connects again, a second later.

    python -m agents.node.fanout rtmp://127.0.0.1:1935/live/KEY rtmp://a/app/k1 rtmps://b/app/k2

Standard library only: it runs on nodes that have no Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from dataclasses import dataclass, field

from agents.node.rtmp import AUDIO, DATA, VIDEO, Publisher, RtmpError, Tag, flv_tags

# What a leg may have waiting in its socket's buffer before its tags are dropped (4 MiB: five
# seconds of a 6 Mb/s stream).
MAX_BUFFERED = 4 * 1024 * 1024
RECONNECT_S = 1.0
# Tags go out to each leg in one write this often: about 8 tags a write instead of one (a
# 30 fps video and 48 kHz AAC make about 77 tags a second), for at most this much delay (a
# platform's own latency is seconds). `make bench`, 10 legs: 0.37 % of a core per leg writing
# each tag at once, 0.28 % every 40 ms, 0.23 % every 100 ms.
FLUSH_S = 0.1


@dataclass
class Leg:
    url: str
    publisher: Publisher | None = None
    live: bool = False
    waiting_for_key: bool = True
    dropped: int = 0
    connects: int = 0
    last_error: str = ""
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Fanout:
    def __init__(self, source_url: str, *, ffmpeg: str = "ffmpeg") -> None:
        self.source_url = source_url
        self.ffmpeg = ffmpeg
        self.legs: dict[str, Leg] = {}
        self._metadata: Tag | None = None
        self._configs: dict[int, Tag] = {}  # by kind: the latest sequence header
        self._gop: list[Tag] = []  # since the last keyframe
        self.source: asyncio.subprocess.Process | None = None

    def add(self, leg_id: str, url: str) -> None:
        leg = Leg(url)
        self.legs[leg_id] = leg
        leg.task = asyncio.get_running_loop().create_task(self._keep_connected(leg))

    def remove(self, leg_id: str) -> None:
        leg = self.legs.pop(leg_id, None)
        if leg is not None and leg.task is not None:
            leg.task.cancel()
            if leg.publisher is not None:
                leg.publisher.close()

    async def _keep_connected(self, leg: Leg) -> None:
        while True:
            publisher = Publisher(leg.url)
            leg.connects += 1
            try:
                await publisher.connect()
            # TimeoutError and ssl's errors are OSErrors; a server that hangs up mid-handshake
            # ends the read early (EOFError)
            except (OSError, EOFError, RtmpError) as error:
                leg.last_error = str(error) or type(error).__name__
                publisher.close()
                await asyncio.sleep(RECONNECT_S)
                continue
            leg.publisher = publisher
            self._start(leg)
            await publisher.closed.wait()
            leg.live, leg.publisher, leg.last_error = False, None, publisher.error
            publisher.close()
            await asyncio.sleep(RECONNECT_S)

    def _start(self, leg: Leg) -> None:
        """A new leg: metadata and sequence headers, then what came since the last keyframe."""
        assert leg.publisher is not None
        if self._gop:
            leg.publisher.start_at(self._gop[0].timestamp)
        for tag in [
            *([self._metadata] if self._metadata else []),
            *self._configs.values(),
            *self._gop,
        ]:
            leg.publisher.send(tag)
        leg.live = True
        leg.waiting_for_key = not self._gop  # before the stream's first keyframe: wait for it

    def _dispatch(self, tag: Tag) -> None:
        if tag.kind == DATA:
            self._metadata = tag
        elif tag.config:
            self._configs[tag.kind] = tag
        elif tag.keyframe:
            self._gop = [tag]
        elif self._gop and tag.kind in (AUDIO, VIDEO):
            self._gop.append(tag)
        for leg in self.legs.values():
            publisher = leg.publisher
            if publisher is None or not leg.live:
                continue
            if tag.kind == DATA or tag.config:  # small, and what every frame after needs
                publisher.send(tag)
                continue
            if publisher.buffered > MAX_BUFFERED:
                leg.waiting_for_key = True
            if leg.waiting_for_key:
                if not (tag.keyframe and publisher.buffered <= MAX_BUFFERED // 2):
                    leg.dropped += 1
                    continue
                leg.waiting_for_key = False
            publisher.send(tag)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            for leg in self.legs.values():
                if leg.publisher is not None:
                    leg.publisher.flush()

    async def run(self) -> None:
        """Read the source until it ends (the publisher left)."""
        self.source = await asyncio.create_subprocess_exec(
            self.ffmpeg, "-v", "error", "-nostdin", "-analyzeduration", "500000",
            "-i", self.source_url, "-c", "copy", "-f", "flv", "-flvflags", "no_duration_filesize",
            "pipe:1",
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )  # fmt: skip
        assert self.source.stdout is not None
        flushing = asyncio.get_running_loop().create_task(self._flush_loop())
        try:
            async for tag in flv_tags(self.source.stdout):
                self._dispatch(tag)
        finally:
            flushing.cancel()
            with contextlib.suppress(ProcessLookupError):
                self.source.kill()
            await self.source.wait()

    def close(self) -> None:
        for leg_id in list(self.legs):
            self.remove(leg_id)


async def _main(source: str, targets: list[str]) -> None:
    fanout = Fanout(source)
    for n, url in enumerate(targets):
        fanout.add(str(n), url)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    running = loop.create_task(fanout.run())
    await asyncio.wait([running, loop.create_task(stopping.wait())], return_when="FIRST_COMPLETED")
    for leg_id, leg in fanout.legs.items():  # what became of each leg, for bench/soak.py
        print(json.dumps({"leg": leg_id, "connects": leg.connects, "dropped": leg.dropped}))
    fanout.close()
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2:]))
