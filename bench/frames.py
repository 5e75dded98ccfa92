"""Counts the video frames of live RTMP streams, from before their publisher starts until it
leaves: ``python -m bench.frames URL...`` prints ``{url: frames}`` as JSON once every stream
has ended (or at SIGTERM, what it has). Sequence headers are not frames.

It plays with rig's own player (agents.node.rtmp.Player, reading ten times a second), so it
can count many streams at 6 Mb/s from one process: the soak compares what every destination
received with what the ingest received.
"""

import asyncio
import contextlib
import json
import signal
import sys

from agents.node.rtmp import VIDEO, Player, Tag


async def _count(url: str, counts: dict[str, int]) -> None:
    def on_tag(tag: Tag) -> None:
        if tag.kind == VIDEO and not tag.config:
            counts[url] += 1

    player = Player(url, on_tag, every=0.1, idle=120, label="rig frame counter")
    try:
        await player.connect()
        await player.closed.wait()
    except Exception as error:  # counted as far as it got; the soak shows the difference
        print(f"{url}: {error}", file=sys.stderr)
    finally:
        player.close()


async def _main(urls: list[str]) -> None:
    counts = dict.fromkeys(urls, 0)
    counting = asyncio.gather(*(_count(url, counts) for url in urls))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, counting.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await counting
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1:]))
