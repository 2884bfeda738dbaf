"""The debugger's pure parts: the cell-name hash and DAP's framing."""

from __future__ import annotations

import json
import re

import pytest

from trikernel.debugger import _take_message, cell_path, murmur2


def test_murmur2_matches_the_hash_jupyterlab_names_cells_with() -> None:
    # The example of JupyterLab's murmurhash2 package (UTF-8, a 4-byte emoji, a 3-byte tail).
    assert murmur2("Hi there 👋".encode(), 12345) == 1907773090
    assert murmur2(b"", 0) == 0


@pytest.mark.parametrize("tail", range(4))
def test_murmur2_covers_every_tail_length(tail: int) -> None:
    data = b"abcd" * 3 + b"xyz"[:tail]
    assert 0 <= murmur2(data, 7) < 2**32
    assert murmur2(data, 7) != murmur2(data + b"!", 7)


def test_cell_path_depends_on_the_code_only() -> None:
    assert cell_path("x = 1\n") == cell_path("x = 1\n")
    assert cell_path("x = 1\n") != cell_path("x = 2\n")
    assert cell_path("x = '\ud800'") != cell_path("x = 1\n")  # a lone surrogate hashes too


def _frame(message: dict[str, object]) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def test_dap_messages_are_taken_whole_and_in_order() -> None:
    one, two = {"seq": 1, "type": "event"}, {"seq": 2, "type": "response"}
    data = _frame(one) + _frame(two)
    for cut in range(len(data)):
        # However the bytes arrive, each message comes out once, whole, in order.
        got, buffer = [], b""
        for piece in (data[:cut], data[cut:]):
            buffer += piece
            while True:
                message, buffer = _take_message(buffer)
                if message is None:
                    break
                got.append(message)
        assert got == [one, two]
        assert buffer == b""


def test_a_dap_message_without_length_is_refused() -> None:
    with pytest.raises(ValueError, match="Content-Length"):
        _take_message(b"X-Other: 1\r\n\r\n{}")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"Content-Length: ten\r\n\r\n{}", "bad Content-Length: b' ten'"),
        (b"Content-Length: 3\r\n\r\n{x}", "not JSON"),
        (b"Content-Length: 2\r\n\r\n[]", "not an object"),
    ],
)
def test_a_dap_frame_that_is_not_dap_says_why(data: bytes, reason: str) -> None:
    # The reader logs this reason when it drops the connection.
    with pytest.raises(ValueError, match=re.escape(reason)):
        _take_message(data)
