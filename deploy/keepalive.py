"""Run a command and start it again whenever it exits, until told to stop.

`make up` runs rig under honcho, which stops every process as soon as one exits: an agent,
nginx or worker crash would take the whole stack and every relay down. Each Procfile entry runs
through this instead, as systemd's ``Restart=always`` does in production: a crashed process is
back after a short backoff (1 s, doubling to 10 s; reset once it has run for 30 s), and SIGTERM
or SIGINT (honcho's stop, Ctrl-C) is passed on to the command, which then is not restarted.

Usage: python deploy/keepalive.py COMMAND [ARG ...]
"""

import signal
import subprocess
import sys
import time
from types import FrameType

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 10.0
HEALTHY_AFTER_S = 30.0


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff = BACKOFF_FIRST_S
    while True:
        started = time.monotonic()
        child = subprocess.Popen(argv)
        code = child.wait()
        if stopping:
            return 0
        if time.monotonic() - started >= HEALTHY_AFTER_S:
            backoff = BACKOFF_FIRST_S
        print(
            f"keepalive: {argv[0]} exited with {code}; starting it again in {backoff:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        deadline = time.monotonic() + backoff
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if stopping:
            return 0
        backoff = min(backoff * 2, BACKOFF_MAX_S)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
