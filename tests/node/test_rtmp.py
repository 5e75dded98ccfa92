"""The pure parts of the fan-out's RTMP player and writer: AMF0, chunks and their headers, tags."""

import struct

from agents.node.rtmp import (
    AUDIO,
    CHUNK_SIZE,
    DATA,
    VIDEO,
    ChunkParser,
    Player,
    Publisher,
    Tag,
    amf0,
    amf0_decode,
    chunk_body,
    message,
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


def _messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """Every whole message in ``data``, as a player reads them: fed at once, and byte by byte
    (as a slow network splits them), the same messages."""
    whole = ChunkParser().feed(data)
    parser = ChunkParser()
    assert [m for i in range(len(data)) for m in parser.feed(data[i : i + 1])] == whole
    return whole


def test_a_played_stream_reads_back_as_its_messages() -> None:
    """What nginx sends a player: a chunk size, then video and audio on their own chunk
    streams, a type-0 header (absolute time), a type-1 header (33 ms later), a type-3 header
    that starts a message (as far after the last), and a body cut into chunks."""
    frame = bytes(range(256)) * 2
    data = message(2, 1, struct.pack(">I", 200))  # Set Chunk Size: 200
    data += message_header(7, 1000, len(frame), VIDEO, 1) + b"".join(chunk_body(7, frame, 200))
    data += bytes([0x47]) + (33).to_bytes(3, "big") + (3).to_bytes(3, "big") + bytes([VIDEO])
    data += b"\x27\x01a" + bytes([0xC7]) + b"\x27\x01b"
    data += message_header(6, 1010, 3, AUDIO, 1) + b"\xaf\x01c"
    assert _messages(data)[1:] == [
        (VIDEO, 1, 1000, frame),
        (VIDEO, 1, 1033, b"\x27\x01a"),
        (VIDEO, 1, 1066, b"\x27\x01b"),
        (AUDIO, 1, 1010, b"\xaf\x01c"),
    ]


def test_after_4_6_hours_every_chunk_carries_the_extended_timestamp() -> None:
    """From 0xFFFFFF ms on, the time is in the extended field, and nginx repeats it after
    each continuation chunk's 1-byte header: it is not part of the body."""
    late, frame = 0x1000005, bytes(300)
    extended = struct.pack(">I", late)
    chunks = [c + extended if i % 2 else c for i, c in enumerate(chunk_body(7, frame, 128))]
    data = message(2, 1, struct.pack(">I", 128))
    data += message_header(7, late, len(frame), VIDEO, 1) + b"".join(chunks)
    assert _messages(data)[1:] == [(VIDEO, 1, late, frame)]


def test_after_49_7_days_the_clock_wraps_and_legs_count_on_across_it() -> None:
    """RTMP time is 32 bits of milliseconds: a delta past 2**32 - 1 wraps to small numbers, as
    ffmpeg and nginx count it; a leg's own times keep rising across the wrap."""
    near_end = 0xFFFFFFF0
    data = message(2, 1, struct.pack(">I", 128))
    data += message_header(7, near_end, 3, VIDEO, 1) + b"\x17\x01a"
    data += bytes([0x47]) + (0x20).to_bytes(3, "big") + (3).to_bytes(3, "big") + bytes([VIDEO])
    data += b"\x27\x01b"
    assert [ts for _, _, ts, _ in _messages(data)[1:]] == [near_end, 0x10]

    def stamp(leg: Publisher, at: int) -> int:
        """The time the leg gives a tag of this source time (from its message header)."""
        leg._pending = []
        leg.send(Tag.of(VIDEO, at, b"\x27\x01b"))
        head = leg._pending[0]
        field = head[1:4] if head[1:4] != b"\xff\xff\xff" else head[-4:]  # or extended
        return int.from_bytes(field, "big")

    leg = Publisher("rtmp://127.0.0.1/live/key")
    leg.start_at(near_end)  # a leg that joined just before the source's clock wrapped
    # 32 ms after its first keyframe; then a sequence header from before it: at its 0
    assert [stamp(leg, 0x10), stamp(leg, near_end - 500)] == [0x20, 0]
    old = Publisher("rtmp://127.0.0.1/live/key")
    old.start_at(0)  # a leg live for 24.8 days and on: its times keep rising
    assert [stamp(old, 0x7FFFFFF0), stamp(old, 0x80000010)] == [0x7FFFFFF0, 0x80000010]


def test_a_leg_counts_the_bytes_it_queued_as_they_go_on_the_wire() -> None:
    """What a leg reports (bytes the destination took: sent minus still buffered) and when it
    drops tags (buffered over MAX_BUFFERED) rest on this count; late tags' continuation chunks
    carry 4 more bytes each."""
    leg = Publisher("rtmp://127.0.0.1/live/key")
    leg.start_at(0)
    frame = b"\x17\x01" + bytes(2 * CHUNK_SIZE)  # three chunks
    leg.send(Tag.of(VIDEO, 0, frame))
    leg.send(Tag.of(AUDIO, 21, b"\xaf\x01abc"))
    leg.send(Tag.of(VIDEO, 0x1000000, frame))  # extended: after 4.6 hours
    on_the_wire = sum(map(len, leg._pending))
    assert leg.bytes_sent == leg.buffered == on_the_wire
    assert on_the_wire == 2 * (12 + len(frame) + 2) + 4 + 2 * 4 + (12 + 5)


def test_a_player_spaces_its_reads_after_the_streams_first_two_seconds() -> None:
    """A viewer at a destination probes the first frames before its first picture: those go
    out as they arrive; from two seconds of video after the first keyframe on (audio's clock
    does not count), reads are spaced."""
    player = Player("rtmp://127.0.0.1/live/key", lambda tag: None, every=0.2)
    player._on_media(VIDEO, 500, b"\x27\x01a")  # an inter frame before any keyframe
    player._on_media(VIDEO, 1000, b"\x17\x01a")  # the first keyframe
    player._on_media(AUDIO, 5000, b"\xaf\x01a")
    player._on_media(VIDEO, 2999, b"\x27\x01a")
    assert player.read_every == 0
    player._on_media(VIDEO, 3000, b"\x27\x01a")
    assert player.read_every == 0.2
