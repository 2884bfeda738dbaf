"""Hostile input and faults (issue 7): nothing crashes, nothing unsigned runs, nothing is lost.

Every case talks to a real kernel process over plain ZeroMQ sockets (:mod:`hostile_helpers`)
and sends exactly the frames it means. Afterwards the kernel must still be up and run ``1+1``.

How "dropped" is proved without sleeping: the kernel reads a channel's frames in order, and
either drops a message in the read loop (bad signature, framing, JSON) or hands it on in order.
So a good request sent *after* the bad one on the same socket, and its reply, prove the bad one
was read; anything it caused (a reply, a marker file written by its code) would have come first.
On shell, requests also run in order, so one round trip is enough. Control requests each run
in a task of their own, and trio may run two tasks of one batch in either order; a second
round trip, sent only after the first reply came back, closes that gap. On stdin nothing is
answered, so a forged ``input_reply`` is followed by a genuine one: ``input()`` returns the
first it accepted, and the cell prints it.

Known kernel bugs are ``xfail(strict=True)`` with the reason; bugs found here and already
fixed stay as regression tests (their docstrings say so).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from tests.kernel.conftest import Kernel, RunKernel, outputs, stream_text
from tests.kernel.hostile_helpers import (
    DELIMITER,
    TIMEOUT,
    Msg,
    Subscriber,
    Wire,
    dumps,
    hmac_hex,
    is_idle_of,
    json_parts,
    new_header,
    parent_id,
    parse,
    rss_mib,
    stream_of,
)

Context = zmq.Context[zmq.Socket[bytes]]

# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctx() -> Iterator[Context]:
    context: Context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def connect(ctx: Context) -> Iterator[Callable[..., Wire]]:
    """``connect(kernel, channel, identity=None)``: a raw DEALER, closed after the test."""
    wires: list[Wire] = []

    def make(k: Kernel, channel: str, identity: bytes | None = None) -> Wire:
        wire = Wire.connect(
            ctx,
            k.km.get_connection_info(),
            channel,
            identity=identity,
            wait_connected=channel == "stdin",
        )
        wires.append(wire)
        return wire

    yield make
    for wire in wires:
        wire.close()


@pytest.fixture
def subscribe(ctx: Context) -> Iterator[Callable[[Kernel], Subscriber]]:
    """``subscribe(kernel)``: a raw iopub SUB, already welcomed, closed after the test."""
    subs: list[Subscriber] = []

    def make(k: Kernel) -> Subscriber:
        sub = Subscriber.connect(ctx, k.km.get_connection_info())
        subs.append(sub)
        return sub

    yield make
    for sub in subs:
        sub.close()


def touch_code(path: Path) -> str:
    """Cell code that proves it ran by creating ``path``."""
    return f"open({str(path)!r}, 'w').close()"


def count_code(path: Path) -> str:
    """Cell code that appends one line to ``path`` each time it runs."""
    return f"open({str(path)!r}, 'a').write('ran\\n')"


def sync_shell(wire: Wire) -> list[Msg]:
    """Run ``1+1`` on ``wire`` (shell); return what arrived before its reply.

    The value comes back in the reply itself (``user_expressions``), so this needs no iopub.
    """
    msg_id = wire.request(
        "execute_request", {"code": "1+1", "silent": True, "user_expressions": {"v": "1+1"}}
    )
    *before, reply = wire.until(msg_id)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert reply["content"]["user_expressions"]["v"]["data"]["text/plain"] == "2"
    return before


def sync_control(wire: Wire) -> list[Msg]:
    """Two kernel_info round trips on ``wire`` (control); return what arrived besides."""
    stray: list[Msg] = []
    for _ in range(2):
        msg_id = wire.request("kernel_info_request")
        *before, reply = wire.until(msg_id)
        assert reply["content"]["status"] == "ok"
        assert reply["content"]["implementation"] == "trikernel"
        stray += before
    return stray


def assert_alive(k: Kernel) -> None:
    """The kernel process is up and runs ``1+1`` for an ordinary client."""
    assert k.km.is_alive(), "kernel process died"
    reply, msgs = k.execute("1+1")
    assert reply["content"]["status"] == "ok"
    [result] = outputs(msgs, "execute_result")
    assert result["content"]["data"]["text/plain"] == "2"


# -- hostile frames ----------------------------------------------------------------------------
#
# Each case takes a Wire and the four JSON parts of a valid message, and returns the frames to
# send. Signature and framing cases must be dropped with no reply at all (an unauthenticated
# sender learns nothing). JSON cases are signed correctly so that they reach the parser; they
# must never run, and may at most get an error reply.

Case = Callable[[Wire, list[bytes]], list[bytes]]


def _other_header(parts: list[bytes]) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(parts[0])
    return {**header, "msg_id": header["msg_id"] + "-other"}


SIGNATURE_CASES: dict[str, Case] = {
    "wrong_hmac_key": lambda w, p: [DELIMITER, hmac_hex(b"not-the-key", p), *p],
    "missing_signature": lambda w, p: [DELIMITER, b"", *p],
    "signature_of_other_bytes": lambda w, p: [
        DELIMITER,
        w.sign([dumps(_other_header(p)), *p[1:]]),
        *p,
    ],
    "signature_of_three_frames": lambda w, p: [DELIMITER, w.sign(p[:3]), *p],
    "signature_in_other_order": lambda w, p: [DELIMITER, w.sign(p[::-1]), *p],
    "signature_truncated": lambda w, p: [DELIMITER, w.sign(p)[:32], *p],
    "signature_uppercase": lambda w, p: [DELIMITER, w.sign(p).upper(), *p],
    "signature_other_digest": lambda w, p: [DELIMITER, hmac_hex(w.key, p, "sha512"), *p],
    "signature_not_ascii": lambda w, p: [DELIMITER, b"\xff\xfe" * 32, *p],
}

FRAMING_CASES: dict[str, Case] = {
    "no_delimiter": lambda w, p: [w.sign(p), *p],
    "delimiter_last": lambda w, p: [w.sign(p), *p, DELIMITER],
    "too_few_frames_after_delimiter": lambda w, p: [DELIMITER, w.sign(p[:3]), *p[:3]],
    "only_signature_after_delimiter": lambda w, p: [DELIMITER, w.sign(p)],
    "only_delimiter": lambda w, p: [DELIMITER],
    "garbage_after_delimiter": lambda w, p: [
        DELIMITER,
        b"\xde\xad\xbe\xef",
        b"\xff\xfe\x00",
        b"{",
        b"",
        b"\x80garbage",
    ],
    "zero_byte_frames": lambda w, p: [DELIMITER, b"", b"", b"", b"", b""],
    "one_empty_frame": lambda w, p: [b""],
    "empty_frames_no_delimiter": lambda w, p: [b""] * 7,
}


def _replace(part: int, value: bytes) -> Case:
    """Correctly signed frames with JSON part ``part`` (0 header .. 3 content) replaced."""

    def case(w: Wire, p: list[bytes]) -> list[bytes]:
        parts = list(p)
        parts[part] = value
        return w.signed(parts)

    return case


def _header_without(field: str) -> Case:
    def case(w: Wire, p: list[bytes]) -> list[bytes]:
        header = json.loads(p[0])
        del header[field]
        return w.signed([dumps(header), *p[1:]])

    return case


def _header_with(**fields: Any) -> Case:
    def case(w: Wire, p: list[bytes]) -> list[bytes]:
        return w.signed([dumps({**json.loads(p[0]), **fields}), *p[1:]])

    return case


def _content_suffix(suffix: bytes) -> Case:
    """The valid content with its closing brace replaced by ``suffix`` (keeps the code)."""

    def case(w: Wire, p: list[bytes]) -> list[bytes]:
        return w.signed([*p[:3], p[3].rstrip(b"}") + suffix])

    return case


DEEP = 100_000

JSON_CASES: dict[str, Case] = {
    "content_invalid_utf8": _content_suffix(b', "note": "\xff\xfe\xc3\x28"}'),
    "content_invalid_json": _content_suffix(b", "),
    "content_truncated": lambda w, p: w.signed([*p[:3], p[3][: len(p[3]) // 2]]),
    "content_not_an_object": _replace(3, b'["code", 1]'),
    "content_empty_frame": _replace(3, b""),
    "content_nested_100k_levels": _content_suffix(b', "x": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    "header_not_an_object_list": _replace(0, b"[]"),
    "header_not_an_object_string": _replace(0, b'"execute_request"'),
    "header_not_an_object_null": _replace(0, b"null"),
    "header_invalid_utf8": _replace(0, b'{"msg_id": "\xff", "msg_type": "x", "session": "s"}'),
    "header_nested_100k_levels": _replace(0, b"[" * DEEP + b"]" * DEEP),
    "header_missing_msg_type": _header_without("msg_type"),
    "header_missing_msg_id": _header_without("msg_id"),
    "header_missing_session": _header_without("session"),
    "header_msg_id_a_number": _header_with(msg_id=12345),
    "header_msg_type_null": _header_with(msg_type=None),
    "header_date_an_object": _header_with(date={"y": 2024}),
    "parent_header_not_an_object": _replace(1, b"[1, 2]"),
    "metadata_not_an_object": _replace(2, b'"meta"'),
    "metadata_invalid_json": _replace(2, b"{'single': 'quotes'}"),
}

DROP_CASES = {**SIGNATURE_CASES, **FRAMING_CASES}


def _payload(channel: str, marker: Path) -> tuple[str, dict[str, Any]]:
    """What a hostile message carries: on shell, code that would leave ``marker``."""
    if channel == "shell":
        return "execute_request", {"code": touch_code(marker), "silent": False}
    return "kernel_info_request", {}


def _check_hostile(
    kernel: Kernel, connect: Callable[..., Wire], tmp_path: Path, channel: str, case: Case
) -> list[Msg]:
    """Send one hostile message then a good round trip; return what else came back."""
    marker = tmp_path / "ran"
    wire = connect(kernel, channel)
    msg_type, content = _payload(channel, marker)
    header = new_header(msg_type)
    wire.send(case(wire, json_parts(header, content)))
    stray = sync_shell(wire) if channel == "shell" else sync_control(wire)
    assert not marker.exists(), "the hostile message's code ran"
    return stray


@pytest.mark.parametrize("channel", ["shell", "control"])
@pytest.mark.parametrize("case", DROP_CASES.values(), ids=DROP_CASES.keys())
def test_bad_signature_or_framing_is_dropped_silently(
    kernel: Kernel, connect: Callable[..., Wire], tmp_path: Path, channel: str, case: Case
) -> None:
    stray = _check_hostile(kernel, connect, tmp_path, channel, case)
    assert stray == [], f"the kernel answered a message it should have dropped: {stray}"
    assert_alive(kernel)


@pytest.mark.parametrize("channel", ["shell", "control"])
@pytest.mark.parametrize("case", JSON_CASES.values(), ids=JSON_CASES.keys())
def test_bad_json_never_runs_and_gets_no_ok_reply(
    kernel: Kernel, connect: Callable[..., Wire], tmp_path: Path, channel: str, case: Case
) -> None:
    stray = _check_hostile(kernel, connect, tmp_path, channel, case)
    # Dropped (what the kernel does) or answered with an error; never an "ok".
    assert all(m["content"].get("status") == "error" for m in stray), stray
    assert_alive(kernel)


STDIN_CASES = {**SIGNATURE_CASES, **FRAMING_CASES, **JSON_CASES}


@pytest.mark.parametrize("case", STDIN_CASES.values(), ids=STDIN_CASES.keys())
def test_forged_input_reply_is_not_accepted(
    kernel: Kernel, connect: Callable[..., Wire], case: Case
) -> None:
    """A hostile input_reply on stdin never becomes the value input() returns."""
    # jupyter_client's convention: the stdin socket has the shell socket's identity, which is
    # how the kernel routes an input_request to the client whose cell asked.
    identity = os.urandom(8).hex().encode()
    shell = connect(kernel, "shell", identity)
    stdin = connect(kernel, "stdin", identity)
    msg_id = shell.request(
        "execute_request", {"code": "v = input('? '); print('got', v)", "allow_stdin": True}
    )
    try:
        request = stdin.recv()
        assert request["msg_type"] == "input_request"
        assert parent_id(request) == msg_id
        parts = json_parts(new_header("input_reply"), {"value": "forged"}, parent=request["header"])
        stdin.send(case(stdin, parts))
        stdin.request("input_reply", {"value": "genuine"}, parent=request["header"])
        assert shell.reply(msg_id)["content"]["status"] == "ok"
    finally:
        # Whatever failed above, leave the shared kernel idle: a reply with no parent header
        # answers a pending input() (and is ignored if none is pending).
        stdin.request("input_reply", {"value": ""})
    assert stream_text(kernel.until_idle(msg_id)) == "got genuine\n"
    assert_alive(kernel)


# -- replay ------------------------------------------------------------------------------------


def test_replayed_message_runs_once(
    kernel: Kernel, connect: Callable[..., Wire], tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    wire = connect(kernel, "shell")
    msg_id, frames = wire.message("execute_request", {"code": count_code(counter)})
    wire.send(frames)
    wire.send(frames)
    before = sync_shell(wire)
    assert [m["msg_type"] for m in before] == ["execute_reply"]
    assert parent_id(before[0]) == msg_id
    assert counter.read_text() == "ran\n"
    assert_alive(kernel)


@pytest.mark.parametrize(
    "how", ["other_connection", "with_identity_prefix", "on_control", "after_other_messages"]
)
def test_replay_is_dropped_however_it_comes(
    kernel: Kernel, connect: Callable[..., Wire], tmp_path: Path, how: str
) -> None:
    """The same signed frames again, from another socket, with other routing frames, on
    another channel, or after other traffic: the first copy runs, the replay does not."""
    counter = tmp_path / "count"
    wire = connect(kernel, "shell")
    msg_id, frames = wire.message("execute_request", {"code": count_code(counter)})
    wire.send(frames)
    assert [parent_id(m) for m in sync_shell(wire)] == [msg_id]
    if how == "other_connection":
        again = connect(kernel, "shell")
        again.send(frames)
        assert sync_shell(again) == []
    elif how == "with_identity_prefix":
        wire.send([b"", b"someone-else", *frames])
        assert sync_shell(wire) == []
    elif how == "on_control":
        control = connect(kernel, "control")
        control.send(frames)
        # Had it been accepted, control would have answered (execute_request is an error there).
        assert sync_control(control) == []
    else:
        for _ in range(50):
            sync_shell(wire)
        wire.send(frames)
        assert sync_shell(wire) == []
    assert counter.read_text() == "ran\n"
    assert_alive(kernel)


# -- framing that is valid ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix",
    [[b""], [b"", b""], [b"\x00"], [b"x" * 255], [b"hop"] * 100],
    ids=[
        "empty_identity",
        "two_empty_identities",
        "nul_identity",
        "long_identity",
        "a_hundred_routing_frames",
    ],
)
def test_routing_frames_before_the_delimiter_are_echoed(
    kernel: Kernel, connect: Callable[..., Wire], tmp_path: Path, prefix: list[bytes]
) -> None:
    """Frames before ``<IDS|MSG>`` are routing: the message runs and the reply carries them."""
    marker = tmp_path / "ran"
    wire = connect(kernel, "shell")
    msg_id, frames = wire.message("execute_request", {"code": touch_code(marker)}, prefix=prefix)
    wire.send(frames)
    reply = wire.reply(msg_id)
    assert reply["content"]["status"] == "ok"
    assert reply["identities"] == prefix
    assert marker.exists()
    assert sync_shell(wire) == []
    assert_alive(kernel)


@pytest.mark.parametrize(
    "buffers",
    [
        [b""],
        [b"", b"", b""],
        [bytes(range(256)) * 4, os.urandom(1 << 20)],
        [DELIMITER],
        [b"\xff"] * 10_000,
    ],
    ids=["one_empty", "three_empty", "binary_1MiB", "delimiter_as_buffer", "10k_buffers"],
)
def test_execute_request_with_buffers_runs(
    kernel: Kernel, connect: Callable[..., Wire], buffers: list[bytes]
) -> None:
    wire = connect(kernel, "shell")
    msg_id = wire.request(
        "execute_request", {"code": "1+1", "user_expressions": {"v": "1+1"}}, buffers=buffers
    )
    reply = wire.reply(msg_id)
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["user_expressions"]["v"]["data"]["text/plain"] == "2"
    assert_alive(kernel)


@pytest.mark.slow
def test_50mb_content_frame_runs(kernel: Kernel, connect: Callable[..., Wire]) -> None:
    size = 50_000_000
    wire = connect(kernel, "shell")
    msg_id = wire.request(
        "execute_request",
        {
            "code": "x = " + repr("a" * size),
            "silent": True,
            "store_history": False,
            "user_expressions": {"n": "len(x)"},
        },
    )
    reply = wire.reply(msg_id, timeout=90)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert reply["content"]["user_expressions"]["n"]["data"]["text/plain"] == str(size)
    kernel.execute("del x")
    assert_alive(kernel)


# -- content of the wrong shape, correctly signed ----------------------------------------------


def _error(reply: Msg) -> None:
    assert reply["content"]["status"] == "error", reply["content"]
    assert isinstance(reply["content"]["ename"], str)
    assert isinstance(reply["content"]["traceback"], list)


def _request_error(reply: Msg) -> None:
    """A bad request, said so in one line: no traceback of the kernel's own code."""
    _error(reply)
    assert reply["content"]["ename"] == "RequestError", reply["content"]
    assert not any("trikernel" in line for line in reply["content"]["traceback"])


def _sane_completion(code: str) -> Callable[[Msg], None]:
    def check(reply: Msg) -> None:
        c = reply["content"]
        assert c["status"] == "ok", c
        assert 0 <= c["cursor_start"] <= c["cursor_end"] <= len(code)
        assert all(isinstance(m, str) for m in c["matches"])
        assert "import" in c["matches"]

    return check


def _found(reply: Msg) -> None:
    assert reply["content"]["status"] == "ok", reply["content"]
    assert reply["content"]["found"] is True


def _ok(reply: Msg) -> None:
    assert reply["content"]["status"] == "ok", reply["content"]


def _ok_or_error(reply: Msg) -> None:
    assert reply["content"]["status"] in ("ok", "error"), reply["content"]


TYPED_CASES: dict[str, tuple[str, dict[str, Any], Callable[[Msg], None]]] = {
    "execute_code_a_number": ("execute_request", {"code": 5}, _error),
    "execute_code_null": ("execute_request", {"code": None}, _error),
    "execute_code_a_list": ("execute_request", {"code": ["1+1"]}, _error),
    "execute_user_expressions_a_list": (
        "execute_request",
        {"code": "1", "user_expressions": ["1+1"]},
        _error,
    ),
    "execute_user_expression_not_a_string": (
        "execute_request",
        {"code": "1", "user_expressions": {"v": 5}},
        _ok,
    ),
    "complete_cursor_past_the_end": (
        "complete_request",
        {"code": "impo", "cursor_pos": 1000},
        _sane_completion("impo"),
    ),
    "complete_cursor_negative": ("complete_request", {"code": "x", "cursor_pos": -1}, _error),
    "complete_cursor_a_string": ("complete_request", {"code": "x", "cursor_pos": "1"}, _error),
    "complete_cursor_a_float": ("complete_request", {"code": "x", "cursor_pos": 1.5}, _error),
    "complete_code_a_number": ("complete_request", {"code": 1, "cursor_pos": 0}, _error),
    "inspect_cursor_past_the_end": (
        "inspect_request",
        {"code": "print", "cursor_pos": 10**6, "detail_level": 0},
        _found,
    ),
    "inspect_detail_level_negative": (
        "inspect_request",
        {"code": "print", "cursor_pos": 5, "detail_level": -1},
        _error,
    ),
    "inspect_detail_level_a_string": (
        "inspect_request",
        {"code": "print", "cursor_pos": 5, "detail_level": "1"},
        _error,
    ),
    "history_n_a_string": (
        "history_request",
        {"hist_access_type": "tail", "n": "10"},
        _request_error,
    ),
    "history_n_negative": (
        "history_request",
        {"hist_access_type": "tail", "n": -1},
        _request_error,
    ),
    "history_unknown_access_type": ("history_request", {"hist_access_type": "all"}, _request_error),
    "history_range_session_a_word": (
        "history_request",
        {"hist_access_type": "range", "session": "x", "start": 0},
        _request_error,
    ),
    "history_search_pattern_a_number": (
        "history_request",
        {"hist_access_type": "search", "pattern": 5},
        _request_error,
    ),
    "is_complete_code_a_number": ("is_complete_request", {"code": 5}, _error),
    "kernel_info_with_unexpected_content": (
        "kernel_info_request",
        {"unexpected": [1, {"deep": None}]},
        _ok,
    ),
    "unknown_request": ("foo_request", {"x": 1}, _error),
    # A JSON escape for a lone surrogate: valid JSON, but no UTF-8 form. It goes into the
    # execute_input echo, IPython's compiler and its history database.
    "execute_code_with_a_lone_surrogate": (
        "execute_request",
        {"code": "s = '\ud800'"},
        _ok_or_error,
    ),
    "execute_printing_a_lone_surrogate": (
        "execute_request",
        {"code": "print('\\ud800')"},
        _ok,
    ),
    "execute_user_expression_key_a_lone_surrogate": (
        "execute_request",
        {"code": "1", "user_expressions": {"\udfff": "1+1"}},
        _ok,
    ),
}


@pytest.mark.parametrize(
    ("msg_type", "content", "check"), TYPED_CASES.values(), ids=TYPED_CASES.keys()
)
def test_wrong_content_gets_one_sane_reply(
    kernel: Kernel,
    connect: Callable[..., Wire],
    msg_type: str,
    content: dict[str, Any],
    check: Callable[[Msg], None],
) -> None:
    wire = connect(kernel, "shell")
    msg_id = wire.request(msg_type, content)
    reply = wire.reply(msg_id)
    assert reply["msg_type"] == msg_type.removesuffix("_request") + "_reply"
    check(reply)
    assert sync_shell(wire) == []
    assert_alive(kernel)


@pytest.mark.parametrize("channel", ["shell", "control"])
def test_unknown_message_that_is_not_a_request_gets_no_reply(
    kernel: Kernel, connect: Callable[..., Wire], channel: str
) -> None:
    wire = connect(kernel, channel)
    wire.request("foo_bar", {"x": 1})
    sync = sync_shell if channel == "shell" else sync_control
    assert sync(wire) == []
    assert_alive(kernel)


def test_control_answers_every_request_type_without_running_code(
    kernel: Kernel, connect: Callable[..., Wire], tmp_path: Path
) -> None:
    """Shell requests sent on control get an error reply; code sent there never runs."""
    marker = tmp_path / "ran"
    wire = connect(kernel, "control")
    requests: list[tuple[str, dict[str, Any]]] = [
        ("execute_request", {"code": touch_code(marker)}),
        *((msg_type, content) for msg_type, content, _ in TYPED_CASES.values()),
    ]
    for msg_type, content in requests:
        msg_id = wire.request(msg_type, content)
        reply = wire.reply(msg_id)
        assert reply["msg_type"] == msg_type.removesuffix("_request") + "_reply"
        if msg_type == "kernel_info_request":
            assert reply["content"]["status"] == "ok"
        else:
            _error(reply)
    assert sync_control(wire) == []
    assert not marker.exists(), "code sent on control ran"
    assert_alive(kernel)


def test_unknown_subshell_gets_an_error_and_never_runs(
    kernel: Kernel, connect: Callable[..., Wire], tmp_path: Path
) -> None:
    """protocol 5.5: a request for a subshell that does not exist is refused, not run."""
    marker = tmp_path / "ran"
    wire = connect(kernel, "shell")
    header = new_header("execute_request", subshell_id="no-such-subshell")
    wire.send(wire.signed(json_parts(header, {"code": touch_code(marker)})))
    [reply] = sync_shell(wire)
    assert parent_id(reply) == header["msg_id"]
    assert reply["msg_type"] == "execute_reply"
    _error(reply)
    assert not marker.exists()
    assert_alive(kernel)


def test_unknown_subshell_message_that_is_not_a_request_gets_no_reply(
    kernel: Kernel, connect: Callable[..., Wire]
) -> None:
    """Found by these tests: a foo_bar for an unknown subshell got a foo_bar_reply."""
    wire = connect(kernel, "shell")
    header = new_header("foo_bar", subshell_id="no-such-subshell")
    wire.send(wire.signed(json_parts(header, {"x": 1})))
    assert sync_shell(wire) == []
    assert_alive(kernel)


@pytest.mark.parametrize(
    "frames",
    [[b""], [b"\x01\xff\xfe"], [b"\x01" + b"t" * 100_000], [b"\x05", b"x", b""], [b"\x00"]],
    ids=["empty", "subscribe_invalid_utf8", "subscribe_100k_topic", "garbage", "unsubscribe"],
)
def test_garbage_sent_into_iopub(
    kernel: Kernel,
    ctx: Context,
    subscribe: Callable[[Kernel], Subscriber],
    frames: list[bytes],
) -> None:
    """iopub is XPUB: a peer can send it (un)subscriptions and junk; it keeps publishing."""
    info = kernel.km.get_connection_info()
    xsub = ctx.socket(zmq.XSUB)
    xsub.linger = 0
    try:
        xsub.connect(f"tcp://{info['ip']}:{info['iopub_port']}")
        xsub.send_multipart(frames)
        # A new subscriber is welcomed (Subscriber.connect waits for it) and sees a cell.
        iopub = subscribe(kernel)
        msg_id = kernel.kc.execute("print('still publishing')")
        assert stream_of(iopub.until(is_idle_of(msg_id)), msg_id) == "still publishing\n"
    finally:
        xsub.close(linger=0)
    assert_alive(kernel)


# -- regressions: bugs these tests found, since fixed ----------------------------------------


def test_header_that_parses_but_cannot_be_written_again(
    fresh_kernel: Kernel, connect: Callable[..., Wire]
) -> None:
    """A signed header with an extra field nested 1000 deep parses (orjson reads 1024 levels)
    but cannot be written again (orjson writes 255, json ~1000). It used to reach the busy
    status's parent_header and end the kernel; now the header frame is echoed as received."""
    depth = 1000
    wire = connect(fresh_kernel, "shell")
    header = dumps(new_header("kernel_info_request"))
    deep_header = header[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}"
    wire.send(wire.signed([deep_header, b"{}", b"{}", b"{}"]))
    msg_id = wire.request(
        "execute_request", {"code": "1+1", "silent": True, "user_expressions": {"v": "1+1"}}
    )
    # The echo of the deep header may be too deep for this process's json; only the frames
    # of the round trip's reply need to parse.
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert wire.sock.poll(max(0.0, deadline - time.monotonic()) * 1000), "no reply"
        frames = wire.sock.recv_multipart()
        if msg_id.encode() in frames[frames.index(DELIMITER) + 3]:
            reply = parse(frames, wire.key)
            break
    assert reply["content"]["user_expressions"]["v"]["data"]["text/plain"] == "2"
    # Not assert_alive: jupyter_client itself cannot read the statuses that echo this header
    # (its extract_dates recurses past Python's limit), so the check stays on raw sockets.
    assert fresh_kernel.km.is_alive()
    assert sync_shell(connect(fresh_kernel, "shell")) == []


# A flood on one socket must not starve the others: every FrameSocket.recv/send is a trio
# checkpoint (channels/transport.py), so serve_router and the send loops take turns. Before
# 97beb71 they returned without one while the socket was ready, and control went unanswered
# for 5-16 s in the two tests below. The README promises milliseconds; a second is far beyond.
CONTROL_LATENCY = 1.0


@pytest.mark.slow
def test_control_answers_while_another_client_floods_shell(
    fresh_kernel: Kernel, connect: Callable[..., Wire]
) -> None:
    flooder = connect(fresh_kernel, "shell")
    control = connect(fresh_kernel, "control")
    sync_control(control)
    for _ in range(20_000):
        flooder.request("is_complete_request", {"code": "x"})
    for _ in range(5):
        control.reply(control.request("kernel_info_request"), timeout=CONTROL_LATENCY)


@pytest.mark.slow
def test_control_answers_during_an_unauthenticated_flood(
    fresh_kernel: Kernel, connect: Callable[..., Wire], ctx: Context
) -> None:
    """Someone without the key floods shell with garbage; control must keep answering."""
    info = fresh_kernel.km.get_connection_info()
    garbage = [DELIMITER, b"0" * 64, b"{}", b"{}", b"{}", os.urandom(16 * 1024)]
    stop = threading.Event()
    flowing = threading.Event()

    def flood() -> None:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndtimeo = 100
        sock.connect(f"tcp://{info['ip']}:{info['shell_port']}")
        try:
            sent = 0
            while not stop.is_set():
                try:
                    sock.send_multipart(garbage, copy=False)
                except zmq.Again:
                    continue
                sent += 1
                if sent == 2000:
                    flowing.set()
        finally:
            sock.close(linger=0)

    control = connect(fresh_kernel, "control")
    sync_control(control)
    flooder = threading.Thread(target=flood, name="flooder")
    flooder.start()
    try:
        assert flowing.wait(TIMEOUT), "the flood did not start"
        for _ in range(10):
            control.reply(control.request("kernel_info_request"), timeout=CONTROL_LATENCY)
    finally:
        stop.set()
        flooder.join(TIMEOUT)
    assert_alive(fresh_kernel)


@pytest.mark.slow
@pytest.mark.parametrize("channel", ["shell", "control"])
def test_pipelined_requests_are_all_answered(
    fresh_kernel: Kernel, connect: Callable[..., Wire], channel: str
) -> None:
    """A client that keeps a few requests in flight (a frontend sending execute and complete,
    "run all") gets every reply.

    Regression (97beb71 to 78eb36d): the raw send fast path consumed the edge of ZeroMQ's
    descriptor that zmq-anyio's pending receive waited on, and a request that arrived
    meanwhile was never read. That struck within ~2,000 round trips (~2 s) in each of 32
    tries; 8 s of round trips without it is a pass."""
    depth, budget = 3, 8.0
    wire = connect(fresh_kernel, channel)
    msg_type = "is_complete_request" if channel == "shell" else "kernel_info_request"
    # Made in advance, so that the client answers each reply at once: the next request must
    # arrive while the kernel is sending, which is when the wakeup is lost.
    requests = [wire.message(msg_type, {"code": "x"}) for _ in range(10_000)]
    in_flight: set[str] = set()
    for msg_id, frames in requests[:depth]:
        wire.send(frames)
        in_flight.add(msg_id)
    deadline = time.monotonic() + budget
    for n, (msg_id, frames) in enumerate(requests[depth:]):
        if time.monotonic() > deadline:
            break
        if not wire.sock.poll(5000):
            raise AssertionError(f"{channel}: no reply for 5 s after {n} round trips")
        # Control requests run as tasks of their own: their replies may come in any order.
        in_flight.remove(parent_id(wire.recv()) or "")
        wire.send(frames)
        in_flight.add(msg_id)
    while in_flight:
        in_flight.remove(parent_id(wire.recv()) or "")


# -- a client that vanishes --------------------------------------------------------------------


def test_input_without_a_connected_stdin_socket_fails_at_once(
    kernel: Kernel, connect: Callable[..., Wire]
) -> None:
    """A client that allows stdin but has no stdin socket: ``input()`` raises EOFError, as on a
    closed stdin, instead of waiting for ever for a request ZeroMQ dropped (ROUTER_MANDATORY
    makes the drop an error the kernel sees)."""
    shell = connect(kernel, "shell")
    code = "try:\n    input('? ')\nexcept EOFError as e:\n    print('EOF:', e)"
    msg_id = shell.request("execute_request", {"code": code, "allow_stdin": True})
    assert shell.reply(msg_id)["content"]["status"] == "ok"
    assert stream_text(kernel.until_idle(msg_id)) == (
        "EOF: no frontend is connected to the kernel's stdin channel\n"
    )
    assert_alive(kernel)


@pytest.mark.parametrize("state", ["idle", "while_a_cell_blocks"])
def test_a_channel_that_cannot_go_on_ends_the_kernel_with_its_reason(
    tmp_path: Path, run_kernel: RunKernel, ctx: Context, state: str
) -> None:
    """A channel task that fails ends the kernel at once, with the reason in its log: never a
    process that lives on unreachable (before, a cell blocking the main thread kept it so).

    The fault is injected from a cell: the shell's hand-off to the main loop is broken, so the
    next shell request makes ``serve_shell`` fail."""
    path = tmp_path / "kernel.json"
    proc, stderr = run_kernel(path, "--log_level=INFO")
    stderr.wait_for("wrote connection file")
    info = json.loads(path.read_text())
    iopub = Subscriber.connect(ctx, info)
    shell = Wire.connect(ctx, info, "shell")
    try:
        code = "get_ipython().kernel._shell_inbox = None\nprint('broken')"
        if state == "while_a_cell_blocks":
            code += "\nimport time\ntime.sleep(60)"
        cell = shell.request("execute_request", {"code": code})
        iopub.until(lambda m: m["msg_type"] == "stream" and parent_id(m) == cell)
        shell.request("execute_request", {"code": "1+1"})
        assert proc.wait(timeout=10) != 0
        line = stderr.wait_for("the io loop failed, the kernel stops")
        assert "AttributeError: 'NoneType' object has no attribute 'put'" in line
    finally:
        iopub.close()
        shell.close()


@pytest.mark.parametrize("when", ["after_cell_started", "right_after_sending"])
def test_client_that_vanishes_mid_request(
    kernel: Kernel, connect: Callable[..., Wire], ctx: Context, when: str
) -> None:
    info = kernel.km.get_connection_info()
    gone = Wire.connect(ctx, info, "shell")
    msg_id = gone.request("execute_request", {"code": "import time; time.sleep(1); print('done')"})
    if when == "after_cell_started":
        kernel.started(msg_id)
    gone.close()  # linger 0: whatever the kernel sends it now goes nowhere
    newcomer = connect(kernel, "shell")
    start = time.monotonic()
    # Served after the vanished client's cell (if it arrived), within the timeout.
    assert sync_shell(newcomer) == []
    assert time.monotonic() - start < 10
    if when == "after_cell_started":
        assert stream_text(kernel.until_idle(msg_id)) == "done\n"
    assert_alive(kernel)


# -- load --------------------------------------------------------------------------------------

FLOOD = 100_000
MEMORY_GROWTH = 64  # MiB the kernel may grow during the flood (it grew ~6 in tries here)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_control_flood_while_a_cell_prints(
    fresh_kernel: Kernel,
    connect: Callable[..., Wire],
    subscribe: Callable[[Kernel], Subscriber],
    tmp_path: Path,
) -> None:
    """100,000 control requests sent without waiting while a cell prints: every request gets
    exactly one reply, every printed line arrives once and in order, and the kernel's memory
    stays flat (each reply and status is sent as it is made)."""
    pid = fresh_kernel.km.provisioner.process.pid  # type: ignore[union-attr]
    iopub = subscribe(fresh_kernel)
    shell = connect(fresh_kernel, "shell")
    control = connect(fresh_kernel, "control")
    stop = tmp_path / "stop"
    # Prints, paced, for as long as the flood lasts, then says how many lines it printed.
    code = (
        "import os, time\ni = 0\n"
        f"while not os.path.exists({str(stop)!r}):\n"
        "    print(i)\n"
        "    i += 1\n"
        "    if i % 20 == 0: time.sleep(0.005)\n"
        "print(f'END {i}')"
    )
    cell = shell.request("execute_request", {"code": code})
    first = iopub.until(lambda m: m["msg_type"] == "stream" and parent_id(m) == cell)
    before = rss_mib(pid)
    peak = before
    # Send without waiting for replies; read what has come back whenever the socket is busy.
    sent: list[str] = []
    replies: Counter[str] = Counter()
    poller = zmq.Poller()
    poller.register(control.sock, zmq.POLLIN | zmq.POLLOUT)
    progress = time.monotonic()
    received = 0  # replies.total() sums every count: once per reply made the loop O(n^2)
    while len(sent) < FLOOD or received < FLOOD:
        assert time.monotonic() - progress < TIMEOUT, (
            f"flood stalled: sent {len(sent)}, got {received} replies, none for {TIMEOUT} s"
        )
        events = dict(poller.poll(1000)).get(control.sock, 0)
        if events & zmq.POLLIN:
            msg = control.recv()
            assert msg["msg_type"] == "kernel_info_reply"
            replies[parent_id(msg) or ""] += 1
            received += 1
            progress = time.monotonic()
            if received % 10_000 == 0:
                peak = max(peak, rss_mib(pid))
        elif events & zmq.POLLOUT and len(sent) < FLOOD:
            sent.append(control.request("kernel_info_request"))
            progress = time.monotonic()
        if len(sent) == FLOOD:
            poller.modify(control.sock, zmq.POLLIN)
    stop.touch()
    assert sync_control(control) == [], "a request was answered twice"
    assert set(replies) == set(sent)
    assert max(replies.values()) == 1
    assert shell.reply(cell, timeout=60)["content"]["status"] == "ok"
    rest = iopub.until(is_idle_of(cell), timeout=60)
    *lines, end = stream_of([*first, *rest], cell).splitlines()
    assert end.startswith("END "), end
    assert lines == [str(i) for i in range(int(end.removeprefix("END ")))]
    print(f"{FLOOD} replies while {len(lines)} lines printed; RSS {before:.0f} -> {peak:.0f} MiB")
    assert peak - before < MEMORY_GROWTH
    # Alive and well, checked on the raw sockets: jupyter_client's own client would first
    # have to parse the 300,000 messages of the flood waiting on its iopub socket.
    assert fresh_kernel.km.is_alive()
    check = shell.request("execute_request", {"code": "1+1"})
    assert shell.reply(check)["content"]["status"] == "ok"
    [result] = outputs(iopub.until(is_idle_of(check)), "execute_result")
    assert result["content"]["data"]["text/plain"] == "2"


# -- output at shutdown ------------------------------------------------------------------------

SHUTDOWN_LINES = 1_000_000


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after_first_output", "immediately", "after_the_reply"])
def test_no_output_lost_when_shutdown_follows_printing(
    fresh_kernel: Kernel,
    connect: Callable[..., Wire],
    subscribe: Callable[[Kernel], Subscriber],
    when: str,
) -> None:
    """Lines printed before shutdown all arrive, in order, before the shutdown_reply on iopub.

    The shutdown stops the cell where it is; the cell's ``finally`` reports how far it got, so
    the test knows which lines were printed. Sent "immediately", the shutdown may win the race
    and the cell never starts (it is aborted: no output at all, which is fine); sent after the
    first output, the cell is surely printing. Sent as soon as the execute_reply arrives on
    shell (the client has not read iopub yet), all 1,000,000 lines must come first.
    """
    iopub = subscribe(fresh_kernel)
    shell = connect(fresh_kernel, "shell")
    control = connect(fresh_kernel, "control")
    code = (
        "import sys\n"
        "done = 0\n"
        "try:\n"
        f"    for i in range({SHUTDOWN_LINES}):\n"
        "        sys.stdout.write(f'{i}\\n')\n"
        "        done = i + 1\n"
        "finally:\n"
        "    sys.stdout.write(f'END {done}\\n')\n"
    )
    cell = shell.request("execute_request", {"code": code})
    seen: list[Msg] = []
    if when == "after_first_output":
        seen += iopub.until(lambda m: m["msg_type"] == "stream" and parent_id(m) == cell)
    elif when == "after_the_reply":
        assert shell.reply(cell, timeout=60)["content"]["status"] == "ok"
    shutdown = control.request("shutdown_request", {"restart": False})
    seen += iopub.until(lambda m: m["msg_type"] == "shutdown_reply", timeout=30)
    assert parent_id(seen[-1]) == shutdown
    assert control.reply(shutdown)["content"] == {"status": "ok", "restart": False}
    printed = stream_of(seen, cell).splitlines()
    if printed or when == "after_first_output":
        *lines, end = printed
        assert end.startswith("END "), f"the cell's last line did not arrive: {end[:80]!r}"
        done = int(end.removeprefix("END "))
        # A stop between the write and ``done = i + 1`` leaves one more line than ``done`` says.
        assert len(lines) in (done, done + 1), (len(lines), done)
        assert lines == [str(i) for i in range(len(lines))], "a line was lost or reordered"
        print(f"shutdown ({when}) stopped the cell after {len(lines)} of {SHUTDOWN_LINES} lines")
    if when == "after_the_reply":
        assert len(printed) == SHUTDOWN_LINES + 1
    fresh_kernel.wait_exit()


@pytest.mark.slow
def test_nothing_queued_runs_after_shutdown(
    fresh_kernel: Kernel,
    connect: Callable[..., Wire],
    subscribe: Callable[[Kernel], Subscriber],
    tmp_path: Path,
) -> None:
    """A cell that handles Ctrl-C survives the shutdown's interrupt; the cell queued behind it
    must not start once the kernel has begun to shut down. (Before 97beb71 it ran after the
    shutdown_reply, and the process exited only when it ended.)"""
    marker = tmp_path / "queued-ran"
    iopub = subscribe(fresh_kernel)
    shell = connect(fresh_kernel, "shell")
    running = shell.request(
        "execute_request",
        {
            "code": "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
            "    print('stopped')"
        },
    )
    iopub.until(lambda m: m["msg_type"] == "execute_input" and parent_id(m) == running)
    queued = shell.request(
        "execute_request",
        {"code": f"{touch_code(marker)}\nprint('queued ran')\nimport time\ntime.sleep(10)"},
    )
    # On the same socket, so the io loop has read the queued cell before the shutdown.
    shutdown = shell.request("shutdown_request", {"restart": False})
    seen = iopub.until(lambda m: m["msg_type"] == "shutdown_reply", timeout=30)
    assert stream_of(seen, running) == "stopped\n"
    fresh_kernel.wait_exit()
    assert parent_id(seen[-1]) == shutdown
    assert not marker.exists(), "a cell queued before the shutdown ran after it began"
    assert stream_of(seen, queued) == ""


# -- security defaults -------------------------------------------------------------------------


def _client_runs_one_plus_one(path: Path) -> None:
    kc = BlockingKernelClient(connection_file=str(path))
    kc.load_connection_file()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=TIMEOUT)
        reply = kc.execute_interactive("1+1", timeout=TIMEOUT, output_hook=lambda m: None)
        assert reply["content"]["status"] == "ok"
        kc.shutdown()
    finally:
        kc.stop_channels()
        kc.context.destroy(linger=0)


def _listening_addresses(ports: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket on ``ports``, from /proc/net (Linux)."""
    found: set[tuple[str, int]] = set()
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if state == "0A" and int(port, 16) in ports:  # 0A: TCP_LISTEN
                # IPv4 addresses are written as one little-endian 32-bit hex number.
                ip = ".".join(str(b) for b in reversed(bytes.fromhex(address)))
                found.add((ip if table == "tcp" else address, int(port, 16)))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
def test_kernel_that_writes_its_connection_file_listens_on_loopback_only(
    tmp_path: Path, run_kernel: RunKernel
) -> None:
    path = tmp_path / "kernel.json"
    proc, stderr = run_kernel(path, "--log_level=INFO")
    # Logged once the file is written, which is after every socket is bound.
    stderr.wait_for("wrote connection file")
    info = json.loads(path.read_text())
    assert info["ip"] == "127.0.0.1"
    ports = {info[f"{ch}_port"] for ch in ("shell", "iopub", "stdin", "control", "hb")}
    listening = _listening_addresses(ports)
    assert {port for _, port in listening} == ports
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
    _client_runs_one_plus_one(path)
    proc.wait(timeout=TIMEOUT)


@pytest.mark.slow
def test_empty_key_starts_with_a_loud_warning_and_serves(
    tmp_path: Path, run_kernel: RunKernel
) -> None:
    path = tmp_path / "kernel.json"
    write_connection_file(str(path), ip="127.0.0.1", key=b"")
    assert json.loads(path.read_text())["key"] == ""
    proc, stderr = run_kernel(path)
    warning = stderr.wait_for("connection key is empty")
    assert "WARNING" in warning
    assert "anyone who can reach the kernel's ports can run code" in warning
    _client_runs_one_plus_one(path)
    proc.wait(timeout=TIMEOUT)
