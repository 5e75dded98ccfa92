"""Many legs on one node through the agent's fan-out (agents.node.legs), for a while.

    .venv/bin/python -m bench.soak [--streams 50] [--legs 3] [--seconds 600] [--frames 5]

STREAMS publishers replay a 6 Mb/s 720p30 stream (2-s GOP) into one nginx-rtmp ingest; rig's
Supervisor, as the agent runs it, writes each stream to LEGS destinations on a sink nginx-rtmp
(one fan-out process per stream). Over the window (after a 15-s warm-up) it prints the node's
CPU (the ingest, the fan-out processes, and this process, which stands for the agent:
% of one core, of the machine's cores) and memory (PSS), and for every leg what reached the
destination against what the publisher sent over the same window (bytes, from nginx's stat),
how many legs stayed live and how often one restarted. With ``--frames N``, also the video
frames the destinations of N streams received from the publisher's start to its end against
the frames the ingest received (bench.frames: counters that play those streams and their
destinations from before the publisher starts; the ingest's part of serving them is in the
node's CPU). They cost about 1 % of a core per 6 Mb/s stream counted: counting all 200
streams of the default soak would saturate this 2-core machine, so 5 streams (their ingest and
their 15 legs) are counted by default, and every leg's bytes.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agents.node.ingest import players
from agents.node.relay import RelaySpec
from agents.node.supervisor import Supervisor
from bench.fanout import make_source, measure, nginx, publisher
from bench.goals import Row, record

COUNTED_PER_PROCESS = 50  # streams one frame counter (bench.frames) plays


def counters(urls: list[str]) -> list[subprocess.Popen]:
    """Frame counters playing ``urls``, started before any publisher."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "bench.frames", *urls[i : i + COUNTED_PER_PROCESS]],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(0, len(urls), COUNTED_PER_PROCESS)
    ]


def counted(processes: list[subprocess.Popen], timeout: float) -> dict[str, int]:
    """What the counters saw, once their streams ended (SIGTERM at ``timeout``)."""
    deadline, counts = time.monotonic() + timeout, {}
    for process in processes:
        try:
            out, _ = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.terminate()
            out, _ = process.communicate(timeout=10)
        counts.update(json.loads(out or "{}"))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--legs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument(
        "--frames", type=int, default=5, metavar="N", help="count every frame of N streams"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rig-soak-") as tmp:
        root = Path(tmp)
        source = make_source(root)
        ingest, sink = nginx(root, "live"), nginx(root, "dest")
        base = f"rtmp://127.0.0.1:{ingest.rtmp_port}/live"
        stat = f"http://127.0.0.1:{ingest.http_port}"
        streams = [f"s{n}" for n in range(args.streams)]
        dest = {s: [f"{sink.base_url}/{s}l{leg}" for leg in range(args.legs)] for s in streams}
        counted_streams = streams[: args.frames]
        counting = counters(
            [f"{base}/{s}" for s in counted_streams]
            + [url for s in counted_streams for url in dest[s]]
        )
        supervisor = Supervisor(private_ok=True, fanout=True)
        publishers = []
        try:
            for name in streams:
                specs = [
                    RelaySpec(f"{name}:{leg}", f"{base}/{name}", url)
                    for leg, url in enumerate(dest[name])
                ]
                supervisor.reconcile(specs, scope=lambda _: False)
                # As the agent's publish hook: the publisher comes once the fan-out plays (and
                # the counter), so every frame is counted on both sides.
                wanted = 2 if name in counted_streams else 1
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    with contextlib.suppress(OSError):  # a busy ingest may answer late
                        if players(stat, name, timeout=5) >= wanted:
                            break
                    time.sleep(0.02)
                publishers.append(publisher(source, f"{base}/{name}"))
            time.sleep(15)
            sent, received = ingest.publishers(), sink.publishers()
            fanouts = {s.pid for s in supervisor.states() if s.pid}
            pids = [os.getpid(), ingest.pid, *fanouts]
            cpu, mib = measure(pids, args.seconds)
            sent_after, received_after = ingest.publishers(), sink.publishers()
            states = supervisor.states()
            for process in publishers:  # the streams end: every counter reports
                process.terminate()
                process.wait(5)
            frames = counted(counting, 60)
        finally:
            supervisor.shutdown()
            for process in [*publishers, *counting]:
                process.kill()
                process.wait(5)
            ingest.stop()
            sink.stop()
        legs = args.streams * args.legs
        print(f"{args.streams} streams x {args.legs} legs = {legs} legs, {args.seconds:.0f} s")
        print(
            f"node: {cpu:.1f} % of one core ({cpu / (os.cpu_count() or 1):.1f} % of the machine), "
            f"{mib:.0f} MiB PSS; per leg {cpu / legs:.2f} % and {mib / legs:.1f} MiB"
        )
        ratios = []
        for name, (_, after) in received_after.items():
            stream = name.split("l")[0]
            pushed = sent_after[stream][1] - sent[stream][1]
            ratios.append((after - received.get(name, (0, 0))[1]) / pushed)
        print(
            f"legs receiving: {len(ratios)} of {legs}; bytes at a destination / bytes published "
            f"over the window: min {min(ratios):.3f}, max {max(ratios):.3f}"
        )
        if counted_streams:
            published = {s: frames.get(f"{base}/{s}", 0) for s in counted_streams}
            missing = [published[s] - frames.get(u, 0) for s in counted_streams for u in dest[s]]
            print(
                f"video frames, publish to end, {len(counted_streams)} streams counted: "
                f"{min(published.values())}-{max(published.values())} per stream at the "
                f"ingest; legs with every one of them: {sum(m == 0 for m in missing)} of "
                f"{len(missing)} (most missing: {max(missing)})"
            )
        live, restarts = sum(s.state == "live" for s in states), sum(s.restarts for s in states)
        print(
            f"legs live at the end: {live} of {legs}; "
            f"restarts: {restarts}; fan-out processes: {len(fanouts)}"
        )
        window = f"{legs} legs, {args.seconds / 60:.0f} min"
        goals: list[Row] = [
            (f"{window}: node CPU and memory (printed)",
             f"{cpu:.0f} % of a core, {mib:.0f} MiB PSS", None),
            (f"{window}: every leg receives what was published",
             f"bytes {min(ratios):.3f}-{max(ratios):.3f} of it, {len(ratios)} legs",
             len(ratios) == legs and min(ratios) >= 0.99),
            (f"{window}: no relay restarts, every leg live",
             f"{restarts} restarts, {live} of {legs} live", restarts == 0 and live == legs),
        ]  # fmt: skip
        if counted_streams:
            complete = sum(m == 0 for m in missing)
            goals.append(
                (f"{window}: every frame at each counted leg",
                 f"{complete} of {len(missing)} legs, max missing {max(missing)}",
                 complete == len(missing))
            )  # fmt: skip
        record("soak", goals)


if __name__ == "__main__":
    main()
