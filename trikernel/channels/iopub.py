"""The iopub channel: everything the kernel broadcasts, in the order it was made.

Invariants:
- :class:`IOPubQueue` is the only way to publish. Its methods are safe from any thread and
  never block: user code printing on the main thread never waits for a socket.
- Order is kept across kinds: text printed before a ``display()`` or a status message is sent
  before it, because every message enters one FIFO and pending text is sealed into a
  ``stream`` message when anything else is published.
- Text is batched: consecutive writes to the same stream for the same request become one
  ``stream`` message, sent when anything else is published, when ``flush()`` is called, when
  ``max_batch_bytes`` are waiting, or ``flush_interval`` after the first unsent write (two
  intervals if the text stops mid-line, so a printed line is rarely cut in two).
- Nothing is dropped by the queue. ZeroMQ's send high-water mark is disabled on this socket
  (``sndhwm=0``) so that a slow subscriber delays nothing and loses nothing; memory is bounded
  by what subscribers have not yet read.
- Every new subscription (XPUB_VERBOSE) gets an ``iopub_welcome`` (protocol 5.4, JEP 65), so a
  client knows when it can stop waiting to be connected.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import NoReturn

import attrs
import trio
import zmq

from ..protocol import ConnectionInfo, Message, Session
from .transport import FrameSocket, SentMarker, open_socket

__all__ = ["IOPubQueue", "serve_iopub"]

log = logging.getLogger("trikernel")


@attrs.define(eq=False)
class _Text:
    """Unsent text for one stream of one request; grows until sealed."""

    name: str
    parent: Message | None
    parts: list[str]


@attrs.define(eq=False)
class IOPubQueue:
    """Messages and stream text waiting for the iopub socket (see the module's invariants).

    Args:
        session: makes the ``stream`` messages.
        token: the io loop's token (the consumer's loop).
        flush_interval: seconds text may wait.
        max_batch_bytes: send without waiting once this much text waits.
    """

    session: Session
    token: trio.lowlevel.TrioToken
    flush_interval: float = 0.02
    max_batch_bytes: int = 1 << 20
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _items: deque[Message | _Text | SentMarker] = attrs.field(init=False, factory=deque)
    _text_bytes: int = attrs.field(init=False, default=0)
    _woken: bool = attrs.field(init=False, default=False)
    _urgent: bool = attrs.field(init=False, default=False)
    _event: trio.Event | None = attrs.field(init=False, default=None)

    def publish(self, msg: Message) -> None:
        """Queue ``msg`` after everything queued before it; send as soon as possible."""
        with self._lock:
            self._items.append(msg)
            wake = self._mark(urgent=True)
        if wake:
            self._post_wake()

    def write(self, name: str, text: str, parent: Message | None) -> None:
        """Queue ``text`` for stream ``name`` (``stdout``/``stderr``), attributed to ``parent``."""
        if not text:
            return
        with self._lock:
            last = self._items[-1] if self._items else None
            if isinstance(last, _Text) and last.name == name and last.parent is parent:
                last.parts.append(text)
            else:
                self._items.append(_Text(name, parent, [text]))
            self._text_bytes += len(text)
            wake = self._mark(urgent=self._text_bytes >= self.max_batch_bytes)
        if wake:
            self._post_wake()

    def flush(self) -> None:
        """Send waiting text now instead of at the end of the flush interval."""
        with self._lock:
            wake = bool(self._items) and self._mark(urgent=True)
        if wake:
            self._post_wake()

    async def wait_sent(self) -> None:
        """Wait until everything queued so far was handed to ZeroMQ (io loop only)."""
        marker = SentMarker()
        with self._lock:
            self._items.append(marker)
            wake = self._mark(urgent=True)
        if wake:
            self._wake()
        await marker.event.wait()

    def _mark(self, *, urgent: bool) -> bool:
        """Note new work (lock held); return whether the consumer must be woken."""
        wake = False
        if not self._woken:
            self._woken = True
            wake = True
        if urgent and not self._urgent:
            self._urgent = True
            wake = True
        return wake

    def _post_wake(self) -> None:
        try:
            self.token.run_sync_soon(self._wake)
        except trio.RunFinishedError:  # the io loop ended (shutdown): nothing more is sent
            pass

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()

    def _ends_line(self) -> bool:
        with self._lock:
            last = self._items[-1] if self._items else None
            return not isinstance(last, _Text) or last.parts[-1].endswith("\n")

    def _take(self) -> list[Message | _Text | SentMarker]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._text_bytes = 0
            self._woken = False
            self._urgent = False
        return items

    async def get_batch(self) -> list[Message | SentMarker]:
        """Wait for work by the rules above; return it with text made into messages."""
        while True:
            self._event = trio.Event()
            with self._lock:
                has_items = bool(self._items)
                urgent = self._urgent
            if not has_items:
                await self._event.wait()
                continue
            if not urgent:
                # Only text waits: give it the flush interval to grow, unless it turns urgent
                # (the only wake-up that can come now: the first item already woke us). Text
                # that stops mid-line gets one interval more: print() writes "text" and "\n"
                # separately, and a line is better sent whole.
                for _ in range(2):
                    with trio.move_on_after(self.flush_interval):
                        await self._event.wait()
                    if self._event.is_set() or self._ends_line():
                        break
            items = self._take()
            if items:
                return [self._as_message(item) for item in items]

    def _as_message(self, item: Message | _Text | SentMarker) -> Message | SentMarker:
        if isinstance(item, _Text):
            return self.session.msg(
                "stream",
                {"name": item.name, "text": "".join(item.parts)},
                parent=item.parent,
                identities=[b"stream." + item.name.encode()],
            )
        return item


async def serve_iopub(
    ctx: zmq.Context[zmq.Socket[bytes]],
    conn: ConnectionInfo,
    session: Session,
    *,
    flush_interval: float = 0.02,
    max_batch_bytes: int = 1 << 20,
    task_status: trio.TaskStatus[tuple[int, IOPubQueue]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Bind the iopub XPUB socket, report (port, queue), then send what the queue holds."""
    queue = IOPubQueue(
        session,
        trio.lowlevel.current_trio_token(),
        flush_interval=flush_interval,
        max_batch_bytes=max_batch_bytes,
    )
    async with (
        open_socket(ctx, zmq.XPUB, conn, "iopub", xpub_verbose=1, sndhwm=0) as sock,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_welcome_subscribers, sock, session, queue)
        task_status.started((sock.port, queue))
        while True:
            for item in await queue.get_batch():
                if isinstance(item, SentMarker):
                    item.event.set()
                    continue
                try:
                    frames = session.pack(item)
                except (TypeError, ValueError):
                    # One unwritable message must not end the kernel's output for good.
                    log.exception("iopub: could not send %s", item.msg_type)
                    continue
                await sock.send(frames)


async def _welcome_subscribers(sock: FrameSocket, session: Session, queue: IOPubQueue) -> None:
    while True:
        frames = await sock.recv()
        event = frames[0] if frames else b""
        if event[:1] == b"\x01":
            topic = event[1:].decode("utf-8", "replace")
            queue.publish(
                session.msg("iopub_welcome", {"subscription": topic}, identities=[b"iopub_welcome"])
            )
