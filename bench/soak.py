"""Many legs on one node through the fan-out prototype (agents.node.fanout), for a while.

    .venv/bin/python -m bench.soak [--streams 50] [--legs 3] [--seconds 600]

STREAMS publishers replay a 6 Mb/s 720p30 stream (2-s GOP) into one nginx-rtmp ingest; one
fan-out process per stream writes it to LEGS destinations on a sink nginx-rtmp. Over the window
(after a 15-s warm-up) it prints the node's CPU (the ingest, the fan-outs and their ffmpegs: % of
one core, of the machine's cores) and memory (PSS), and for every leg what reached the
destination against what the publisher sent over the same window (bytes, from nginx's stat), the
tags the fan-out dropped for it and how often it connected.
"""

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench.fanout import make_source, measure, nginx, publisher, start_fanout, with_children


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
        fanouts: list[subprocess.Popen] = []
        publishers = []
        try:
            for n in range(args.streams):
                targets = [
                    f"rtmp://127.0.0.1:{sink.rtmp_port}/dest/s{n}l{leg}" for leg in range(args.legs)
                ]
                fanouts.append(start_fanout(f"{base}/s{n}", targets, stdout=subprocess.PIPE))
                publishers.append(publisher(source, f"{base}/s{n}"))
            time.sleep(15)
            sent, received = ingest.publishers(), sink.publishers()
            pids = [ingest.pid] + [pid for f in fanouts for pid in with_children(f.pid)]
            cpu, mib = measure(pids, args.seconds)
            sent_after, received_after = ingest.publishers(), sink.publishers()
        finally:
            for process in fanouts:
                process.send_signal(signal.SIGTERM)
            reports = [
                json.loads(line)
                for f in fanouts
                for line in f.communicate(timeout=30)[0].splitlines()
            ]
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
            f"tags dropped: {sum(r['dropped'] for r in reports)}, "
            f"connections beyond the first: {sum(r['connects'] - 1 for r in reports)}"
        )


if __name__ == "__main__":
    main()
