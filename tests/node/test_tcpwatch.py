"""The hung-destination detector, on a real TCP connection of this process: fed by the node's
dump (an ffmpeg relay's sockets) or by the connection's own figures (a fan-out leg's)."""

import os
import socket
import threading
import time
from collections.abc import Callable

import pytest

from agents.node.tcpwatch import PeerReading, socket_inodes, tcp_figures


def from_dump(sender: socket.socket) -> Callable[[], float]:
    peer = PeerReading(lambda: socket_inodes(os.getpid()))
    return lambda: peer.not_reading_for(time.monotonic())


def from_own_figures(sender: socket.socket) -> Callable[[], float]:
    """As a leg's relay does with what its fan-out reports every second."""
    peer = PeerReading()
    observed = [0.0]

    def not_reading_for() -> float:
        now = time.monotonic()
        if now - observed[0] >= 1.0:
            figures = tcp_figures(sender)
            assert figures is not None
            peer.observe(now, 0, *figures)
            observed[0] = now
        return peer.not_reading_for(now)

    return not_reading_for


@pytest.mark.parametrize("source", [from_dump, from_own_figures])
def test_a_peer_that_stops_reading_is_seen_within_seconds_and_one_that_reads_is_not(
    source: Callable[[socket.socket], Callable[[], float]],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = socket.create_connection(server.getsockname())
        receiver, _ = server.accept()
        reading = threading.Event()
        reading.set()
        done = threading.Event()

        def read() -> None:
            while not done.is_set():
                reading.wait(0.1)
                if reading.is_set():
                    try:
                        receiver.recv(1 << 16)
                    except OSError:  # closed at the end
                        return

        def send() -> None:  # about 4 Mb/s, as a 720p stream; blocks once the peer is full
            chunk = b"x" * 50_000
            while not done.is_set():
                try:
                    sender.sendall(chunk)
                except OSError:
                    return
                time.sleep(0.1)

        threads = [threading.Thread(target=f, daemon=True) for f in (read, send)]
        for thread in threads:
            thread.start()
        try:
            not_reading_for = source(sender)
            worst_while_reading = 0.0
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                worst_while_reading = max(worst_while_reading, not_reading_for())
                time.sleep(0.2)
            reading.clear()  # the destination hangs: connected, reading nothing
            stopped = time.monotonic()
            while not_reading_for() < 2 and time.monotonic() - stopped < 10:
                time.sleep(0.2)
            seen_after = time.monotonic() - stopped
        finally:
            done.set()
            reading.set()
            sender.close()
            receiver.close()
    assert worst_while_reading == 0.0
    assert seen_after < 6, f"a peer that stopped reading was seen only after {seen_after:.1f}s"
