"""Many legs on one node through the agent's fan-out (agents.node.legs), for a while.

    .venv/bin/python -m bench.soak [--streams 50] [--legs 3] [--seconds 600]

STREAMS publishers replay a 6 Mb/s 720p30 stream (2-s GOP) into one nginx-rtmp ingest; rig's
Supervisor, as the agent runs it, writes each stream to LEGS destinations on a sink nginx-rtmp
(one fan-out process per stream). Over the window (after a 15-s warm-up) it prints the node's
CPU (the ingest, the fan-outs and their ffmpegs, and this process, which stands for the agent:
% of one core, of the machine's cores) and memory (PSS), and for every leg what reached the
destination against what the publisher sent over the same window (bytes, from nginx's stat),
how many legs stayed live and how often one restarted.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from agents.node.relay import RelaySpec
from agents.node.supervisor import Supervisor
from bench.fanout import make_source, measure, nginx, publisher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--legs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rig-soak-") as tmp:
        root = Path(tmp)
        source = make_source(root)
        ingest, sink = nginx(root, "live"), nginx(root, "dest")
        base = f"rtmp://127.0.0.1:{ingest.rtmp_port}/live"
        supervisor = Supervisor(private_ok=True, fanout=True)
        publishers = []
        try:
            for n in range(args.streams):
                supervisor.reconcile(
                    [
                        RelaySpec(f"s{n}:{leg}", f"{base}/s{n}", f"{sink.base_url}/s{n}l{leg}")
                        for leg in range(args.legs)
                    ],
                    scope=lambda _: False,
                )
                publishers.append(publisher(source, f"{base}/s{n}"))
            time.sleep(15)
            sent, received = ingest.publishers(), sink.publishers()
            fanouts = {s.pid for s in supervisor.states() if s.pid}
            pids = [os.getpid(), ingest.pid, *fanouts]
            cpu, mib = measure(pids, args.seconds)
            sent_after, received_after = ingest.publishers(), sink.publishers()
            states = supervisor.states()
        finally:
            supervisor.shutdown()
            for process in publishers:
                process.terminate()
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
        print(
            f"legs live at the end: {sum(s.state == 'live' for s in states)} of {legs}; "
            f"restarts: {sum(s.restarts for s in states)}; fan-out processes: {len(fanouts)}"
        )


if __name__ == "__main__":
    main()
