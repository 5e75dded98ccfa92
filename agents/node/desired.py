"""What the node should run, from the control plane's desired state and nginx's publishers:
pure functions, so the agent's reconcile is I/O around them."""

from typing import Any

from agents.node import ingest
from agents.node.relay import RelaySpec

ENCODER = "encode:"  # the relay id prefix of a stream's shared encoders (not a destination's)


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
    the publisher has gone, or while another one publishes the key.

    Destinations with a transcode profile share one encoder per distinct profile (a relay
    ``encode:…`` from the ingest into its ``encoded`` application); their own relays copy
    from it, like every other destination copies from the ingest."""
    specs: list[RelaySpec] = []
    keys: dict[str, str] = {}
    for stream in streams:
        key, session = stream["streamKey"], str(stream.get("clientId", ""))
        current = publishers.get(key)
        if current is None and (key, session) in seen:
            continue  # its publisher has gone: the session is over, whatever the hooks say
        if current is not None and session not in ("", current):
            continue  # another publisher: not the session the control plane admitted
        stream_id = stream["streamID"]
        keys[stream_id] = key
        source = ingest.local_stream_url(rtmp_port, key)
        encoders: dict[tuple[int, int, int, int], str] = {}  # profile -> where it publishes
        for destination in stream["destinations"]:
            if not destination.get("isActive"):
                continue
            profile = _profile(destination.get("transcode"))
            if profile is not None and profile not in encoders:
                encoders[profile] = ingest.local_encoded_url(rtmp_port, key, profile)
                specs.append(
                    RelaySpec(
                        relay_id=f"{ENCODER}{stream_id}:{'x'.join(map(str, profile))}",
                        stream_id=stream_id,
                        source_url=source,
                        target_url=encoders[profile],
                        session=session,
                        transcode=profile,
                        local=True,
                        gives_up=False,
                    )
                )
            specs.append(
                RelaySpec(
                    relay_id=f"{stream_id}:{destination['id']}",
                    stream_id=stream_id,
                    destination_id=int(destination["id"]),
                    source_url=source if profile is None else encoders[profile],
                    target_url=destination["rtmpUrl"],
                    mute=bool(destination.get("isMuted", False)),
                    generation=int(destination.get("restartSeq", 0)),
                    session=session,
                    gives_up=profile is None,
                )
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
