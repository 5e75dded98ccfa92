"""Pulled-source benchmark: what one pull costs the node, against one relay measured in the
same run.

A relay (ffmpeg -c copy from the ingest to a destination) is the baseline. A pull plays a
remote source and publishes it into the ingest (video copied, audio made AAC): from an RTMP
server carrying the 6 Mb/s 720p30 stream of bench.fanout, and from an RTSP camera (GStreamer's
RTSP server of the media tests, 640x360 H.264, no audio). Each runs under rig's Supervisor, as
the agent runs it. Prints CPU % of one core and PSS of the ffmpeg process, and the ratio to
the relay. The camera's own encoder is not counted (it stands for a camera).

    .venv/bin/python -m bench.sources [--seconds 10]
"""

import argparse
import tempfile
import time
from pathlib import Path

from agents.node.relay import RelaySpec
from agents.node.supervisor import Supervisor
from bench.fanout import make_source, measure, nginx, publisher
from tests.media.harness import Camera


def run(spec: RelaySpec, seconds: float) -> tuple[float, float]:
    """CPU % of one core and PSS MiB of the one ffmpeg the spec runs, once it is live."""
    supervisor = Supervisor(private_ok=True)
    try:
        supervisor.add(spec)
        deadline = time.monotonic() + 20
        while supervisor.get_state(spec.relay_id).state != "live":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{spec.relay_id} never went live")
            time.sleep(0.2)
        time.sleep(2)  # past the first GOP
        pid = supervisor.get_state(spec.relay_id).pid
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
        finally:
            camera.stop()
            upstream.terminate()
            upstream.wait(5)
            ingest.stop()
            server.stop()


if __name__ == "__main__":
    main()
