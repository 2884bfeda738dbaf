"""The loop shared by the three request channels (shell, control, stdin): ROUTER sockets.

Invariants:
- Frames that do not unpack (bad signature, replay, bad framing or JSON) are dropped with a
  log line naming the reason (one per second at most, with a count of the rest), and nothing
  is sent back: an unauthenticated sender learns nothing, and no handler sees the message.
- ``on_message`` is called in the io loop, in arrival order, and must not block: it either
  handles the message at once or hands it on (to the main loop, or to a task).
- Replies go out through the channel's outbox (a :class:`~trikernel.handoff.Mailbox`), which any
  thread may fill; one task in the io loop sends them, in order. The caller makes the outbox
  and passes it in, so it exists before the first request can be handled.
- A reply is never dropped silently. The sockets route mandatorily (ROUTER_MANDATORY): past a
  client's high-water mark (ZeroMQ's 1000 messages) the socket refuses a reply instead of
  dropping it, and the sender retries on a short timer. Meanwhile the channel reads no more
  requests, so a client that sends faster than it reads is held back in ZeroMQ's queues and
  its own, not in the kernel's memory. A client that reads nothing for ``stall_timeout``
  seconds is left behind (logged): its replies that do not fit are dropped until it reads
  again, so it cannot hold up the channel's other clients for ever. A reply for a client that
  is gone is dropped with a warning.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

import attrs
import trio
import zmq

from ..handoff import Mailbox
from ..protocol import Channel, ConnectionInfo, Message, Session, WireError
from .transport import FrameSocket, SentMarker, frames_to_send, open_socket

__all__ = ["Outbox", "serve_control", "serve_router", "serve_shell", "serve_stdin"]

log = logging.getLogger("trikernel")

Outbox = Mailbox[Message | SentMarker]


async def serve_router(
    ctx: zmq.Context[zmq.Socket[bytes]],
    conn: ConnectionInfo,
    channel: Channel,
    session: Session,
    on_message: Callable[[Message], None],
    outbox: Outbox,
    *,
    ready: Callable[[], Awaitable[None]] | None = None,
    before_send: Callable[[Sequence[Message | SentMarker]], Awaitable[None]] | None = None,
    on_unroutable: Callable[[Message], None] | None = None,
    stall_timeout: float = 10.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Bind ``channel``'s ROUTER, report its port, then receive, and send what ``outbox`` holds,
    until cancelled.

    ``ready``, if given, is awaited before each receive: while it waits, requests stay in
    ZeroMQ's queue (and then the client's), which bounds what a flood costs the kernel.
    ``before_send``, if given, is awaited with each batch of the outbox before it is sent.
    ``on_unroutable``, if given, is called with each message whose client is not connected.
    ``stall_timeout``: seconds a reply waits for a client whose queue is full (see the module's
    invariants).
    """
    async with (
        open_socket(ctx, zmq.ROUTER, conn, channel, router_mandatory=1) as sock,
        trio.open_nursery() as nursery,
    ):
        replier = _Replier(sock, channel, stall_timeout, on_unroutable)
        nursery.start_soon(_send_outbox, replier, session, outbox, before_send)
        token = trio.lowlevel.current_trio_token()

        def send_from_thread(item: Message | SentMarker) -> bool:
            # A reply made in another thread (the main loop's) is sent there, unless the
            # replier waits for a client or left one behind: it decides about those.
            if isinstance(item, SentMarker) or not replier.clear:
                return False
            try:
                return sock.try_send_from_thread(session.pack(item), token)
            except (TypeError, ValueError, zmq.ZMQError):
                return False  # the io loop sends it, and meets the error itself

        outbox.bypass_with(send_from_thread)
        task_status.started(sock.port)
        try:
            await _receive(sock, channel, session, on_message, replier, ready)
        finally:
            outbox.bypass_with(None)


async def _receive(
    sock: FrameSocket,
    channel: Channel,
    session: Session,
    on_message: Callable[[Message], None],
    replier: _Replier,
    ready: Callable[[], Awaitable[None]] | None,
) -> NoReturn:
    dropped = _DropLog()
    while True:
        await replier.wait_unblocked()
        if ready is not None:
            await ready()
        frames = await sock.recv()
        try:
            msg = session.unpack(frames)
        except WireError as exc:
            dropped.note(channel, exc)
            continue
        on_message(msg)


@attrs.define
class _DropLog:
    """One warning line per second at most for dropped messages, with the count left out.

    Each drop is logged with its reason, but a flood of unauthenticated messages must not
    become a flood of log lines.
    """

    _last: float = -math.inf
    _suppressed: int = 0

    def note(self, channel: str, exc: WireError) -> None:
        now = time.monotonic()
        if now - self._last < 1.0:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more dropped since the last line)" if self._suppressed else ""
        log.warning("%s: dropped a message: %s%s", channel, exc, more)
        self._last, self._suppressed = now, 0


async def _send_outbox(
    replier: _Replier,
    session: Session,
    outbox: Outbox,
    before_send: Callable[[Sequence[Message | SentMarker]], Awaitable[None]] | None,
) -> None:
    while True:
        batch = await outbox.get_batch()
        if before_send is not None:
            await before_send(batch)
        for item in batch:
            frames = frames_to_send(session, item, replier.channel)
            if frames is not None:
                assert isinstance(item, Message)  # markers have no frames
                await replier.send(item, frames)
        outbox.release()


@attrs.define(eq=False)
class _Replier:
    """Sends a channel's replies: waits for a client whose queue is full, up to
    ``stall_timeout``; after that leaves it behind until a reply to it goes through."""

    sock: FrameSocket
    channel: str
    stall_timeout: float
    on_unroutable: Callable[[Message], None] | None
    _left_behind: dict[bytes, int] = attrs.field(factory=dict)
    """Clients left behind, by routing id: how many replies were dropped for each."""
    _unblocked: trio.Event | None = None
    """Set (and cleared) when a send that waited ends; None while no send waits."""
    _logged: float = -math.inf
    """``time.monotonic()`` of the last "waiting for a client" log line."""

    async def send(self, msg: Message, frames: list[bytes]) -> None:
        """Send ``msg`` (packed as ``frames``) to the client its first frame names."""
        client = frames[0]
        delay = 0.0005
        deadline = trio.current_time() + self.stall_timeout
        try:
            while not self._try_send(msg, frames):
                if client in self._left_behind or trio.current_time() >= deadline:
                    self._drop(client, msg)
                    break
                if self._unblocked is None:
                    self._unblocked = trio.Event()
                    self._log_wait()
                # A ROUTER's POLLOUT means "some client has room", not this one: so a timer.
                await trio.sleep(delay)
                delay = min(2 * delay, 0.02)
        finally:
            if self._unblocked is not None:
                self._unblocked.set()
                self._unblocked = None
        await self.sock.checkpoint()

    @property
    def clear(self) -> bool:
        """Whether no send waits for a client and no client is left behind."""
        return self._unblocked is None and not self._left_behind

    async def wait_unblocked(self) -> None:
        """Return once no send waits for a client (the reader waits here before reading)."""
        while self._unblocked is not None:
            await self._unblocked.wait()

    def _try_send(self, msg: Message, frames: list[bytes]) -> bool:
        """Send if the client has room; True also when it is gone (the reply was dropped)."""
        try:
            sent = self.sock.try_send(frames)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self._left_behind.pop(frames[0], None)
            log.warning(
                "%s: dropped a %s: its client is not connected (it left, or never connected "
                "this channel)",
                self.channel,
                msg.msg_type,
            )
            if self.on_unroutable is not None:
                self.on_unroutable(msg)
            return True
        if sent and self._left_behind:
            dropped = self._left_behind.pop(frames[0], None)
            if dropped is not None:
                log.warning(
                    "%s: a client left behind reads again; %d replies were dropped for it",
                    self.channel,
                    dropped,
                )
        return sent

    def _drop(self, client: bytes, msg: Message) -> None:
        if client not in self._left_behind:
            log.warning(
                "%s: a client's queue has been full for %.1f s; replies it has no room for "
                "are dropped until it reads again (first: %s)",
                self.channel,
                self.stall_timeout,
                msg.msg_type,
            )
            self._left_behind[client] = 0
        self._left_behind[client] += 1

    def _log_wait(self) -> None:
        # INFO, at most once a second: a client that reads slowly is no fault of the kernel's.
        now = time.monotonic()
        if now - self._logged >= 1.0:
            self._logged = now
            log.info(
                "%s: a client's queue is full; its replies wait, and no requests are read "
                "until it reads",
                self.channel,
            )


async def serve_shell(
    ctx: zmq.Context[zmq.Socket[bytes]],
    conn: ConnectionInfo,
    session: Session,
    on_message: Callable[[Message], None],
    outbox: Outbox,
    *,
    before_send: Callable[[Sequence[Message | SentMarker]], Awaitable[None]] | None = None,
    stall_timeout: float = 10.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """The shell channel: requests a frontend makes of the user's session.

    The socket lives in the io loop so that it is read even while a cell blocks the main
    thread: ``interrupt_request`` and ``shutdown_request`` sent here (some frontends do) are
    acted on at once; everything else is forwarded to the main loop, stamped with its arrival
    time (which decides whether it is aborted after a failed or interrupted cell).
    ``before_send``: as for :func:`serve_router` (the kernel sends iopub's queue first).
    """
    await serve_router(
        ctx,
        conn,
        "shell",
        session,
        on_message,
        outbox,
        before_send=before_send,
        stall_timeout=stall_timeout,
        task_status=task_status,
    )


async def serve_control(
    ctx: zmq.Context[zmq.Socket[bytes]],
    conn: ConnectionInfo,
    session: Session,
    on_message: Callable[[Message], None],
    outbox: Outbox,
    *,
    ready: Callable[[], Awaitable[None]] | None = None,
    stall_timeout: float = 10.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """The control channel: interrupt, shutdown, kernel_info, handled in the io loop.

    Its handlers never wait for the main thread to be free, so they answer while a cell
    blocks (and, thanks to the CPU tick of :mod:`trikernel.execution`, while it holds the GIL).
    Each request publishes two statuses on iopub; ``ready`` holds reading back while iopub's
    queue is full.
    """
    await serve_router(
        ctx,
        conn,
        "control",
        session,
        on_message,
        outbox,
        ready=ready,
        stall_timeout=stall_timeout,
        task_status=task_status,
    )


async def serve_stdin(
    ctx: zmq.Context[zmq.Socket[bytes]],
    conn: ConnectionInfo,
    session: Session,
    on_message: Callable[[Message], None],
    outbox: Outbox,
    *,
    on_unroutable: Callable[[Message], None] | None = None,
    stall_timeout: float = 10.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """The stdin channel: ``input_request`` out, ``input_reply`` back.

    A reply is matched to the pending request by its parent header; one without a parent
    header (jupyter_client's ``KernelClient.input()`` sends such) answers the pending request.
    An ``input_request`` for a frontend with no stdin socket connected goes to
    ``on_unroutable``, so ``input()`` fails instead of waiting for ever.
    """
    await serve_router(
        ctx,
        conn,
        "stdin",
        session,
        on_message,
        outbox,
        on_unroutable=on_unroutable,
        stall_timeout=stall_timeout,
        task_status=task_status,
    )
