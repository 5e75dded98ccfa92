"""What a pull, a recording, a snapshot and a transcode cost the node, against one relay
measured in the same run.

A relay (ffmpeg -c copy from the ingest to a destination) is the baseline. A pull plays a
remote source and publishes it into the ingest (video copied, audio made AAC): from an RTMP
server carrying the 6 Mb/s 720p30 stream of bench.fanout, and from an RTSP camera (GStreamer's
RTSP server of the media tests, 640x360 H.264, no audio). The recorder is the agent's command
on the 6 Mb/s stream; snapshots decode a keyframe of it every 2 s, as the dashboard's preview
asks. A transcoded relay takes a 1080p60 stream to a 720p30, 3 Mb/s profile. Each runs under
rig's Supervisor, as the agent runs it. Prints CPU % of one core and PSS of the ffmpeg process,
and the ratio to the relay. The camera's own encoder is not counted (it stands for a camera).

    .venv/bin/python -m bench.costs [--seconds 10]
"""

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from agents.node.recorder import record_command
from agents.node.relay import RelaySpec
from agents.node.snapshots import Snapshots
from agents.node.supervisor import Supervisor
from bench.fanout import make_source, measure, nginx, publisher
from tests.media.harness import Camera


def record(source: str, root: Path, seconds: float) -> tuple[float, float]:
    """The agent's recorder command on the stream, measured like the others."""
    out = root / "recording.mp4"
    process = subprocess.Popen(
        record_command("ffmpeg", source, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(4)
        return measure([process.pid], seconds)
    finally:
        process.terminate()
        process.wait(10)


def snapshot_cost(rtmp_port: int, pictures: int = 5) -> float:
    """CPU % of a core while someone watches the preview (a picture every 2 s): the decoders'
    CPU time per picture, over 2 s. The 2-s cache is bypassed: each picture is decoded."""
    snapshots = Snapshots(ffmpeg="ffmpeg", rtmp_port=rtmp_port, max_age=0, timeout=15)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(pictures):
        assert snapshots.get("cam") is not None, "no picture"
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return used / pictures / 2.0 * 100


def run(spec: RelaySpec, seconds: float) -> tuple[float, float]:
    """CPU % of one core and PSS MiB of the one ffmpeg the spec runs, once it is live."""
    supervisor = Supervisor(private_ok=True)
    try:
        supervisor.reconcile([spec])
        deadline = time.monotonic() + 20
        while supervisor.states()[0].state != "live":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{spec.relay_id} never went live")
            time.sleep(0.2)
        time.sleep(2)  # past the first GOP
        pid = supervisor.states()[0].pid
        assert pid is not None
        return measure([pid], seconds)
    finally:
        supervisor.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        root = Path(tmp)
        source = make_source(root)
        server = nginx(root, "src")  # a remote RTMP server, and the destination of the relay
        ingest = nginx(root, "live")
        upstream = publisher(source, f"rtmp://127.0.0.1:{server.rtmp_port}/src/cam")
        camera = Camera(root).start()
        ingest_url = f"rtmp://127.0.0.1:{ingest.rtmp_port}/live"
        try:
            time.sleep(2)
            relay_cpu, relay_mem = run(
                RelaySpec(
                    "relay",
                    f"rtmp://127.0.0.1:{server.rtmp_port}/src/cam",
                    f"rtmp://127.0.0.1:{server.rtmp_port}/src/relayed",
                ),
                args.seconds,
            )
            print(f"{'process':<34} {'CPU % of a core':>15} {'PSS MiB':>8} {'CPU ratio':>9}")
            baseline = "relay, 6 Mb/s (baseline)"
            print(f"{baseline:<34} {relay_cpu:>15.2f} {relay_mem:>8.1f} {'1.0x':>9}")
            for name, url, key in (
                (
                    "pull from RTMP, 6 Mb/s + AAC",
                    f"rtmp://127.0.0.1:{server.rtmp_port}/src/cam",
                    "rtmp",
                ),
                ("pull from RTSP camera, 640x360", camera.url(), "rtsp"),
            ):
                spec = RelaySpec("pull", url, f"{ingest_url}/{key}", pull=True)
                cpu, mem = run(spec, args.seconds)
                print(f"{name:<34} {cpu:>15.2f} {mem:>8.1f} {cpu / relay_cpu:>8.1f}x")
            name = "recorder, 6 Mb/s to fragmented MP4"
            cpu, mem = record(f"rtmp://127.0.0.1:{server.rtmp_port}/src/cam", root, args.seconds)
            print(f"{name:<34} {cpu:>15.2f} {mem:>8.1f} {cpu / relay_cpu:>8.1f}x")
            on_ingest = publisher(source, f"{ingest_url}/cam")  # snapshots read the ingest
            try:
                time.sleep(3)
                cpu = snapshot_cost(ingest.rtmp_port)
            finally:
                on_ingest.terminate()
                on_ingest.wait(5)
            name = "snapshot every 2 s, 720p keyframe"
            print(f"{name:<34} {cpu:>15.2f} {'-':>8} {cpu / relay_cpu:>8.1f}x")
            # What a gaming streamer sends: 10 s of 1080p60 at 8 Mb/s.
            big_source = make_source(
                root, size="1920x1080", rate=60, bitrate="8M", seconds=10, preset="ultrafast"
            )
            big = publisher(big_source, f"rtmp://127.0.0.1:{server.rtmp_port}/src/big")
            try:
                time.sleep(2)
                spec = RelaySpec(
                    "transcode",
                    f"rtmp://127.0.0.1:{server.rtmp_port}/src/big",
                    f"rtmp://127.0.0.1:{server.rtmp_port}/src/small",
                    transcode=(720, 30, 3000, 128),
                )
                cpu, mem = run(spec, args.seconds)
                name = "relay transcoding 1080p60 to 720p30"
                print(f"{name:<34} {cpu:>15.2f} {mem:>8.1f} {cpu / relay_cpu:>8.1f}x")
            finally:
                big.terminate()
                big.wait(5)
        finally:
            camera.stop()
            upstream.terminate()
            upstream.wait(5)
            ingest.stop()
            server.stop()


if __name__ == "__main__":
    main()
