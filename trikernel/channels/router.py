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
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

import attrs
import trio
import zmq

from ..handoff import Mailbox
from ..protocol import Channel, ConnectionInfo, Message, Session, WireError
from .transport import FrameSocket, SentMarker, open_socket

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
    on_unroutable: Callable[[Message], None] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Bind ``channel``'s ROUTER, report its port, then receive, and send what ``outbox`` holds,
    until cancelled.

    ``ready``, if given, is awaited before each receive: while it waits, requests stay in
    ZeroMQ's queue (and then the client's), which bounds what a flood costs the kernel.
    ``on_unroutable``, if given, is called with each message that no connected peer can
    receive (ROUTER_MANDATORY), instead of ZeroMQ dropping it silently.
    """
    options = {"router_mandatory": 1} if on_unroutable is not None else {}
    async with (
        open_socket(ctx, zmq.ROUTER, conn, channel, **options) as sock,
        trio.open_nursery() as nursery,
    ):
        dropped = _DropLog()
        nursery.start_soon(_send_outbox, sock, session, outbox, channel, on_unroutable)
        task_status.started(sock.port)
        while True:
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
    sock: FrameSocket,
    session: Session,
    outbox: Outbox,
    channel: str,
    on_unroutable: Callable[[Message], None] | None,
) -> None:
    while True:
        for item in await outbox.get_batch():
            if isinstance(item, SentMarker):
                item.event.set()
                continue
            try:
                frames = session.pack(item)
            except (TypeError, ValueError):
                log.exception("%s: could not send %s", channel, item.msg_type)
                continue
            try:
                await sock.send(frames)
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH or on_unroutable is None:
                    raise
                log.warning(
                    "%s: no peer to receive %s; nobody is connected", channel, item.msg_type
                )
                on_unroutable(item)


async def serve_shell(
    ctx: zmq.Context[zmq.Socket[bytes]],
    conn: ConnectionInfo,
    session: Session,
    on_message: Callable[[Message], None],
    outbox: Outbox,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """The shell channel: requests a frontend makes of the user's session.

    The socket lives in the io loop so that it is read even while a cell blocks the main
    thread: ``interrupt_request`` and ``shutdown_request`` sent here (some frontends do) are
    acted on at once; everything else is forwarded to the main loop, stamped with its arrival
    time (which decides whether it is aborted after a failed or interrupted cell).
    """
    await serve_router(ctx, conn, "shell", session, on_message, outbox, task_status=task_status)


async def serve_control(
    ctx: zmq.Context[zmq.Socket[bytes]],
    conn: ConnectionInfo,
    session: Session,
    on_message: Callable[[Message], None],
    outbox: Outbox,
    *,
    ready: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """The control channel: interrupt, shutdown, kernel_info, handled in the io loop.

    Its handlers never wait for the main thread to be free, so they answer while a cell
    blocks (and, thanks to the CPU tick of :mod:`trikernel.execution`, while it holds the GIL).
    Each request publishes two statuses on iopub; ``ready`` holds reading back while iopub's
    queue is full.
    """
    await serve_router(
        ctx, conn, "control", session, on_message, outbox, ready=ready, task_status=task_status
    )


async def serve_stdin(
    ctx: zmq.Context[zmq.Socket[bytes]],
    conn: ConnectionInfo,
    session: Session,
    on_message: Callable[[Message], None],
    outbox: Outbox,
    *,
    on_unroutable: Callable[[Message], None] | None = None,
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
        task_status=task_status,
    )
