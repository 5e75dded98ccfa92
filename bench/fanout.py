"""Fan-out benchmark: rig's per-destination relays and its one-process fan-out against
nginx-rtmp's own `push`.

One run on this machine: a 6 Mb/s 720p30 stream (2-s GOP, pre-encoded, replayed with -c copy so
the publisher costs nearly nothing) is fanned out to N destinations on a local nginx-rtmp sink,
(a) through rig's Supervisor with ffmpeg relays (one ffmpeg -c copy per leg, RIG_RELAY_FANOUT=0),
(b) through the Supervisor as the agent runs it (legs of the stream's fan-out, agents.node.legs:
one process plays the ingest once and writes every leg) and (c) through `push`
lines in the ingest nginx. Prints CPU % of one core and memory per leg (every process the legs
cost, the ingest's extra work and the agent's CPU included), the ratios to push, and the time
until a viewer at a destination decodes its first frame, against a publisher pushing there
directly; then how soon a destination that went away is fed again once it returns, and the
goals of issue 14 as a table.

    .venv/bin/python -m bench.fanout [--legs 1 4 10] [--seconds 20] [--runs 10]
"""

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from agents.node.ingest import players
from agents.node.relay import RelaySpec
from agents.node.supervisor import Supervisor
from bench.goals import Row, record
from tests.media.harness import INGEST, Platform


def nginx(root: Path, app: str, push: list[str] | None = None) -> Platform:
    """A private nginx-rtmp: the sink of every leg (`dest`), or one that relays play from as
    they play from the ingest (with `push` lines: a bare ingest)."""
    directives = [] if app == "dest" else [*INGEST, *(f"push {url};" for url in push or [])]
    return Platform(root, app, directives).start()


def cpu_seconds(pid: int) -> float:
    """The CPU time the process has used, every thread of it (ended ones too), to the
    nanosecond: Linux's per-process CPU clock (clockid ``~pid << 3 | CPUCLOCK_SCHED``).
    /proc/<pid>/stat counts in clock ticks of 10 ms, so a share of 0.2 % of a core over a 10-s
    window (push's ten legs) was read as 0.1-0.3 %, and the ratio to push with it."""
    return time.clock_gettime((~pid << 3) | 2)


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def measure(pids: list[int], seconds: float, *, agent: bool = False) -> tuple[float, float]:
    """CPU % of one core over the window, and PSS in MiB at its end, summed over pids. With
    ``agent``, this process's CPU is counted too (a Supervisor runs in it as in the agent: a
    thread per relay, reading its reports), not its memory: its heap holds what every earlier
    run of the bench left."""
    cpu_pids = [*pids, os.getpid()] if agent else pids
    before = sum(cpu_seconds(pid) for pid in cpu_pids)
    time.sleep(seconds)
    after = sum(cpu_seconds(pid) for pid in cpu_pids)
    cpu = (after - before) / seconds * 100
    return cpu, sum(pss_kib(pid) for pid in pids) / 1024


def make_source(
    root: Path,
    *,
    size: str = "1280x720",
    rate: int = 30,
    bitrate: str = "6M",
    seconds: int = 20,
    preset: str = "veryfast",
) -> Path:
    """A pre-encoded H.264/AAC stream with a 2-s GOP, at a constant bitrate, to replay."""
    source = root / f"source-{size}-{rate}.flv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", preset, "-b:v", bitrate, "-maxrate", bitrate,
         "-bufsize", bitrate, "-g", str(2 * rate), "-keyint_min", str(2 * rate),
         "-sc_threshold", "0", "-c:a", "aac", "-b:a", "128k", str(source)],
        check=True,
    )  # fmt: skip
    return source


def publisher(source: Path, url: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(source),
         "-c", "copy", "-f", "flv", url],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def viewer(url: str) -> subprocess.Popen:
    """A viewer that decodes one video frame and exits; it may connect before the publisher."""
    return subprocess.Popen(
        ["ffmpeg", "-v", "error", "-i", url, "-map", "0:v:0", "-frames:v", "1", "-f", "null", "-"],
        stdin=subprocess.DEVNULL,
    )


def latency(kind: str, source: Path, root: Path) -> float:
    """Seconds from publisher start to a viewer's first decoded frame at the destination."""
    sink = nginx(root, "dest")
    target = f"rtmp://127.0.0.1:{sink.rtmp_port}/dest/{kind}"
    ingest = supervisor = None
    try:
        viewer_url = target
        if kind == "direct":
            publish_url = target
        elif kind == "push":
            ingest = nginx(root, "live", push=[target])
            publish_url = f"rtmp://127.0.0.1:{ingest.rtmp_port}/live/src"
        else:
            ingest = nginx(root, "live")
            publish_url = f"rtmp://127.0.0.1:{ingest.rtmp_port}/live/src"
            supervisor = Supervisor(private_ok=True, fanout=kind == "fanout")
        watching = viewer(viewer_url)
        time.sleep(1)  # connected and waiting for the stream
        started = time.monotonic()
        if supervisor is not None:
            # As the agent's publish hook does: start the relays, and wait (1 s at most) until
            # they play the name before nginx admits the publisher.
            assert ingest is not None
            supervisor.reconcile([RelaySpec("lat", publish_url, target)])
            stat, deadline = f"http://127.0.0.1:{ingest.http_port}", time.monotonic() + 1.0
            while players(stat, "src") < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
        pub = publisher(source, publish_url)

        try:
            watching.wait(30)
            return time.monotonic() - started
        finally:
            pub.terminate()
            pub.wait(5)
    finally:
        if supervisor is not None:
            supervisor.shutdown()
        if ingest is not None:
            ingest.stop()
        sink.stop()


def fanout(kind: str, legs: int, source: Path, root: Path, seconds: float) -> tuple[float, float]:
    """CPU % and PSS MiB attributable to the fan-out of `legs` destinations."""
    sink = nginx(root, "dest")
    targets = [f"rtmp://127.0.0.1:{sink.rtmp_port}/dest/{kind}{i}" for i in range(legs)]
    ingest = nginx(root, "live", push=targets if kind == "push" else [])
    source_url = f"rtmp://127.0.0.1:{ingest.rtmp_port}/live/src"
    pub = publisher(source, source_url)
    supervisor = Supervisor(private_ok=True, fanout=kind == "fanout") if kind != "push" else None
    try:
        time.sleep(2)
        if supervisor is not None:
            supervisor.reconcile(
                RelaySpec(f"leg{i}", source_url, target) for i, target in enumerate(targets)
            )
        time.sleep(4)  # every leg connected and past its first GOP
        pids = [ingest.pid]
        if supervisor is not None:
            states = supervisor.states()
            assert all(s.state == "live" for s in states), "not every leg is live"
            pids += sorted({s.pid for s in states if s.pid})
            # one ffmpeg per leg, or one fan-out process (it plays the stream itself)
            assert len(pids) == 1 + (legs if kind == "rig" else 1), "not every relay is running"
        return measure(pids, seconds, agent=True)
    finally:
        if supervisor is not None:
            supervisor.shutdown()
        pub.terminate()
        pub.wait(5)
        ingest.stop()
        sink.stop()


def comeback(source: Path, root: Path, down_s: float = 10.0) -> tuple[float, bool]:
    """A destination goes away for ``down_s`` and returns: seconds from its return until its
    leg publishes there again, and whether the stream's other legs went on untouched (the
    same connection at their destination, more bytes, no restart). Through the Supervisor
    with the agent's defaults (backoff from 1 s, a returning destination probed each second)."""
    ingest, sink, away = nginx(root, "live"), nginx(root, "dest"), nginx(root, "dest")
    source_url = f"rtmp://127.0.0.1:{ingest.rtmp_port}/live/src"
    pub = publisher(source, source_url)
    supervisor = Supervisor(private_ok=True, fanout=True)
    try:
        time.sleep(2)
        supervisor.reconcile(
            [
                RelaySpec("stay0", source_url, f"{sink.base_url}/stay0"),
                RelaySpec("stay1", source_url, f"{sink.base_url}/stay1"),
                RelaySpec("away", source_url, f"{away.base_url}/away"),
            ]
        )
        time.sleep(4)
        assert all(s.state == "live" for s in supervisor.states()), "not every leg is live"
        before = sink.publishers()
        away.stop()
        time.sleep(down_s)
        away.start()
        returned = time.monotonic()
        while "away" not in away.publishers() and time.monotonic() - returned < 30:
            time.sleep(0.05)
        back = time.monotonic() - returned
        after = sink.publishers()
        untouched = all(
            after.get(name, (0, 0))[0] == client and after[name][1] > sent
            for name, (client, sent) in before.items()
        ) and all(s.restarts == 0 for s in supervisor.states() if s.relay_id != "away")
        return back, untouched and len(before) == 2
    finally:
        supervisor.shutdown()
        pub.terminate()
        pub.wait(5)
        for server in (ingest, sink, away):
            server.stop()


LABELS = {"rig": "relays", "fanout": "fan-out", "push": "push"}


def ratio(rig: float, push: float) -> str:
    """rig/push, or n/a where push's share is too small to divide by (under 0.01 %/leg)."""
    return f"{rig / push:.1f}x" if push >= 0.01 else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legs", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=10, help="first-frame runs per kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        root = Path(tmp)
        source = make_source(root)
        base_cpu, base_mem = fanout("push", 0, source, root, args.seconds)
        print(
            f"ingest with a 6 Mb/s publisher and no legs: {base_cpu:.2f}% CPU, {base_mem:.1f} MiB"
        )
        print(
            f"{'legs':>4} | {'relays CPU%/leg':>15} {'MiB/leg':>7} | {'fan-out CPU%/leg':>16} "
            f"{'MiB/leg':>7} | {'push CPU%/leg':>13} {'MiB/leg':>7} | "
            f"{'relays/push':>11} {'fan-out/push':>12}"
        )
        last = (0, 0.0, 0.0, 0.0)  # legs, fan-out CPU and MiB per leg, push CPU: the last count
        for legs in args.legs:
            per_leg = {}
            for kind in ("rig", "fanout", "push"):
                cpu, mem = fanout(kind, legs, source, root, args.seconds)
                per_leg[kind] = ((cpu - base_cpu) / legs, (mem - base_mem) / legs)
            (rig_cpu, rig_mem), (fan_cpu, fan_mem), (push_cpu, push_mem) = per_leg.values()
            last = (legs, fan_cpu, fan_mem, push_cpu)
            print(
                f"{legs:>4} | {rig_cpu:>15.2f} {rig_mem:>7.1f} | {fan_cpu:>16.2f} "
                f"{fan_mem:>7.1f} | {push_cpu:>13.2f} {push_mem:>7.2f} | "
                f"{ratio(rig_cpu, push_cpu):>11} {ratio(fan_cpu, push_cpu):>12}"
            )
        print(
            f"first decoded frame at the destination, publisher starting at 0 ({args.runs} runs):"
        )
        times: dict[str, list[float]] = {k: [] for k in ("direct", "rig", "fanout", "push")}
        for _ in range(args.runs):  # interleaved: a slow moment of the machine hits every kind
            for kind, values in times.items():
                values.append(latency(kind, source, root))
        direct = times.pop("direct")
        print(f"  {'direct':<8} " + " ".join(f"{v:.2f}" for v in direct) + "  (baseline)")
        extras = {}
        for kind, values in times.items():
            extras[kind] = extra = [v - d for v, d in zip(values, direct, strict=True)]
            print(
                f"  {LABELS[kind]:<8} "
                + " ".join(f"{v:.2f}" for v in values)
                + f"  ({min(extra):+.2f} to {max(extra):+.2f} s over direct in the same run)"
            )
        back, untouched = comeback(source, root)
        print(
            f"a destination away for 10 s, then back: its leg publishes again {back:.2f} s after "
            f"it returns; the other legs {'untouched' if untouched else 'DISTURBED'}"
        )
        legs, fan_cpu, fan_mem, push_cpu = last
        fan_extra = extras["fanout"]
        goals: list[Row] = [
            (f"CPU per leg at {legs} legs <= 0.3 % and <= 3x push",
             f"{fan_cpu:.2f} %, {ratio(fan_cpu, push_cpu)} push",
             fan_cpu <= 0.3 and (push_cpu < 0.01 or fan_cpu <= 3 * push_cpu)),
            (f"memory per leg at {legs} legs <= 6 MiB", f"{fan_mem:.1f} MiB", fan_mem <= 6),
            (f"first frame <= direct + 0.3 s in each of {args.runs} runs",
             f"{min(fan_extra):+.2f} to {max(fan_extra):+.2f} s", max(fan_extra) <= 0.3),
            ("a dropped destination back <= 5 s, the others untouched",
             f"{back:.2f} s, others {'untouched' if untouched else 'disturbed'}",
             back <= 5 and untouched),
        ]  # fmt: skip
        record("fanout", goals)


if __name__ == "__main__":
    main()
