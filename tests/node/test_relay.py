"""Unit tests for agents.node.relay: command line, redaction, progress parsing, snapshots."""

import json
from typing import Any

import pytest

from agents.node.relay import (
    Progress,
    ProgressParser,
    RelaySnapshot,
    RelaySpec,
    RelayState,
    build_relay_command,
    redact,
    relay_secrets,
)

SOURCE = "rtmp://127.0.0.1:1935/live/streamkey123"


def _spec(target: str = "rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl", **kw: Any) -> RelaySpec:
    return RelaySpec(relay_id="s1:d1", source_url=SOURCE, target_url=target, **kw)


def _option(cmd: list[str], name: str) -> list[str]:
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == name]


@pytest.mark.parametrize(
    "target",
    ["rtmp://a.rtmp.youtube.com/live2/abcd-efgh", "rtmps://live.example.com:443/app/sk_123"],
)
def test_command_for_rtmp_and_rtmps_targets(target: str) -> None:
    cmd = build_relay_command(_spec(target), ffmpeg="/usr/bin/ffmpeg")
    assert cmd[0] == "/usr/bin/ffmpeg"
    assert cmd[-1] == target  # the output URL comes last, after every output option
    assert cmd[cmd.index("-i") + 1] == SOURCE
    assert _option(cmd, "-map") == ["0:v?", "0:a?"]
    assert _option(cmd, "-c") == ["copy"]
    assert _option(cmd, "-f") == ["flv"]
    assert _option(cmd, "-flvflags") == ["no_duration_filesize"]
    assert _option(cmd, "-progress") == ["pipe:1"]
    assert "-nostdin" in cmd
    # rw_timeout once for the input (before -i) and once for the output.
    positions = [i for i, arg in enumerate(cmd) if arg == "-rw_timeout"]
    assert len(positions) == 2
    assert positions[0] < cmd.index("-i") < positions[1]
    assert _option(cmd, "-rw_timeout") == ["10000000", "10000000"]
    # A short probe, safe only because the ingest sends nothing before a video keyframe.
    assert cmd.index("-analyzeduration") < cmd.index("-i") and "-probesize" not in cmd
    assert "tee" not in cmd


def test_srt_target_carries_mpegts_and_its_streamid_is_a_secret() -> None:
    target = "srt://srt.example.com:9000?streamid=live%26k%3D1"
    cmd = build_relay_command(_spec(target))
    assert cmd[-1] == target
    assert _option(cmd, "-f") == ["mpegts"]
    assert "-flvflags" not in cmd  # an FLV option would make ffmpeg refuse the MPEG-TS output
    line = f"[error] {target}: Connection setup failure (live&k=1)"
    assert redact(line, relay_secrets(_spec(target))) == (
        "[error] srt://srt.example.com:9000?***: Connection setup failure (***)"
    )


def test_a_transcoded_relay_encodes_to_its_profile() -> None:
    cmd = build_relay_command(_spec(transcode=(720, 30, 3000, 128)))
    assert _option(cmd, "-c:v") == ["libx264"] and _option(cmd, "-c:a") == ["aac"]
    assert _option(cmd, "-vf") == ["scale=-2:720"] and _option(cmd, "-r") == ["30"]
    assert _option(cmd, "-b:v") == ["3000k"] and _option(cmd, "-b:a") == ["128k"]
    assert _option(cmd, "-g") == ["60"]  # a keyframe every 2 s, as platforms ask
    assert "copy" not in cmd
    assert _option(build_relay_command(_spec()), "-c") == ["copy"]  # the others copy


def test_command_rw_timeout_is_configurable() -> None:
    cmd = build_relay_command(_spec(), rw_timeout_s=2.5)
    assert _option(cmd, "-rw_timeout") == ["2500000", "2500000"]


def test_mute_drops_audio_mapping() -> None:
    cmd = build_relay_command(_spec(mute=True))
    assert _option(cmd, "-map") == ["0:v?"]
    assert not any("0:a" in arg for arg in cmd)


def test_redact_replaces_every_non_empty_secret() -> None:
    text = "push to rtmp://h/app/KEY failed; KEY rejected; token=T0K"
    assert (
        redact(text, ["KEY", "", "T0K"])
        == "push to rtmp://h/app/*** failed; *** rejected; token=***"
    )
    assert redact(text, []) == text
    # A secret containing a shorter one is hidden whole, whatever the order given.
    assert redact("abc-long-key", ["abc", "abc-long-key"]) == "***"


def test_relay_secrets_cover_key_query_and_credentials() -> None:
    spec = _spec("rtmp://user:pa55@live.twitch.tv/app/live_123_abc%21?bandwidthtest=true&t=zz9")
    secrets = relay_secrets(spec)
    text = redact(f"error: {spec.target_url} / live_123_abc! / zz9 / pa55", secrets)
    for secret in ("live_123_abc", "zz9", "pa55", "bandwidthtest=true", spec.target_url):
        assert secret not in text
    assert "live.twitch.tv/app/" in text  # the non-secret part stays useful


def test_relay_secrets_without_a_key_hide_the_whole_url() -> None:
    spec = _spec("rtmp://example.com/app/")
    assert redact(f"x {spec.target_url} y", relay_secrets(spec)) == "x *** y"


def test_spec_repr_hides_the_key() -> None:
    spec = _spec("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl")
    assert "abcd-efgh-ijkl" not in repr(spec)
    assert "live2/***" in repr(spec)


BLOCK = """frame=77
fps=75.46
stream_0_0_q=-1.0
bitrate= 966.3kbits/s
total_size=368516
out_time_us=3051000
out_time_ms=3051000
out_time=00:00:03.051000
dup_frames=0
drop_frames=0
speed=2.99x
progress=continue
"""


def parse_progress_block(lines: list[str]) -> Progress | None:
    """The last complete block in ``lines``, or None if no block was finished."""
    parser = ProgressParser()
    last: Progress | None = None
    for line in lines:
        last = parser.feed(line) or last
    return last


def test_parse_progress_block() -> None:
    progress = parse_progress_block(BLOCK.splitlines())
    assert progress == Progress(
        total_size=368516,
        bitrate_kbps=966.3,
        fps=75.46,
        out_time_us=3051000,
        frame=77,
        ended=False,
    )


def test_parse_progress_na_values_and_end() -> None:
    lines = ["frame=0", "fps=N/A", "bitrate=N/A", "total_size=N/A", "out_time_us=N/A"]
    progress = parse_progress_block([*lines, "progress=end"])
    assert progress == Progress(
        total_size=0, bitrate_kbps=None, fps=None, out_time_us=None, frame=0, ended=True
    )
    assert parse_progress_block(["bitrate=6012.3kbits/s", "progress=continue"]) == Progress(
        bitrate_kbps=6012.3
    )


def test_partial_blocks() -> None:
    # No terminator yet: nothing to report.
    assert parse_progress_block(["frame=1", "total_size=10"]) is None
    # Two blocks and the start of a third: the last complete one wins.
    lines = [*BLOCK.splitlines(), "total_size=400000", "progress=continue", "total_size=9"]
    progress = parse_progress_block(lines)
    assert progress is not None and progress.total_size == 400000
    assert progress.frame is None  # fields do not leak from one block into the next

    parser = ProgressParser()
    results = [parser.feed(line) for line in BLOCK.splitlines()]
    assert results[:-1] == [None] * (len(results) - 1)
    assert results[-1] is not None and results[-1].total_size == 368516
    assert parser.feed("garbage without equals sign") is None
    assert parser.feed("") is None


def test_snapshot_as_dict_is_json_friendly_and_leaves_log_out() -> None:
    snapshot = RelaySnapshot(
        relay_id="s1:d1",
        state=RelayState.LIVE,
        bitrate_kbps=1000.5,
        fps=30.0,
        bytes_sent=123,
        restarts=2,
        since=1700000000.5,
        last_error=None,
        log=("a line",),
        pid=42,
    )
    data = snapshot.as_dict()
    assert data == {
        "relayId": "s1:d1",
        "state": "live",
        "bitrateKbps": 1000.5,
        "fps": 30.0,
        "bytesSent": 123,
        "restarts": 2,
        "since": 1700000000.5,
        "lastError": None,
        "pid": 42,
    }
    assert json.loads(json.dumps(data)) == data
    assert RelayState("failed") is RelayState.FAILED
    assert isinstance(RelayState.LIVE, str) and str(RelayState.LIVE) == "live"
