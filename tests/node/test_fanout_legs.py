"""The fan-out's legs without media: what happens to a leg's connection when it is removed."""

import asyncio

from agents.node.fanout import Fanout


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
