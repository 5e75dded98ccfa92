"""The pure parts of the fan-out's RTMP writer: AMF0, chunking, headers, FLV tags."""

import asyncio
import struct

from agents.node.rtmp import (
    AUDIO,
    DATA,
    VIDEO,
    Tag,
    amf0,
    amf0_decode,
    chunk_body,
    flv_tags,
    message_header,
)


def test_amf0_round_trips_what_commands_carry() -> None:
    values = ["connect", 1, None, True, {"app": "live2", "tcUrl": "rtmp://x/live2", "n": 2.5}]
    assert amf0_decode(amf0(*values)) == ["connect", 1.0, None, True, values[-1]]


def test_a_body_is_cut_into_chunks_with_one_byte_continuation_headers() -> None:
    body = bytes(range(256)) * 10  # 2560 bytes
    parts = chunk_body(7, body, chunk_size=1000)
    assert parts[0] == body[:1000] and parts[1] == b"\xc7" and parts[2] == body[1000:2000]
    assert b"".join(parts[::2]) == body and len(parts) == 5


def test_a_late_timestamp_goes_in_the_extended_field() -> None:
    early = message_header(6, 1000, 20, AUDIO, 1)
    assert early[1:4] == (1000).to_bytes(3, "big") and len(early) == 12
    late = message_header(6, 0x1000000, 20, AUDIO, 1)
    assert late[1:4] == b"\xff\xff\xff" and late[-4:] == struct.pack(">I", 0x1000000)


def test_tags_know_keyframes_sequence_headers_and_metadata() -> None:
    assert Tag.of(VIDEO, 0, b"\x17\x00rest").config  # AVC, keyframe, sequence header
    assert Tag.of(VIDEO, 0, b"\x17\x01rest").keyframe
    assert not Tag.of(VIDEO, 0, b"\x27\x01rest").keyframe  # an inter frame
    assert Tag.of(AUDIO, 0, b"\xaf\x00\x12\x10").config  # AAC sequence header
    metadata = Tag.of(DATA, 0, amf0("onMetaData", {"width": 1280}))
    assert amf0_decode(metadata.body)[:2] == ["@setDataFrame", "onMetaData"]


def _flv(*tags: tuple[int, int, bytes]) -> bytes:
    out = b"FLV\x01\x05\x00\x00\x00\x09" + b"\x00\x00\x00\x00"
    for kind, timestamp, body in tags:
        head = (
            bytes([kind]) + len(body).to_bytes(3, "big") + (timestamp & 0xFFFFFF).to_bytes(3, "big")
        )
        head += bytes([timestamp >> 24]) + b"\x00\x00\x00"
        out += head + body + struct.pack(">I", 11 + len(body))
    return out


def test_an_flv_stream_reads_as_its_tags() -> None:
    async def read() -> list[Tag]:
        reader = asyncio.StreamReader()
        reader.feed_data(_flv((VIDEO, 0, b"\x17\x00cfg"), (AUDIO, 0x01000005, b"\xaf\x01x")))
        reader.feed_eof()
        return [tag async for tag in flv_tags(reader)]

    video, audio = asyncio.run(read())
    assert (video.kind, video.config, video.body) == (VIDEO, True, b"\x17\x00cfg")
    assert (audio.kind, audio.timestamp) == (AUDIO, 0x01000005)
