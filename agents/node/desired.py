"""What the node should run, from the control plane's desired state and nginx's publishers:
pure functions, so the agent's reconcile is I/O around them."""

from typing import Any

from agents.node import ingest
from agents.node.relay import RelaySpec


def desired_relays(
    streams: list[dict[str, Any]],
    publishers: dict[str, str],
    *,
    seen: set[tuple[str, str]],
    rtmp_port: int,
) -> tuple[list[RelaySpec], dict[str, str]]:
    """The relays this node should run, and {stream id: key} of the streams they serve.

    A relay is bound to the publish session it serves (``clientId``, nginx's id of the
    admitted publisher), which is part of its spec: a new session restarts it, at the new
    session's first keyframe, instead of letting it forward the new timestamps into the old
    connection (the platform would see a frozen picture). It runs while that publisher is
    nginx's publisher of the key, and before nginx lists it (``seen`` holds the sessions it
    has listed), so it is connected and waiting when the first keyframe comes; never once
    the publisher has gone, or while another one publishes the key."""
    specs: list[RelaySpec] = []
    keys: dict[str, str] = {}
    for stream in streams:
        key, session = stream["streamKey"], str(stream.get("clientId", ""))
        current = publishers.get(key)
        if current is None and (key, session) in seen:
            continue  # its publisher has gone: the session is over, whatever the hooks say
        if current is not None and session not in ("", current):
            continue  # another publisher: not the session the control plane admitted
        keys[stream["streamID"]] = key
        specs.extend(
            RelaySpec(
                relay_id=f"{stream['streamID']}:{destination['id']}",
                stream_id=stream["streamID"],
                destination_id=int(destination["id"]),
                source_url=ingest.local_stream_url(rtmp_port, key),
                target_url=destination["rtmpUrl"],
                mute=bool(destination.get("isMuted", False)),
                generation=int(destination.get("restartSeq", 0)),
                session=session,
                transcode=_profile(destination.get("transcode")),
            )
            for destination in stream["destinations"]
            if destination.get("isActive")
        )
    return specs, keys


def _profile(transcode: dict[str, Any] | None) -> tuple[int, int, int, int] | None:
    if not transcode:
        return None
    return (
        int(transcode["height"]),
        int(transcode["fps"]),
        int(transcode["videoBitrateKbps"]),
        int(transcode["audioBitrateKbps"]),
    )


def desired_pulls(pulls: list[dict[str, Any]], *, rtmp_port: int) -> list[RelaySpec]:
    """The pulls this node should run: each plays the stream's remote URL and publishes it
    into this node's ingest under the stream's key, with the token that tells the control
    plane's publish hook it is the stream's own pull and not a pushed publisher."""
    return [
        RelaySpec(
            relay_id=f"pull:{pull['streamID']}",
            stream_id=pull["streamID"],
            source_url=pull["url"],
            target_url=ingest.pull_publish_url(rtmp_port, pull["streamKey"], pull["token"]),
            generation=int(pull.get("restartSeq", 0)),
            pull=True,
        )
        for pull in pulls
    ]


def publishers_to_drop(streams: list[dict[str, Any]], publishers: dict[str, str]) -> list[str]:
    """Keys whose publisher on this node is not a live session's: revoked, ended, or replaced
    by a newer session (which can only connect once this one is gone)."""
    admitted = {stream["streamKey"]: str(stream.get("clientId", "")) for stream in streams}
    return sorted(
        key
        for key, client in publishers.items()
        if key not in admitted or admitted[key] not in ("", client)
    )
