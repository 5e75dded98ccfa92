"""`make up`'s processes come back when they crash, and stop when told (deploy/keepalive.py)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT
from tests.media.harness import alive, wait_until

KEEPALIVE = str(ROOT / "deploy" / "keepalive.py")


def test_a_crashed_process_is_started_again(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    crash = f"open({str(runs)!r}, 'a').write('x'); raise SystemExit(3)"
    keeper = subprocess.Popen(
        [sys.executable, KEEPALIVE, sys.executable, "-c", crash], stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: runs.exists() and len(runs.read_text()) >= 2, 10)
        assert keeper.poll() is None  # honcho would see nothing exit
    finally:
        keeper.send_signal(signal.SIGTERM)
        assert keeper.wait(5) == 0
    assert keeper.stderr is not None
    assert b"exited with 3; starting it again in 1 s" in keeper.stderr.read()


def test_a_stop_reaches_the_process_and_is_not_undone(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    sleeper = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    keeper = subprocess.Popen([sys.executable, KEEPALIVE, sys.executable, "-c", sleeper])
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 10)
    child = int(pid_file.read_text())
    keeper.send_signal(signal.SIGINT)  # Ctrl-C
    assert keeper.wait(5) == 0
    time.sleep(0.3)
    assert not alive(child)
