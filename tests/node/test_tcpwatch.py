"""The hung-destination detector, on a real TCP connection of this process."""

import os
import socket
import threading
import time

from agents.node.tcpwatch import PeerReading, socket_inodes


def test_a_peer_that_stops_reading_is_seen_within_seconds_and_one_that_reads_is_not() -> None:
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
            peer = PeerReading(lambda: socket_inodes(os.getpid()))
            worst_while_reading = 0.0
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                worst_while_reading = max(
                    worst_while_reading, peer.not_reading_for(time.monotonic())
                )
                time.sleep(0.2)
            reading.clear()  # the destination hangs: connected, reading nothing
            stopped = time.monotonic()
            while peer.not_reading_for(time.monotonic()) < 2 and time.monotonic() - stopped < 10:
                time.sleep(0.2)
            seen_after = time.monotonic() - stopped
        finally:
            done.set()
            reading.set()
            sender.close()
            receiver.close()
    assert worst_while_reading == 0.0
    assert seen_after < 6, f"a peer that stopped reading was seen only after {seen_after:.1f}s"
