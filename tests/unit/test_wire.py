"""The wire layer without sockets: frames in, messages out, and every way frames go wrong.

Rules under test are the numbered ones in ``trikernel/protocol/wire.py``: signatures over the four
JSON frames, replay rejection within a bounded window, signature before parsing, and
``Session.unpack`` raising nothing but ``WireError``.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trikernel.protocol import (
    DELIMITER,
    PROTOCOL_VERSION,
    FramingError,
    Header,
    Message,
    MessageFormatError,
    ReplayError,
    Session,
    SignatureError,
    WireError,
    jsonutil,
)

KEY = b"a-connection-file-key"
_ORJSON = jsonutil.dumps is not jsonutil._std_dumps

HEADER: dict[str, Any] = {
    "msg_id": "req-1",
    "msg_type": "execute_request",
    "session": "client-session",
    "username": "alice",
    "date": "2024-01-02T03:04:05.000006+00:00",
    "version": PROTOCOL_VERSION,
}

# Cheap enough that the property tests below stay well under a few seconds together.
FAST = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def json_parts(
    header: object = HEADER,
    parent: object = None,
    metadata: object = None,
    content: object = None,
) -> list[bytes]:
    """The four JSON frames of a message, serialised by the project's own JSON."""
    return [
        jsonutil.dumps(header),
        jsonutil.dumps({} if parent is None else parent),
        jsonutil.dumps({} if metadata is None else metadata),
        jsonutil.dumps({} if content is None else content),
    ]


def frames_for(
    session: Session,
    parts: list[bytes],
    identities: tuple[bytes, ...] = (b"client-id",),
    buffers: tuple[bytes, ...] = (),
) -> list[bytes]:
    """Frames as a peer holding ``session``'s key would send them."""
    return [*identities, DELIMITER, session.sign(parts), *parts, *buffers]


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY, b""], ids=["signed", "unsigned"])
def test_pack_then_unpack_gives_back_every_part(key: bytes) -> None:
    sender = Session(key=key)
    receiver = Session(key=key)  # the other end: same key, its own replay memory
    sent = sender.msg(
        "execute_request",
        {"code": "print('héllo 🙂')", "silent": False, "nested": {"a": [1, 2.5, None, True]}},
        metadata={"cellId": "c-1", "deletedCells": []},
        buffers=[b"", b"\x00\xff" * 8, bytes(range(256))],
        identities=[b"router-id", b"\x00\x01\x02"],
    )

    received = receiver.unpack(sender.pack(sent))

    assert received.header == sent.header
    assert received.msg_type == "execute_request"
    assert received.msg_id == sent.msg_id
    assert dict(received.parent_header) == dict(sent.parent_header) == {}
    assert dict(received.metadata) == {"cellId": "c-1", "deletedCells": []}
    assert dict(received.content) == dict(sent.content)
    assert list(received.buffers) == [b"", b"\x00\xff" * 8, bytes(range(256))]
    assert list(received.identities) == [b"router-id", b"\x00\x01\x02"]


def test_packed_frames_are_laid_out_and_signed_as_the_spec_says() -> None:
    session = Session(key=KEY)
    msg = session.msg("status", {"execution_state": "idle"}, identities=[b"topic"], buffers=[b"B"])

    frames = session.pack(msg)

    assert frames[0] == b"topic"
    assert frames[1] == DELIMITER
    parts = frames[3:7]
    # Any Jupyter client (jupyter_client included) computes exactly this to check us.
    expected = hmac.new(KEY, b"".join(parts), hashlib.sha256).hexdigest().encode("ascii")
    assert frames[2] == expected
    assert frames[-1] == b"B"
    assert len(frames) == 1 + 1 + 1 + 4 + 1


def test_unsigned_session_sends_an_empty_signature() -> None:
    session = Session(key=b"")
    frames = session.pack(session.msg("status", {"execution_state": "busy"}))
    assert frames[frames.index(DELIMITER) + 1] == b""


def test_unpack_accepts_frames_as_memoryview_and_bytearray() -> None:
    # pyzmq hands out buffers when receiving without copying; the result is plain bytes.
    sender, receiver = Session(key=KEY), Session(key=KEY)
    frames = sender.pack(sender.msg("comm_msg", {"data": {}}, buffers=[b"raw"], identities=[b"i"]))
    views = [memoryview(f) if n % 2 else bytearray(f) for n, f in enumerate(frames)]

    received = receiver.unpack(views)

    assert list(received.buffers) == [b"raw"]
    assert list(received.identities) == [b"i"]
    assert all(type(b) is bytes for b in [*received.buffers, *received.identities])


def test_reply_echoes_the_request_header_and_routes_to_its_identities() -> None:
    client, kernel = Session(key=KEY, session_id="client"), Session(key=KEY, session_id="kernel")
    request_frames = client.pack(
        client.msg("kernel_info_request", identities=[b"route-a", b"route-b"])
    )
    request = kernel.unpack(request_frames)

    reply = kernel.msg("kernel_info_reply", {"status": "ok"}, parent=request)

    assert dict(reply.parent_header) == request.header.to_dict()
    assert list(reply.identities) == [b"route-a", b"route-b"]
    assert reply.header.session == "kernel"
    assert reply.header.version == PROTOCOL_VERSION
    seen_by_client = Session(key=KEY).unpack(kernel.pack(reply))
    assert dict(seen_by_client.parent_header) == request.header.to_dict()
    assert seen_by_client.parent_header["msg_id"] == request.msg_id


def test_explicit_identities_win_over_the_parents() -> None:
    kernel = Session(key=KEY)
    request = kernel.unpack(frames_for(kernel, json_parts(), identities=(b"router-id",)))

    published = kernel.msg("status", {"execution_state": "busy"}, parent=request, identities=[])

    assert list(published.identities) == []
    assert published.parent_header["msg_id"] == HEADER["msg_id"]


def test_message_ids_are_unique_within_a_session() -> None:
    session = Session(key=KEY)
    ids = {session.msg("status").msg_id for _ in range(1000)}
    assert len(ids) == 1000


def test_header_dates_are_now_in_utc_with_microseconds() -> None:
    session = Session(key=KEY)
    # datetime rounds to the microsecond, the header truncates: allow that one microsecond.
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(microseconds=1)
    dates = [session.msg("status").header.date for _ in range(3)]
    after = datetime.datetime.now(datetime.timezone.utc)
    for date in dates:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", date), date
        assert before <= datetime.datetime.fromisoformat(date) <= after
    assert dates == sorted(dates)


def test_sessions_get_distinct_ids_by_default() -> None:
    assert Session(key=KEY).session_id != Session(key=KEY).session_id


# -- signature schemes -------------------------------------------------------------------------

# Every digest hashlib guarantees and HMAC can key (shake_* have no fixed length).
DIGESTS = sorted(d for d in hashlib.algorithms_guaranteed if not d.startswith("shake_"))


@pytest.mark.parametrize("digest", DIGESTS)
def test_every_hashlib_digest_signs_and_verifies(digest: str) -> None:
    scheme = f"hmac-{digest}"
    sender = Session(key=KEY, signature_scheme=scheme)
    receiver = Session(key=KEY, signature_scheme=scheme)
    msg = sender.msg("execute_request", {"code": "1"})

    frames = sender.pack(msg)

    parts = frames[2:6]
    expected = hmac.new(KEY, b"".join(parts), digest).hexdigest().encode("ascii")
    assert frames[1] == expected
    assert receiver.unpack(frames).content == {"code": "1"}


def test_a_different_digest_is_a_bad_signature() -> None:
    frames = Session(key=KEY, signature_scheme="hmac-sha512").pack(Session(key=KEY).msg("x"))
    with pytest.raises(SignatureError):
        Session(key=KEY, signature_scheme="hmac-sha256").unpack(frames)


@pytest.mark.parametrize(
    "scheme",
    ["sha256", "hmac-", "hmac", "", "hmac-nope", "hmac-sha257", "md5-hmac", "HMAC-sha256"],
)
@pytest.mark.parametrize("key", [KEY, b""], ids=["signed", "unsigned"])
def test_unknown_signature_scheme_is_refused_at_construction(scheme: str, key: bytes) -> None:
    with pytest.raises(ValueError, match=r"hmac-|digest"):
        Session(key=key, signature_scheme=scheme)


@pytest.mark.parametrize("digest", ["shake_128", "shake_256"])
def test_variable_length_digests_are_refused_at_construction(digest: str) -> None:
    # HMAC needs a fixed-length digest; refusing here beats failing on the first message.
    with pytest.raises(ValueError):
        Session(key=KEY, signature_scheme=f"hmac-{digest}")


# -- tampering and replay ----------------------------------------------------------------------


def flip_byte(frame: bytes) -> bytes:
    i = len(frame) // 2
    return frame[:i] + bytes([frame[i] ^ 0x01]) + frame[i + 1 :]


@pytest.mark.parametrize("index", [1, 2, 3, 4, 5], ids=["signature", *"HPMC"])
def test_a_flipped_byte_in_a_signed_frame_is_a_bad_signature(index: int) -> None:
    sender, receiver = Session(key=KEY), Session(key=KEY)
    frames = sender.pack(sender.msg("execute_request", {"code": "x = 1"}, metadata={"m": 1}))
    assert frames[0] == DELIMITER
    tampered = [*frames[:index], flip_byte(frames[index]), *frames[index + 1 :]]

    with pytest.raises(SignatureError):
        receiver.unpack(tampered)


def test_wrong_key_is_a_bad_signature() -> None:
    frames = Session(key=b"someone-else").pack(Session(key=b"x").msg("shutdown_request"))
    with pytest.raises(SignatureError):
        Session(key=KEY).unpack(frames)


def test_missing_signature_is_refused_when_the_session_has_a_key() -> None:
    unsigned_frames = Session(key=b"").pack(Session(key=b"").msg("execute_request"))
    with pytest.raises(SignatureError):
        Session(key=KEY).unpack(unsigned_frames)


def test_a_signature_of_other_frames_is_refused() -> None:
    sender = Session(key=KEY)
    genuine = sender.pack(sender.msg("execute_request", {"code": "harmless()"}))
    forged = sender.pack(sender.msg("execute_request", {"code": "evil()"}))
    forged[1] = genuine[1]  # a valid signature, but of another message

    with pytest.raises(SignatureError):
        Session(key=KEY).unpack(forged)


@pytest.mark.parametrize(
    "signature",
    [b"\xff" * 64, b"not hex at all", b"0" * 64, b"0" * 1000, DELIMITER],
    ids=["non-ascii", "text", "zeros", "long", "delimiter"],
)
def test_garbage_signatures_are_refused(signature: bytes) -> None:
    parts = json_parts()
    with pytest.raises(SignatureError):
        Session(key=KEY).unpack([DELIMITER, signature, *parts])


def test_identities_and_buffers_are_outside_the_signature() -> None:
    # Spec: the HMAC covers the four JSON frames only, so a ROUTER may rewrite routing ids.
    sender, receiver = Session(key=KEY), Session(key=KEY)
    frames = sender.pack(sender.msg("comm_msg", identities=[b"a"], buffers=[b"data"]))
    frames[0] = b"rewritten-by-a-proxy"
    frames[-1] = b"other data"

    received = receiver.unpack(frames)

    assert list(received.identities) == [b"rewritten-by-a-proxy"]
    assert list(received.buffers) == [b"other data"]


def test_unsigned_session_accepts_any_signature_frame() -> None:
    frames = Session(key=KEY).pack(Session(key=KEY).msg("execute_request"))
    assert Session(key=b"").unpack(frames).msg_type == "execute_request"


def test_the_same_frames_twice_are_a_replay() -> None:
    sender, receiver = Session(key=KEY), Session(key=KEY)
    frames = sender.pack(sender.msg("execute_request", {"code": "launch()"}))

    receiver.unpack(frames)
    with pytest.raises(ReplayError):
        receiver.unpack(frames)
    with pytest.raises(ReplayError):
        receiver.unpack(list(frames))


def test_a_rejected_forgery_does_not_use_up_the_genuine_messages_signature() -> None:
    sender, receiver = Session(key=KEY), Session(key=KEY)
    frames = sender.pack(sender.msg("execute_request", {"code": "1"}))
    tampered = [*frames[:2], flip_byte(frames[2]), *frames[3:]]

    with pytest.raises(SignatureError):
        receiver.unpack(tampered)
    assert receiver.unpack(frames).content == {"code": "1"}


def test_unsigned_sessions_cannot_detect_replays() -> None:
    # Rule 2's caveat: without a key there is no signature to remember.
    session = Session(key=b"")
    frames = session.pack(session.msg("execute_request"))
    session.unpack(frames)
    assert session.unpack(frames).msg_type == "execute_request"


def test_replay_memory_is_bounded_by_the_window() -> None:
    window = 8
    sender, receiver = Session(key=KEY), Session(key=KEY, replay_window=window)
    sent = [sender.pack(sender.msg("execute_request", {"n": n})) for n in range(100)]
    for frames in sent:
        receiver.unpack(frames)

    # The newest `window` signatures are remembered...
    for frames in sent[-window:]:
        with pytest.raises(ReplayError):
            receiver.unpack(frames)
    # ...and nothing older: memory does not grow with the number of messages.
    assert len(receiver._seen) == window
    assert len(receiver._seen_order) == window
    assert receiver.unpack(sent[-window - 1]).content == {"n": 100 - window - 1}


def test_oldest_signature_is_forgotten_after_window_newer_messages() -> None:
    sender, receiver = Session(key=KEY), Session(key=KEY, replay_window=3)
    first, *newer = (sender.pack(sender.msg("x", {"n": n})) for n in range(4))
    receiver.unpack(first)
    for frames in newer[:2]:
        receiver.unpack(frames)
    with pytest.raises(ReplayError):  # two newer messages: still remembered
        receiver.unpack(first)

    receiver.unpack(newer[2])  # the third newer message pushes it out

    assert receiver.unpack(first).content == {"n": 0}


def test_signature_is_checked_before_any_json_is_parsed() -> None:
    not_json = [b"{not json", b"\xff\xfe", b"[" * 100_000, b""]
    frames = [DELIMITER, Session(key=b"wrong-key").sign(not_json), *not_json]
    with pytest.raises(SignatureError):
        Session(key=KEY).unpack(frames)

    # The same frames under the right key do reach the parser.
    frames = [DELIMITER, Session(key=KEY).sign(not_json), *not_json]
    with pytest.raises(MessageFormatError):
        Session(key=KEY).unpack(frames)


def test_unauthenticated_frames_reach_no_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def parser_must_not_run(data: bytes | str) -> object:
        raise AssertionError(f"parsed unauthenticated bytes {data!r:.40}")

    parts = json_parts()
    frames = [DELIMITER, Session(key=b"wrong-key").sign(parts), *parts]
    monkeypatch.setattr(jsonutil, "loads", parser_must_not_run)
    with pytest.raises(SignatureError):
        Session(key=KEY).unpack(frames)


# -- framing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames",
    [[], [b"id"], [b"id", b"sig", *json_parts()], [b"<IDS|MSG", b"", *json_parts()]],
    ids=["empty", "identity-only", "no-delimiter", "near-delimiter"],
)
def test_missing_delimiter_is_a_framing_error(frames: list[bytes]) -> None:
    with pytest.raises(FramingError):
        Session(key=KEY).unpack(frames)


@pytest.mark.parametrize("after", range(5))
def test_fewer_than_five_frames_after_the_delimiter_is_a_framing_error(after: int) -> None:
    parts = json_parts()
    frames = [b"id", DELIMITER, Session(key=KEY).sign(parts), *parts][: 2 + after]
    with pytest.raises(FramingError):
        Session(key=KEY).unpack(frames)


def test_exactly_five_frames_after_the_delimiter_is_enough() -> None:
    session = Session(key=KEY)
    message = session.unpack(frames_for(session, json_parts(), identities=()))
    assert list(message.identities) == []
    assert list(message.buffers) == []
    assert message.header.to_dict() == HEADER


def test_empty_frames_as_identities_and_buffers_are_kept() -> None:
    session = Session(key=KEY)
    frames = frames_for(session, json_parts(), identities=(b"",), buffers=(b"", b""))
    message = session.unpack(frames)
    assert list(message.identities) == [b""]
    assert list(message.buffers) == [b"", b""]


@pytest.mark.parametrize("key", [KEY, b""], ids=["signed", "unsigned"])
def test_empty_json_frames_are_a_format_error(key: bytes) -> None:
    session = Session(key=key)
    with pytest.raises(MessageFormatError):
        session.unpack(frames_for(session, [b"", b"", b"", b""]))


def test_garbage_after_the_delimiter_is_refused() -> None:
    garbage = [DELIMITER, b"garbage", b"\x00", b"\xff\xff", b"]", b"{{"]
    with pytest.raises(SignatureError):
        Session(key=KEY).unpack(garbage)
    with pytest.raises(MessageFormatError):
        Session(key=b"").unpack(garbage)


@pytest.mark.parametrize(
    "identity",
    [
        b"<IDS|MSG",
        b"IDS|MSG>",
        b"<IDS|MSG>\x00",
        b" <IDS|MSG>",
        b"<ids|msg>",
        b"<IDS|MSG><IDS|MSG>",
    ],
)
def test_identities_that_look_like_the_delimiter_are_routing_ids(identity: bytes) -> None:
    session = Session(key=KEY)
    message = session.unpack(frames_for(session, json_parts(), identities=(identity, b"next")))
    assert list(message.identities) == [identity, b"next"]
    assert message.header.to_dict() == HEADER


@pytest.mark.parametrize("key", [KEY, b""], ids=["signed", "unsigned"])
def test_an_identity_equal_to_the_delimiter_is_not_misread_as_a_message(key: bytes) -> None:
    # The first delimiter wins, so the real one lands where the signature should be.
    session = Session(key=key)
    with pytest.raises(WireError):
        session.unpack(frames_for(session, json_parts(), identities=(DELIMITER,)))


def test_a_buffer_equal_to_the_delimiter_is_just_a_buffer() -> None:
    session = Session(key=KEY)
    message = session.unpack(frames_for(session, json_parts(), buffers=(DELIMITER, b"x")))
    assert list(message.buffers) == [DELIMITER, b"x"]


# -- message format ----------------------------------------------------------------------------

FRAME_NAMES = ["header", "parent_header", "metadata", "content"]


def with_part(index: int, frame: bytes) -> list[bytes]:
    parts = json_parts()
    parts[index] = frame
    return parts


@pytest.mark.parametrize("index", range(4), ids=FRAME_NAMES)
@pytest.mark.parametrize(
    "frame",
    [
        b'{"a": "\xff"}',
        b'{"a": "\xc3"}',
        b'{"a": "\xc0\xaf"}',
        b"\xfe\xff",
        b'{"a": 1}\x80',
    ],
    ids=["ff", "truncated", "overlong", "utf16-bom-only", "trailing"],
)
def test_invalid_utf8_in_any_frame_is_a_format_error(index: int, frame: bytes) -> None:
    session = Session(key=KEY)
    with pytest.raises(MessageFormatError):
        session.unpack(frames_for(session, with_part(index, frame)))


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode("utf-16"),
        lambda text: text.encode("utf-16-le"),
        lambda text: text.encode("utf-32"),
        lambda text: text.replace("}", ', "x": "\ud800"}').encode("utf-8", "surrogatepass"),
    ],
    ids=["utf-16", "utf-16-le", "utf-32", "encoded-lone-surrogate"],
)
def test_a_header_in_another_encoding_is_a_format_error(encode: Callable[[str], bytes]) -> None:
    session = Session(key=KEY)
    header = encode(jsonutil.dumps(HEADER).decode("utf-8"))
    with pytest.raises(MessageFormatError):
        session.unpack(frames_for(session, with_part(0, header)))


@pytest.mark.parametrize("index", range(4), ids=FRAME_NAMES)
@pytest.mark.parametrize(
    "frame",
    [b"{", b"{'a': 1}", b'{"a": 1,}', b"nul", b'{"a": 1} {"b": 2}', b"\x00", b'{"a" 1}'],
)
def test_invalid_json_in_any_frame_is_a_format_error(index: int, frame: bytes) -> None:
    session = Session(key=KEY)
    with pytest.raises(MessageFormatError):
        session.unpack(frames_for(session, with_part(index, frame)))


@pytest.mark.parametrize("index", range(4), ids=FRAME_NAMES)
@pytest.mark.parametrize("value", [[], [HEADER], 1, 1.5, "header", None, True])
def test_a_frame_that_is_not_an_object_is_a_format_error(index: int, value: object) -> None:
    session = Session(key=KEY)
    with pytest.raises(MessageFormatError, match="not an object"):
        session.unpack(frames_for(session, with_part(index, jsonutil.dumps(value))))


@pytest.mark.parametrize("field", ["msg_id", "msg_type", "session"])
@pytest.mark.parametrize("value", ["<missing>", None, 1, [], {}, ["execute_request"]])
def test_required_header_fields_must_be_strings(field: str, value: object) -> None:
    header = dict(HEADER)
    if value == "<missing>":
        del header[field]
    else:
        header[field] = value
    session = Session(key=KEY)
    with pytest.raises(MessageFormatError, match=field):
        session.unpack(frames_for(session, json_parts(header=header)))


def test_a_minimal_header_is_enough() -> None:
    # username, date and version are optional for the reader: old clients omit some.
    session = Session(key=KEY)
    header = {"msg_id": "m", "msg_type": "kernel_info_request", "session": "s"}
    message = session.unpack(frames_for(session, json_parts(header=header)))
    assert (message.header.msg_id, message.msg_type, message.header.session) == (
        "m",
        "kernel_info_request",
        "s",
    )


@pytest.mark.parametrize("index", range(4), ids=FRAME_NAMES)
@pytest.mark.parametrize(
    "frame",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b"[" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["balanced-lists", "unclosed", "objects", "deep-inside-an-object"],
)
def test_deeply_nested_json_is_a_format_error_not_a_crash(index: int, frame: bytes) -> None:
    session = Session(key=KEY)
    with pytest.raises(MessageFormatError):
        session.unpack(frames_for(session, with_part(index, frame)))


@pytest.mark.parametrize("field", ["username", "date", "version"])
def test_header_from_dict_with_a_deeply_nested_optional_field(field: str) -> None:
    # Deep enough to exhaust str()'s recursion guard on every supported Python.
    header = {**HEADER, field: nested_list(200_000)}
    with pytest.raises(MessageFormatError):
        Header.from_dict(header)


def test_unpack_with_a_deeply_nested_username_raises_only_wire_errors() -> None:
    depth = 1000  # under orjson's parse limit of 1024, over 3.10/3.11's repr limit
    nested = b"[" * depth + b"]" * depth
    frame = b'{"msg_id":"m","msg_type":"t","session":"s","username":' + nested + b"}"
    session = Session(key=KEY)
    try:
        session.unpack(frames_for(session, with_part(0, frame)))
    except WireError:
        pass


def test_unknown_header_keys_are_kept_and_echoed() -> None:
    header = {**HEADER, "subshell_id": "sub-1", "x-client": {"nested": [1, 2]}}
    client, kernel = Session(key=KEY), Session(key=KEY)
    request = kernel.unpack(frames_for(client, json_parts(header=header)))

    assert dict(request.header.extra) == {"subshell_id": "sub-1", "x-client": {"nested": [1, 2]}}
    assert request.header.to_dict() == header

    reply = Session(key=KEY).unpack(kernel.pack(kernel.msg("execute_reply", parent=request)))
    assert dict(reply.parent_header) == header


def test_known_header_keys_never_land_in_extra() -> None:
    header = Header.from_dict(HEADER)
    assert not header.extra
    assert header.to_dict() == HEADER


def test_header_from_dict_rejects_non_objects() -> None:
    for value in ([], "x", 1, None):
        with pytest.raises(MessageFormatError):
            Header.from_dict(value)


def test_message_defaults_are_empty() -> None:
    header = Header(msg_id="m", msg_type="t", session="s")
    message = Message(header=header)
    assert (dict(message.parent_header), dict(message.metadata), dict(message.content)) == (
        {},
        {},
        {},
    )
    assert (list(message.buffers), list(message.identities)) == ([], [])


def test_pack_refuses_content_json_cannot_hold() -> None:
    session = Session(key=KEY)
    with pytest.raises(TypeError):
        session.pack(session.msg("display_data", {"data": object()}))


# -- properties: unpack raises WireError and nothing else --------------------------------------

frame_lists = st.lists(
    st.one_of(st.binary(max_size=40), st.just(DELIMITER), st.just(b"{}")), max_size=12
)


@FAST
@given(frames=frame_lists, key=st.sampled_from([KEY, b""]))
def test_any_frames_give_a_message_or_a_wire_error(frames: list[bytes], key: bytes) -> None:
    try:
        message = Session(key=key).unpack(frames)
    except WireError:
        return
    assert isinstance(message, Message)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
header_like = st.dictionaries(
    st.sampled_from(["msg_id", "msg_type", "session", "username", "date", "version", "extra"]),
    json_values,
    max_size=7,
)
valid_headers = st.fixed_dictionaries(
    {
        "msg_id": st.text(max_size=8),
        "msg_type": st.text(max_size=8),
        "session": st.text(max_size=8),
    },
    optional={
        "username": json_values,
        "date": json_values,
        "version": json_values,
        "subshell_id": json_values,
    },
)
json_frames = st.one_of(
    st.binary(max_size=40),
    json_values.map(jsonutil.dumps),
    header_like.map(jsonutil.dumps),
    valid_headers.map(jsonutil.dumps),
    st.text(max_size=30).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=10).map(lambda b: b'{"a": "' + b + b'"}'),
)
# Each frame is either well-formed or arbitrary, so that some examples get through to a Message.
signed_parts = st.tuples(
    st.one_of(valid_headers.map(jsonutil.dumps), json_frames),
    *[
        st.one_of(
            st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(jsonutil.dumps),
            json_frames,
        )
    ]
    * 3,
).map(list)


@FAST
@given(
    identities=st.lists(st.binary(max_size=12), max_size=3),
    parts=signed_parts,
    buffers=st.lists(st.binary(max_size=12), max_size=3),
)
def test_signed_frames_with_arbitrary_parts_give_a_message_or_a_wire_error(
    identities: list[bytes], parts: list[bytes], buffers: list[bytes]
) -> None:
    session = Session(key=KEY)
    frames = [*identities, DELIMITER, session.sign(parts), *parts, *buffers]
    try:
        message = session.unpack(frames)
    except WireError:
        return
    assert message.header.to_dict()["msg_type"] == message.msg_type
    if DELIMITER not in identities:
        assert list(message.identities) == identities
        assert list(message.buffers) == buffers


# Integers orjson reads back exactly (it reads wider ones as floats; see test_jsonutil.py).
wire_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
round_trip_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        wire_ints,
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)


@FAST
@given(
    content=st.dictionaries(st.text(max_size=8), round_trip_values, max_size=5),
    metadata=st.dictionaries(st.text(max_size=8), round_trip_values, max_size=3),
    buffers=st.lists(st.binary(max_size=32), max_size=3),
    identities=st.lists(st.binary(min_size=1, max_size=8), max_size=3),
    key=st.sampled_from([KEY, b""]),
)
def test_any_json_content_round_trips(
    content: dict[str, Any],
    metadata: dict[str, Any],
    buffers: list[bytes],
    identities: list[bytes],
    key: bytes,
) -> None:
    identities = [i for i in identities if i != DELIMITER]
    sender, receiver = Session(key=key), Session(key=key)
    sent = sender.msg(
        "comm_msg", content, metadata=metadata, buffers=buffers, identities=identities
    )
    received = receiver.unpack(sender.pack(sent))
    assert received.header == sent.header
    assert dict(received.content) == content
    assert dict(received.metadata) == metadata
    assert list(received.buffers) == buffers
    assert list(received.identities) == identities


def test_a_header_nested_deeper_than_clients_can_read_is_refused() -> None:
    from trikernel.protocol.wire import MAX_HEADER_DEPTH

    sender = Session(key=b"k", session_id="s")
    receiver = Session(key=b"k")
    for depth, ok in ((MAX_HEADER_DEPTH - 1, True), (MAX_HEADER_DEPTH + 5, False)):
        nested: object = "leaf"
        for _ in range(depth):
            nested = [nested]
        msg = sender.msg("kernel_info_request")
        header = attrs.evolve(msg.header, extra={"x": nested})
        frames = sender.pack(attrs.evolve(msg, header=header))
        if ok:
            assert receiver.unpack(frames).header.extra["x"] == nested
        else:
            with pytest.raises(MessageFormatError, match="deeper than"):
                receiver.unpack(frames)
