"""``sys.stdout`` and ``sys.stderr`` while the kernel runs: text goes to iopub.

A write returns at once unless the iopub queue is full (frontends not keeping up, see
:mod:`trikernel.channels.iopub`); then it waits, as a write to a full pipe does.

Each write is attributed to the request whose context it is written in (a contextvar, which
trio copies into tasks a cell spawns), falling back to the latest request for writes from
threads and callbacks that carry no context.

A process forked from the kernel (``multiprocessing`` with its "fork" start method, Linux's
default before Python 3.14) has a copy of these streams but no io loop to send what they
queue. There they write whole lines to file descriptors 1 and 2 instead, which lead to the
kernel's descriptor captures: a worker's ``print`` reaches the cell that started it.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import io
import os
import select
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence

import trio

from .channels import IOPubQueue
from .protocol import Message

__all__ = ["FdCapture", "FdCaptures", "OutStream"]


class OutStream(io.TextIOBase):
    """A text stream whose writes become ``stream`` messages (batched by the iopub queue).

    In a forked child, writes go to the descriptor ``fileno`` instead, a line at a time (one
    ``write(2)`` per line, so lines of workers writing at once do not mix), or nowhere if
    there is none.
    """

    def __init__(
        self,
        name: str,
        queue: IOPubQueue,
        parent: Callable[[], Message | None],
        fileno: int | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self._queue = queue
        self._parent = parent
        self._fileno = fileno
        self._forked: list[str] | None = None
        """Set in a forked child: the text of its unfinished line."""
        _in_kernel.add(self)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "strict"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        """The process's original file descriptor (for faulthandler and the like)."""
        if self._fileno is None:
            raise io.UnsupportedOperation("fileno")
        return self._fileno

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if self._forked is None:
            self._queue.write(self.name, s, self._parent())
        elif s:
            self._forked.append(s)
            if "\n" in s:
                text = "".join(self._forked)
                end = text.rindex("\n") + 1
                self._forked[:] = [text[end:]] if end < len(text) else []
                self._write_fd(text[:end])
        return len(s)

    def writelines(self, lines: Iterable[str]) -> None:  # type: ignore[override]
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._forked is None:
            self._queue.flush()
        elif self._forked:
            text = "".join(self._forked)
            self._forked.clear()
            self._write_fd(text)

    def _write_fd(self, text: str) -> None:
        if self._fileno is None:
            return
        data = text.encode("utf-8", "replace")
        while data:
            data = data[os.write(self._fileno, data) :]

    def _after_fork(self) -> None:
        self._forked = []


_in_kernel: weakref.WeakSet[OutStream | FdCapture] = weakref.WeakSet()
"""What changes in a forked child (see the module's docstring)."""


def _after_fork_in_child() -> None:
    for obj in list(_in_kernel):
        obj._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class FdCapture:
    """Output written to a file descriptor (C ``printf``, ``os.write(1, ...)``, subprocesses).

    The descriptor is pointed at a pipe; the io loop reads the pipe as it fills
    (:meth:`serve`) and the main thread drains it before a request's ``idle`` and before what a
    cell shows (:meth:`drain`, through ``Kernel.flush_output``), so text written at the
    descriptor level reaches the same cell as ``print`` does, in its place. Both readers take
    one lock around read-and-queue, which keeps the text in order.

    The pipe is made as large as the OS allows (1 MiB on Linux by default): a C extension that
    writes while holding the GIL would block on a full pipe, and the io loop needs the GIL to
    empty it.
    """

    def __init__(
        self, fd: int, name: str, queue: IOPubQueue, parent: Callable[[], Message | None]
    ) -> None:
        self.fd = fd
        self.name = name
        self._queue = queue
        self._parent = parent
        self._lock = threading.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.saved = os.dup(fd)
        read_end, write_end = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20)
        os.set_blocking(read_end, False)
        os.dup2(write_end, fd)
        os.close(write_end)
        self._read_end = read_end
        self._forked = False
        """Set in a forked child: it leaves the pipe to the kernel, which reads it."""
        _in_kernel.add(self)

    def _after_fork(self) -> None:
        self._forked = True

    @property
    def read_end(self) -> int:
        """The pipe's read end (-1 once restored)."""
        return self._read_end

    def drain(self) -> None:
        """Queue whatever the pipe holds now (any thread; never blocks)."""
        if self._forked:
            return
        with self._lock:
            chunks = []
            while True:
                try:
                    data = os.read(self._read_end, 1 << 16)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                chunks.append(data)
            if chunks:
                # Never waits for room: the io loop drains here too, and it is what makes room.
                text = self._decoder.decode(b"".join(chunks))
                self._queue.write(self.name, text, self._parent(), wait=False)

    def settle(self) -> None:
        """Return once a drain in progress elsewhere has queued what it read (any thread)."""
        if self._forked:  # the lock may have been held by another thread at the fork
            return
        with self._lock:
            pass

    async def serve(self) -> None:
        """Read the pipe as it fills, until the descriptor is restored (io loop)."""
        while self._read_end >= 0:
            try:
                await trio.lowlevel.wait_readable(self._read_end)
            except (OSError, trio.ClosedResourceError):
                return
            self.drain()
            # While the queue is full the pipe is left to fill, and then its writer waits.
            await self._queue.wait_for_room()

    def restore(self) -> None:
        """Point the descriptor back where it was (after the io loop ended: nobody reads)."""
        os.dup2(self.saved, self.fd)
        read_end, self._read_end = self._read_end, -1
        os.close(read_end)
        os.close(self.saved)


class FdCaptures:
    """The kernel's descriptor captures (stdout's and stderr's), drained together.

    Draining looks at every pipe with one ``poll(2)`` and reads only from a pipe that holds
    something. Every system call lets the io thread take the GIL, and getting it back costs the
    main thread more than the call itself: a read per pipe per request was about a tenth of the
    kernel's CPU time per cell in the pipelined benchmark, and one poll costs a quarter of that.
    """

    def __init__(self, captures: Sequence[FdCapture]) -> None:
        self.captures = list(captures)
        self._by_fd = {capture.read_end: capture for capture in self.captures}
        self._poll = select.poll()
        for fd in self._by_fd:
            self._poll.register(fd, select.POLLIN)

    def drain(self) -> None:
        """Queue whatever the pipes hold now (one thread at a time).

        A pipe that looks empty may be empty because the io loop has just read it and not yet
        queued the text: that capture's lock is taken too, so the text is queued before
        anything this thread queues next (the request's idle).
        """
        ready = {fd for fd, _ in self._poll.poll(0)}
        for fd, capture in self._by_fd.items():
            if fd in ready:
                capture.drain()
            else:
                capture.settle()

    def restore(self) -> None:
        """Point every descriptor back where it was (see :meth:`FdCapture.restore`)."""
        for fd in self._by_fd:
            self._poll.unregister(fd)
        self._by_fd.clear()
        for capture in self.captures:
            capture.restore()
