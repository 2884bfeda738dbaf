"""``sys.stdout`` and ``sys.stderr`` while the kernel runs: text goes to iopub, never blocks.

Each write is attributed to the request whose context it is written in (a contextvar, which
trio copies into tasks a cell spawns), falling back to the latest request for writes from
threads and callbacks that carry no context.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable

from .channels import IOPubQueue
from .protocol import Message

__all__ = ["OutStream"]


class OutStream(io.TextIOBase):
    """A text stream whose writes become ``stream`` messages (batched by the iopub queue)."""

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
        self._queue.write(self.name, s, self._parent())
        return len(s)

    def writelines(self, lines: Iterable[str]) -> None:  # type: ignore[override]
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._queue.flush()
