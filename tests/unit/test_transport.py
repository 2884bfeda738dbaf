"""FrameSocket's turns: a burst of ready calls shares one turn of the loop, a flood still yields.

Each call that finds the socket ready is a cancellation point, and a schedule point once the
socket's last one was ``_YIELD_EVERY`` seconds ago (``trikernel/channels/transport.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
import trio

from trikernel.channels.transport import _YIELD_EVERY, FrameSocket


class _Raw:
    """A socket that is always ready; each send takes ``seconds`` of the thread's time."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.sent = 0

    def send_multipart(self, frames: Sequence[bytes], flags: int = 0, copy: bool = True) -> None:
        if self.seconds:
            time.sleep(self.seconds)
        self.sent += 1

    def recv_multipart(self, flags: int = 0) -> list[bytes]:
        return [b"frame"]


class _Anyio:
    def get(self, option: int) -> int:
        return 0


def _socket(raw: _Raw) -> FrameSocket:
    return FrameSocket(_Anyio(), raw, 0)  # type: ignore[arg-type]


async def _turns_of_others(work: Any) -> int:
    """How often another task ran while ``work()`` ran."""
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            await trio.lowlevel.checkpoint()
            turns += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()  # let it start
        turns = 0
        await work()
        nursery.cancel_scope.cancel()
    return turns


async def test_a_burst_of_ready_sends_takes_one_turn_of_the_loop() -> None:
    sock = _socket(_Raw())

    async def burst() -> None:
        for _ in range(20):
            await sock.send([b"x"])

    assert await _turns_of_others(burst) <= 2


async def test_a_long_flood_still_lets_other_tasks_run() -> None:
    raw = _Raw(seconds=_YIELD_EVERY / 2)
    sock = _socket(raw)

    async def flood() -> None:
        for _ in range(40):
            await sock.recv()
            await sock.send([b"x"])

    # 40 rounds of at least 2 half-intervals: at least ~40 intervals, a turn each.
    assert await _turns_of_others(flood) >= 20


async def test_a_ready_call_is_still_a_cancellation_point() -> None:
    sock = _socket(_Raw())
    await sock.send([b"x"])  # the first call yields; the next one would not
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await sock.send([b"x"])
