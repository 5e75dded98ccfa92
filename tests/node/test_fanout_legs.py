"""The fan-out's legs without media: a leg removed mid-handshake, orders to a wedged process."""

import asyncio
import os
import signal
import socket
import threading

from agents.node.fanout import Fanout
from agents.node.legs import FanoutProcesses, LegAttempt
from agents.node.relay import RelaySpec


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
