"""The iopub channel: everything the kernel broadcasts, in the order it was made.

Invariants:
- :class:`IOPubQueue` is the only way to publish. Its methods are safe from any thread.
- Order is kept across kinds: text printed before a ``display()`` or a status message is sent
  before it, because every message enters one FIFO and pending text is sealed into a
  ``stream`` message when anything else is published.
- Text is batched: consecutive writes to the same stream for the same request become one
  ``stream`` message (and, once waiting text switched streams a few times, writes that
  alternate stdout and stderr become one message for each), sent when anything else is
  published, when ``flush()`` is called, when
  ``max_batch_bytes`` are waiting, or ``flush_interval`` after the first unsent write (two
  intervals if the text stops mid-line, so a printed line is rarely cut in two). A message
  carries at most 1 MiB of text; longer text goes out in pieces.
- Memory is bounded, and output is delayed rather than dropped:
  - ZeroMQ holds at most ``hwm`` messages for each subscriber (``sndhwm``). At that mark the
    socket refuses the message for everyone (``XPUB_NODROP``), and the sender waits.
  - The queue holds at most ``max_pending_bytes`` of text, and at most
    ``MAX_PENDING_MESSAGES`` other messages. Past either, a thread that publishes waits until
    the sender has taken what waits (``print`` blocks, as on a full pipe). The io loop's own
    publishers never wait: they would wait for themselves. Instead the control channel stops
    reading requests while too many messages wait (:meth:`IOPubQueue.wait_for_room`, at a
    mark above the other publishers' one), so a flood of control requests is held back in
    ZeroMQ's queues and the client's, not in the kernel.
  - A subscriber that reads nothing for ``stall_timeout`` seconds while the socket is at its
    mark is left behind: the sender stops waiting, and messages go to every subscriber that
    has room and are dropped for the ones that have none, with a warning in the kernel's log,
    until every subscriber has room again. So a frontend that keeps reading loses nothing,
    and one that stopped reading cannot stop the kernel.
- Every new subscription (XPUB_VERBOSE) gets an ``iopub_welcome`` (protocol 5.4, JEP 65), so a
  client knows when it can stop waiting to be connected.
- In a process forked from the kernel the queue publishes nothing: its socket and io loop are
  the parent's, and a lock another thread held at the fork stays held for ever. (Text written
  there goes to file descriptors instead, see :mod:`trikernel.streams`.)
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import NoReturn

import attrs
import trio
import zmq

from ..protocol import ConnectionInfo, Message, Session
from .transport import FrameSocket, SentMarker, frames_to_send, open_socket

__all__ = ["MAX_PENDING_MESSAGES", "IOPubQueue", "serve_iopub"]

log = logging.getLogger("trikernel")

#: Messages other than text that may wait in the queue before publishers wait.
MAX_PENDING_MESSAGES = 2000
# Switches between stdout and stderr (of one request) kept in order among the text waiting to
# be sent; past them, text joins its stream's text before the other stream's, as in ipykernel,
# whose streams are batched apart. A cell that alternates print() and a warning in a loop made
# one message per write (20,000 where ipykernel sent 4): frontends fell seconds behind, and
# papermill and nbconvert gave up waiting for its output.
_EXACT_SWITCHES = 8
# Characters in one stream message. Pieces let encoding, signing and sending one overlap with
# the transfer of the one before, and keep a subscriber's queue (counted in messages) small.
_MAX_STREAM_CHARS = 1 << 20


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
        max_pending_bytes: publishers in other threads wait while more text than this waits
            (0: no limit).
    """

    session: Session
    token: trio.lowlevel.TrioToken
    flush_interval: float = 0.02
    max_batch_bytes: int = 1 << 20
    max_pending_bytes: int = 32 << 20
    # Re-entrant: a tracer (pdb stepping, `%run -d`) runs at every Python call, this class's
    # own made under the lock too, and a debugger's tracer prints ("[... skipped 1 ignored
    # module(s)]"), which comes back here in the same thread; a plain lock hung the kernel
    # there. Every call made under the lock comes where the queue's state is whole, so the
    # nested write queues its text (before the outer one's, if that was not queued yet), and
    # it never waits for room (see _wait_for_room).
    _lock: threading.RLock = attrs.field(init=False, factory=threading.RLock)
    _room: threading.Condition = attrs.field(init=False)
    _consumer: int = attrs.field(init=False, factory=threading.get_ident)
    """The io loop's thread, whose publishers never wait (made in the io loop)."""
    _items: deque[Message | _Text | SentMarker] = attrs.field(init=False, factory=deque)
    _text_bytes: int = attrs.field(init=False, default=0)
    _messages: int = attrs.field(init=False, default=0)
    _switches: int = attrs.field(init=False, default=0)
    """How often waiting text went from one stream to the other (see _EXACT_SWITCHES)."""
    _woken: bool = attrs.field(init=False, default=False)
    _urgent: bool = attrs.field(init=False, default=False)
    _event: trio.Event | None = attrs.field(init=False, default=None)
    _taken: trio.Event | None = attrs.field(init=False, default=None)
    may_bypass: Callable[[], bool] = attrs.field(init=False, default=lambda: True)
    """Asked before a publisher sends a message itself, as :attr:`Mailbox.may_bypass`."""
    _claimed: bool = attrs.field(init=False, default=False)
    """Someone sends on the socket: the io loop (a batch) or a publisher (:meth:`_send_now`)."""
    _send_from_thread: Callable[[list[bytes]], bool] | None = attrs.field(init=False, default=None)
    """Sends frames from another thread if the socket takes them now; set by serve_iopub."""

    _forked: bool = attrs.field(init=False, default=False)
    """Set in a forked child: publish nothing (see the module's invariants)."""

    @_room.default
    def _make_room_condition(self) -> threading.Condition:
        return threading.Condition(self._lock)

    def __attrs_post_init__(self) -> None:
        _queues.add(self)

    def publish(self, msg: Message) -> None:
        """Queue ``msg`` after everything queued before it; send as soon as possible.

        Waits while the queue is full (see the module's invariants), unless called in the io
        loop."""
        if self._forked:
            return
        if self._enqueue(msg):
            self._wait_for_room()

    @trio.lowlevel.enable_ki_protection
    def _enqueue(self, msg: Message) -> bool:
        """:meth:`publish` up to its wait; return whether the queue is full.

        KI-protected, as is every change of the queue's state: an interrupt raised between
        :meth:`_mark` and the wake-up it asks for would leave the io loop asleep with the queue
        marked as woken, and no output would go out again (seen about once in 300 interrupts
        of a cell that displays in a loop, on a busy 2-core machine). The interrupt lands in
        user code instead (see :mod:`trikernel.execution`).
        """
        if self._send_now(msg):
            return False
        with self._lock:
            self._items.append(msg)
            self._messages += 1
            wake = self._mark(urgent=True)
            full = self._full()
        if wake:
            self._post_wake()
        return full

    def write(self, name: str, text: str, parent: Message | None, *, wait: bool = True) -> None:
        """Queue ``text`` for stream ``name`` (``stdout``/``stderr``), attributed to ``parent``.

        Waits while too much text waits (see the module's invariants), unless ``wait`` is false
        or it is called in the io loop. The text is queued before the wait: an interrupt that
        ends the wait loses nothing.
        """
        if self._forked:
            return
        if text and self._enqueue_text(name, text, parent) and wait:
            self._wait_for_room()

    @trio.lowlevel.enable_ki_protection
    def _enqueue_text(self, name: str, text: str, parent: Message | None) -> bool:
        """:meth:`write` up to its wait; return whether the queue is full (KI-protected, as
        :meth:`_enqueue`)."""
        with self._lock:
            items = self._items
            last = items[-1] if items else None
            if isinstance(last, _Text) and last.name == name and last.parent is parent:
                last.parts.append(text)
            elif (
                self._switches >= _EXACT_SWITCHES
                and isinstance(last, _Text)
                and last.parent is parent
                and isinstance(before := items[-2] if len(items) > 1 else None, _Text)
                and before.name == name
                and before.parent is parent
            ):
                before.parts.append(text)  # see _EXACT_SWITCHES
            else:
                if isinstance(last, _Text) and last.parent is parent:
                    self._switches += 1
                items.append(_Text(name, parent, [text]))
            self._text_bytes += len(text)
            wake = self._mark(urgent=self._text_bytes >= self.max_batch_bytes)
            full = self._full()
        if wake:
            self._post_wake()
        return full

    @trio.lowlevel.enable_ki_protection
    def _send_now(self, msg: Message) -> bool:
        """Send ``msg`` from this thread if nothing waits and nobody sends; return whether it
        was sent (or queued at the head, when the socket refused it).

        Sent this way, the io loop is not woken: waking it costs the GIL twice, and against a
        busy main thread (whose status, input and idle messages go out this way) up to a
        switch interval each time.

        KI-protected: an interrupt must never stop the send between two frames (see
        :meth:`FrameSocket.try_send_from_thread`), nor leave the claim taken. (The kernel does
        not send this way while user code runs, where its interrupts raise; see
        :attr:`may_bypass`.)
        """
        send = self._send_from_thread
        if send is None or threading.get_ident() == self._consumer or not self.may_bypass():
            return False
        with self._lock:
            if self._items or self._claimed:
                return False
            self._claimed = True
        sent = False
        try:
            sent = send(self.session.pack(msg))
        except (TypeError, ValueError):
            log.exception("iopub: could not send %s", msg.msg_type)
            sent = True  # dropped, as the io loop drops it
        except zmq.ZMQError:
            pass  # queued: the io loop sends it, and meets the error itself
        finally:
            with self._lock:
                self._claimed = False
                if not sent:
                    # At a subscriber's mark (or closing): it goes first, before whatever other
                    # threads queued meanwhile, and the io loop waits for room.
                    self._items.appendleft(msg)
                    self._messages += 1
                    self._mark(urgent=True)
                wake = bool(self._items)  # the io loop may have found them claimed
            if wake:
                self._post_wake()
        return True

    @trio.lowlevel.enable_ki_protection
    def flush(self) -> None:
        """Send waiting text now instead of at the end of the flush interval (KI-protected, as
        :meth:`_enqueue`)."""
        if self._forked:
            return
        with self._lock:
            wake = bool(self._items) and self._mark(urgent=True)
        if wake:
            self._post_wake()

    def idle(self) -> bool:
        """Whether nothing waits to be sent and nobody is sending (any thread)."""
        with self._lock:
            return not self._items and not self._claimed

    async def wait_sent(self) -> None:
        """Wait until everything queued so far was handed to ZeroMQ (io loop only)."""
        marker = SentMarker()
        with self._lock:
            self._items.append(marker)
            wake = self._mark(urgent=True)
        if wake:
            self._wake()
        await marker.event.wait()

    def _full(self, *, text: bool = True, messages: int = MAX_PENDING_MESSAGES) -> bool:
        limit = self.max_pending_bytes
        return self._messages > messages or (text and 0 < limit < self._text_bytes)

    def _holds_lock(self) -> bool:
        # RLock's own check, in C: no Python call for a tracer to see.
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]

    def _wait_for_room(self) -> None:
        if threading.get_ident() == self._consumer or self._holds_lock():
            # Nor a write nested in one (a tracer's, see _lock): waiting releases the lock,
            # at every level, in the middle of the outer change.
            return
        with self._room:
            while self._full():
                # Interruptible: SIGINT's handler runs here, and may raise KeyboardInterrupt.
                self._room.wait()

    async def wait_for_room(
        self, *, text: bool = True, messages: int = MAX_PENDING_MESSAGES
    ) -> None:
        """Wait until the queue is not full (io loop only: its publishers never block).

        Args:
            text: also wait while too much text waits; false: only for the message count
                (what a control request adds).
            messages: wait while more messages than this wait. The control channel passes
                more than :data:`MAX_PENDING_MESSAGES`, where other threads' publishers stop:
                at the same mark, a flood of shell requests (whose statuses keep the count
                there) held control requests back too: 60 to 520 ms each, and behind a
                subscriber that stopped reading, until its stall timeout.
        """
        while True:
            with self._lock:
                if not self._full(text=text, messages=messages):
                    return
                # One event for every waiter (the control channel, each descriptor capture):
                # a waiter that made its own would leave the one before it waiting for ever.
                if self._taken is None:
                    self._taken = trio.Event()
                taken = self._taken
            await taken.wait()

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
        """Take what waits, and the claim with it (:meth:`release` gives the claim back)."""
        with self._lock:
            if self._claimed:
                return []
            items = list(self._items)
            self._claimed = bool(items)
            self._items.clear()
            self._text_bytes = 0
            self._switches = 0
            self._messages = 0
            self._woken = False
            self._urgent = False
            self._room.notify_all()
            taken, self._taken = self._taken, None
        if taken is not None:
            taken.set()
        return items

    def attach(self, send: Callable[[list[bytes]], bool] | None) -> None:
        """Let other threads send through ``send`` when nothing waits (None: no more)."""
        with self._lock:
            self._send_from_thread = send

    def release(self) -> None:
        """The io loop has sent the batch :meth:`get_batch` gave it: others may send now."""
        with self._lock:
            self._claimed = False

    async def get_batch(self) -> Iterator[Message | SentMarker]:
        """Wait for work by the rules above; return it, with text made into messages as the
        iterator reaches it.

        Lazily, and one piece of text at a time: a piece is made into its message, packed and
        sent before the next is cut. So a 10 MB write reuses the same few MiB of memory for
        every piece, rather than the whole text's worth of fresh pages, whose first touches
        (page faults) cost more than encoding the text.
        """
        while True:
            self._event = trio.Event()
            with self._lock:
                # Claimed by a publisher sending now: it wakes the loop when done.
                has_items = bool(self._items) and not self._claimed
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
                return self._as_messages(items)

    def _as_messages(
        self, items: list[Message | _Text | SentMarker]
    ) -> Iterator[Message | SentMarker]:
        for item in items:
            if not isinstance(item, _Text):
                yield item
                continue
            text = "".join(item.parts)
            for start in range(0, len(text), _MAX_STREAM_CHARS):
                yield self.session.msg(
                    "stream",
                    {"name": item.name, "text": text[start : start + _MAX_STREAM_CHARS]},
                    parent=item.parent,
                    identities=[b"stream." + item.name.encode()],
                )


_queues: weakref.WeakSet[IOPubQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for queue in list(_queues):
        queue._forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


async def serve_iopub(
    ctx: zmq.Context[zmq.Socket[bytes]],
    conn: ConnectionInfo,
    session: Session,
    *,
    flush_interval: float = 0.02,
    max_batch_bytes: int = 1 << 20,
    max_pending_bytes: int = 32 << 20,
    hwm: int = 1000,
    stall_timeout: float = 10.0,
    task_status: trio.TaskStatus[tuple[int, IOPubQueue]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Bind the iopub XPUB socket, report (port, queue), then send what the queue holds."""
    queue = IOPubQueue(
        session,
        trio.lowlevel.current_trio_token(),
        flush_interval=flush_interval,
        max_batch_bytes=max_batch_bytes,
        max_pending_bytes=max_pending_bytes,
    )
    options = {"xpub_verbose": 1, "sndhwm": hwm, "xpub_nodrop": int(hwm > 0)}
    async with (
        open_socket(ctx, zmq.XPUB, conn, "iopub", **options) as sock,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_welcome_subscribers, sock, session, queue)
        sender = _Sender(sock, stall_timeout)
        token = trio.lowlevel.current_trio_token()

        def send_from_thread(frames: list[bytes]) -> bool:
            # Not while a subscriber is left behind: the io loop's sender decides about those.
            return not sender.dropping and sock.try_send_from_thread(frames, token)

        queue.attach(send_from_thread)
        task_status.started((sock.port, queue))
        try:
            while True:
                for item in await queue.get_batch():
                    frames = frames_to_send(session, item, "iopub")
                    if frames is not None:
                        await sender.send(frames)
                queue.release()
        finally:
            queue.attach(None)


@attrs.define(eq=False)
class _Sender:
    """Sends on the XPUB socket; waits for subscribers at their mark, leaves stalled ones."""

    sock: FrameSocket
    stall_timeout: float
    _blocked_since: float | None = None
    """When a send was first refused since the last one that went to everyone."""
    _dropping: int = 0
    """Messages sent since a subscriber was left behind (each one it may have missed)."""

    @property
    def dropping(self) -> bool:
        """Whether a subscriber is left behind."""
        return bool(self._dropping)

    async def send(self, frames: list[bytes]) -> None:
        delay = 0.0005
        while not self.sock.try_send(frames):
            # XPUB never reports "not writable" (ZeroMQ's POLLOUT is always set), so a refused
            # send is retried on a short, growing timer.
            now = trio.current_time()
            if self._blocked_since is None:
                self._blocked_since = now
            if self._dropping or now - self._blocked_since >= self.stall_timeout:
                if not self._dropping:
                    log.warning(
                        "iopub: a subscriber has read nothing for %.1f s; messages it has no "
                        "room for are dropped for it until it reads again",
                        now - self._blocked_since,
                    )
                self._dropping += 1
                self.sock.raw.xpub_nodrop = 0
                try:
                    self.sock.try_send(frames)  # never refused without XPUB_NODROP
                finally:
                    self.sock.raw.xpub_nodrop = 1
                break
            await trio.sleep(delay)
            delay = min(2 * delay, 0.02)
        else:
            if self._dropping:
                log.warning(
                    "iopub: every subscriber has room again; %d messages were sent while one "
                    "was left behind (it may have missed them)",
                    self._dropping,
                )
            self._blocked_since = None
            self._dropping = 0
        await self.sock.checkpoint()


async def _welcome_subscribers(sock: FrameSocket, session: Session, queue: IOPubQueue) -> None:
    while True:
        frames = await sock.recv()
        event = frames[0] if frames else b""
        if event[:1] == b"\x01":
            topic = event[1:].decode("utf-8", "replace")
            queue.publish(
                session.msg("iopub_welcome", {"subscription": topic}, identities=[b"iopub_welcome"])
            )
