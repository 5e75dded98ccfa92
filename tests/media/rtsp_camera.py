"""An RTSP camera for the media tests: GStreamer's RTSP server serving a moving test pattern
(H.264, 640x360, 30 fps, a keyframe every 2 s) at rtsp://127.0.0.1:<port>/cam.

Run by Debian's python3 (it has python3-gi; the project's venv does not):
    /usr/bin/python3 tests/media/rtsp_camera.py PORT
It prints "ready" once it listens."""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402 - after require_version

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)


def main(port: str) -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main(sys.argv[1])
