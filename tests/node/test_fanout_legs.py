"""The fan-out's legs without media: a leg removed mid-handshake, orders to a wedged process,
legs in step sharing their bytes."""

import asyncio
import os
import signal
import socket
import threading

from agents.node.fanout import Fanout, Leg
from agents.node.legs import FanoutProcesses, LegAttempt
from agents.node.relay import RelaySpec
from agents.node.rtmp import AUDIO, VIDEO, ChunkParser, Publisher, Tag


def test_a_leg_removed_while_it_connects_leaves_no_connection_behind() -> None:
    """A restart, a mute or a changed destination can come while a leg is still in its
    handshake: the half-open connection is closed, not left holding the destination's key."""

    async def scenario() -> bool:
        accepted: list[asyncio.StreamReader] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(reader)  # takes the connection, never answers the handshake

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        fanout = Fanout("rtmp://127.0.0.1:1/live/unused")
        fanout.add("leg", f"rtmp://127.0.0.1:{port}/app/key", reconnect=False)
        for _ in range(100):
            if accepted:
                break
            await asyncio.sleep(0.01)
        fanout.remove("leg")
        reader = accepted[0]
        try:
            await asyncio.wait_for(reader.read(), 2)  # C0+C1, then the end of the connection
            while await asyncio.wait_for(reader.read(65536), 2):
                pass
            closed = True
        except TimeoutError:
            closed = False
        server.close()
        return closed

    assert asyncio.run(scenario()), "the removed leg's connection stayed open"


def test_orders_to_a_wedged_process_never_block_the_caller() -> None:
    """The agent's threads order legs in and out while holding locks (the registry's, a
    relay's). A fan-out process that stopped reading its stdin (SIGSTOP) must not block them
    once the pipe is full; the orders wait for it."""
    processes = FanoutProcesses(silent_s=60)  # no silence kill within the test
    with socket.create_server(("127.0.0.1", 0)) as silent:  # a source that never answers
        source = f"rtmp://127.0.0.1:{silent.getsockname()[1]}/live/src"
        target = "rtmp://127.0.0.1:1/app/" + "k" * 200

        def legs(count: int) -> None:
            for n in range(count):
                LegAttempt(processes, RelaySpec(f"s:{n}", source, target), ()).stop(0)

        first = LegAttempt(processes, RelaySpec("s:first", source, target), ())
        pid = first.pid  # the stream's process: it stays while a leg is in it
        os.kill(pid, signal.SIGSTOP)
        try:
            ordering = threading.Thread(target=legs, args=(1000,))  # 2,000 orders, ~0.5 MB
            ordering.start()
            ordering.join(10)
            assert not ordering.is_alive(), "a caller blocked on the stopped process's stdin"
        finally:
            os.kill(pid, signal.SIGCONT)
            processes.shutdown(5)


def test_legs_in_step_share_their_bytes_and_each_keeps_its_own_clock() -> None:
    """Legs that started in the same GOP are written the same bytes (built once); a leg that
    started at a later keyframe, or a muted one, gets its own: every destination's timeline
    starts at 0 at its first keyframe, and a muted one has no audio. Once the publisher ends
    its stream (AVC end of sequence), a leg that joins gets no frame of the old GOP."""

    async def scenario() -> dict[str, bytes]:
        fanout = Fanout("rtmp://127.0.0.1:1/live/unused")
        ends: dict[str, socket.socket] = {}

        async def start(leg_id: str, *, mute: bool = False) -> None:
            ours, theirs = socket.socketpair()
            _, writer = await asyncio.open_connection(sock=ours)
            leg = Leg(f"rtmp://example.com/app/{leg_id}", mute=mute)
            leg.publisher = Publisher(leg.url)
            leg.publisher._writer, leg.publisher.stream_id = writer, 1
            fanout.legs[leg_id], ends[leg_id] = leg, theirs
            fanout._start(leg)

        def read(*tags: Tag) -> None:  # one read of the source: its tags, then the writes
            for tag in tags:
                fanout._dispatch(tag)
            fanout._flush()

        read(Tag.of(VIDEO, 1000, b"\x17\x00cfg"), Tag.of(AUDIO, 1000, b"\xaf\x00cfg"))
        read(Tag.of(VIDEO, 1000, b"\x17\x01key1"), Tag.of(AUDIO, 1010, b"\xaf\x01a"))
        await start("a")
        read(Tag.of(VIDEO, 1033, b"\x27\x01p"), Tag.of(AUDIO, 1031, b"\xaf\x01a"))
        await start("b")  # the same GOP: it catches up at once and is in step with a
        await start("muted", mute=True)
        read(Tag.of(VIDEO, 1066, b"\x27\x01p"), Tag.of(AUDIO, 1052, b"\xaf\x01a"))
        read(Tag.of(VIDEO, 3000, b"\x17\x01key2"))
        await start("late")  # from the second keyframe on
        read(Tag.of(AUDIO, 3010, b"\xaf\x01a"), Tag.of(VIDEO, 3033, b"\x27\x01p"))
        read(Tag.of(VIDEO, 3066, b"\x17\x02\x00\x00\x00"))  # end of sequence
        await start("after")  # sequence headers, then nothing until a keyframe
        for leg in fanout.legs.values():
            assert leg.publisher is not None and leg.publisher._writer is not None
            leg.publisher._writer.close()
        await asyncio.sleep(0.05)
        received = {}
        for leg_id, end in ends.items():
            chunks = []
            while data := end.recv(65536):
                chunks.append(data)
            received[leg_id] = b"".join(chunks)
            end.close()
        return received

    received = asyncio.run(scenario())
    timelines = {
        leg_id: [(kind, stamp) for kind, _, stamp, _ in ChunkParser().feed(data)]
        for leg_id, data in received.items()
    }
    assert received["a"] == received["b"]
    v, a = VIDEO, AUDIO
    assert timelines["a"] == [
        (v, 0), (a, 0), (v, 0), (a, 10), (v, 33), (a, 31), (v, 66), (a, 52), (v, 2000),
        (a, 2010), (v, 2033), (v, 2066),
    ]  # fmt: skip
    assert timelines["muted"] == [(v, 0), (v, 0), (v, 33), (v, 66), (v, 2000), (v, 2033), (v, 2066)]
    assert timelines["late"] == [(v, 0), (a, 0), (v, 0), (a, 10), (v, 33), (v, 66)]
    assert timelines["after"] == [(v, 0), (a, 0)]
