"""Descriptor captures: text written below Python (``os.write``, C, child processes).

Scratch descriptors stand in for 1 and 2, and an object that records writes for the iopub queue.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from trikernel.streams import FdCapture, FdCaptures


class _Queue:
    """What a capture calls on the iopub queue: ``write``."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, Any]] = []

    def write(self, name: str, text: str, parent: Any, *, wait: bool = True) -> None:
        self.writes.append((name, text, parent))


@pytest.fixture
def scratch_fds() -> Iterator[list[int]]:
    fds = [os.open(os.devnull, os.O_WRONLY) for _ in range(2)]
    yield fds
    for fd in fds:
        os.close(fd)


def _captures(fds: list[int], queue: _Queue) -> FdCaptures:
    return FdCaptures(
        [
            FdCapture(fds[0], "stdout", queue, lambda: "cell"),  # type: ignore[arg-type]
            FdCapture(fds[1], "stderr", queue, lambda: "cell"),  # type: ignore[arg-type]
        ]
    )


def test_drain_queues_what_each_pipe_holds_and_nothing_else(scratch_fds: list[int]) -> None:
    queue = _Queue()
    captures = _captures(scratch_fds, queue)
    try:
        captures.drain()
        assert queue.writes == []
        os.write(scratch_fds[0], b"one\n")
        os.write(scratch_fds[0], b"two\n")
        os.write(scratch_fds[1], b"err\n")
        captures.drain()
        assert sorted(queue.writes) == [
            ("stderr", "err\n", "cell"),
            ("stdout", "one\ntwo\n", "cell"),
        ]
        queue.writes.clear()
        captures.drain()
        assert queue.writes == []
    finally:
        captures.restore()


def test_restore_points_the_descriptors_back(scratch_fds: list[int]) -> None:
    before = [os.fstat(fd).st_rdev for fd in scratch_fds]
    captures = _captures(scratch_fds, _Queue())
    assert [os.fstat(fd).st_rdev for fd in scratch_fds] != before  # pipes now
    captures.restore()
    assert [os.fstat(fd).st_rdev for fd in scratch_fds] == before
    assert all(capture.read_end == -1 for capture in captures.captures)


class _HeldQueue(_Queue):
    """Its first write (the io loop's drain, in a thread here) waits until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, name: str, text: str, parent: Any, *, wait: bool = True) -> None:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(10)
        super().write(name, text, parent, wait=wait)


def test_drain_waits_for_text_another_thread_has_read_but_not_queued(
    scratch_fds: list[int],
) -> None:
    # The io loop has read the pipe (it is empty now) and is queueing the text when the main
    # thread drains before the request's idle: the idle must come after that text.
    queue = _HeldQueue()
    captures = _captures(scratch_fds, queue)
    try:
        os.write(scratch_fds[1], b"err\n")
        io_loop = threading.Thread(target=captures.captures[1].drain)
        io_loop.start()
        assert queue.entered.wait(10)

        def main_thread() -> None:
            captures.drain()
            queue.writes.append(("status", "idle", "cell"))

        main = threading.Thread(target=main_thread)
        main.start()
        main.join(0.2)
        # Given 0.2 s, the main thread has not queued its idle: it waits for the io loop's text.
        assert main.is_alive()
        assert queue.writes == []
        queue.release.set()
        io_loop.join(10)
        main.join(10)
        assert queue.writes == [("stderr", "err\n", "cell"), ("status", "idle", "cell")]
    finally:
        queue.release.set()  # a failed assertion above must not leave the thread waiting
        captures.restore()
