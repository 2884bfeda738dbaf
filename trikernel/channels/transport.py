"""A small transport interface over pyzmq and trio: open a bound socket, send and receive frames.

The kernel's channel modules speak only :class:`FrameSocket`; the socket layer lives here alone,
so a different one (or an in-memory one for tests) is a change to this module.

Invariants:
- A :class:`FrameSocket` is used from the thread whose trio loop opened it, and from other
  threads only through :meth:`FrameSocket.try_send_from_thread`. Its sends, receives and
  ``EVENTS`` reads hold its lock (ZeroMQ allows a socket to change threads only across a full
  memory barrier); options set through ``raw`` do not, so their caller keeps other threads
  out (the iopub sender sets ``xpub_nodrop`` only while its batch holds the queue's claim).
- Every call first tries the non-blocking ZeroMQ operation; only a socket that is not ready
  makes the task wait, on ZeroMQ's descriptor, through trio's own I/O wait
  (:func:`trio.lowlevel.wait_readable`). No helper task or thread is involved. The operation
  keeps the GIL for every receive and for sends of frames up to 64 KiB
  (:mod:`~trikernel.channels.keepgil`, where libzmq can be reached; else pyzmq's calls,
  which let it go for every frame).
- ZeroMQ's descriptor is edge-triggered: it becomes readable when the socket's state *may*
  have changed, and any operation on the socket (a send, a receive, reading ``EVENTS``) can
  consume that edge. So a task waits only after ``EVENTS`` said it must, and after every
  operation that succeeds while another task waits, ``EVENTS`` is read again and that task is
  woken if what it waits for is there (:meth:`FrameSocket._after_op`). One task at a time
  waits on the descriptor (trio allows no more); the others wait for it to say what changed.
- Each call is a cancellation point, and also a schedule point unless the socket's last one
  was under 0.5 ms ago: a flood on one socket cannot starve the loop's other tasks, and a
  burst of messages (a cell's status, input, reply and idle) does not cost a turn of the loop
  each.
- Past a peer's high-water mark the kernel's sockets refuse a message rather than drop it
  (ROUTER_MANDATORY, XPUB_NODROP), and :meth:`FrameSocket.try_send` says so. How long to wait
  for that peer is the channel's decision (:mod:`trikernel.channels.router`,
  :mod:`trikernel.channels.iopub`), so a vanished or stuck client cannot wedge a channel.
- When the connection info has Curve keys, every socket is a CurveZMQ server before it is
  bound (:func:`bind`, which the heartbeat uses too): no socket ever accepts a plain-text peer,
  and a kernel that cannot encrypt refuses to start rather than serve plain text.

Why not zmq-anyio, the socket layer chosen at first: it starts helper tasks for every awaited
call and a task group for every wake of its reader, about a quarter of the execute round trip
(``benchmarks/transport.py`` measures the two side by side).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import MethodType
from typing import Protocol, cast

import attrs
import trio
import zmq

from ..protocol import Channel, ConnectionInfo, Message, Session
from .keepgil import socket_calls

__all__ = [
    "FrameSocket",
    "MessageCalls",
    "PyzmqCalls",
    "SentMarker",
    "bind",
    "frames_to_send",
    "open_socket",
]

log = logging.getLogger("trikernel")

# pyzmq copies without the GIL. A lent frame is released by pyzmq's garbage-collector thread,
# which takes the GIL once per frame: for the 1 MiB pieces of a long write that cost more than
# the copy (copied, the 10 MB write took 0.915x to 0.959x the time in three A/B runs), and
# single frames up to 16 MB measured the same either way. Past that, a copy would hold the
# frame's memory twice.
_COPY = 8 << 20
"""Frames shorter than this are copied into ZeroMQ; longer ones are lent to it."""
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE) | _NOBLOCK
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)

# Seconds a socket's calls may complete without letting the loop's other tasks run. A turn of
# the loop is a pass through trio's scheduler and an epoll_wait, which lets a main thread that
# waits for the GIL take it; a turn per message cost pipelined cells 10-20% of their rate.
_YIELD_EVERY = 0.0005


class MessageCalls(Protocol):
    """Non-blocking ZeroMQ calls for one socket, a whole multipart message at a time. The
    caller holds the socket's lock."""

    def recv(self) -> list[bytes]:
        """One message's frames; empty when no message waits."""
        ...

    def send(self, frames: Sequence[bytes]) -> bool:
        """Send one message if ZeroMQ takes it now; return whether it did."""
        ...


@attrs.define(eq=False)
class PyzmqCalls:
    """:class:`MessageCalls` through pyzmq's compiled ``send``, ``recv`` and ``get``.

    pyzmq's own ``send_multipart`` and ``recv_multipart`` are Python loops that combine enum
    flags and build an enum for every ``RCVMORE`` query; its compiled calls with plain int
    flags cost a third as much per message (~10 against ~27 µs for a 7-frame message sent and
    received).
    """

    raw: zmq.Socket[bytes]
    _send: Callable[[bytes, int, bool], object] = attrs.field(init=False)
    _recv: Callable[[int], bytes] = attrs.field(init=False)
    get: Callable[[int], object] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        compiled = zmq.backend.Socket  # the base class of zmq.Socket
        self._send = MethodType(compiled.send, self.raw)
        self._recv = MethodType(compiled.recv, self.raw)
        self.get = MethodType(compiled.get, self.raw)

    def send_frame(self, frame: bytes, flags: int) -> None:
        """Send one frame; those past ``_COPY`` are lent to ZeroMQ (see there)."""
        self._send(frame, flags, len(frame) < _COPY)

    def recv(self) -> list[bytes]:
        try:
            frames = [self._recv(_NOBLOCK)]
        except zmq.Again:
            return []
        # The rest of a multipart message is there once its first frame is (ZeroMQ delivers
        # messages whole).
        while self.get(_RCVMORE):
            frames.append(self._recv(_NOBLOCK))
        return frames

    def send(self, frames: Sequence[bytes]) -> bool:
        last = len(frames) - 1
        for n, frame in enumerate(frames):
            try:
                self.send_frame(frame, _NOBLOCK if n == last else _SNDMORE)
            except zmq.Again:
                if n:  # cannot happen: ZeroMQ takes the rest once it took the first frame
                    raise
                return False
        return True


@attrs.define(eq=False)
class SentMarker:
    """Put in an outgoing queue: ``event`` is set once everything before it was sent."""

    event: trio.Event = attrs.Factory(trio.Event)


def frames_to_send(
    session: Session, item: Message | SentMarker, channel: str
) -> list[bytes] | None:
    """What a channel's sending task sends for ``item`` taken from its queue: the message's
    frames; or None, for a marker (set now: everything before it was sent) and for a message
    that cannot be written (logged: one such message must not end a channel's output)."""
    if isinstance(item, SentMarker):
        item.event.set()
        return None
    try:
        return session.pack(item)
    except (TypeError, ValueError):
        log.exception("%s: could not send %s", channel, item.msg_type)
        return None


@attrs.define(eq=False)
class FrameSocket:
    """A bound ZeroMQ socket that sends and receives lists of byte frames."""

    raw: zmq.Socket[bytes]
    """The socket; used directly only for options (``xpub_nodrop``)."""
    port: int
    keep_gil: bool = True
    """Send and receive through :mod:`~trikernel.channels.keepgil` where it can."""
    _fd: int = attrs.field(init=False)
    _yielded: float = attrs.field(init=False, default=-1.0)
    """``time.monotonic()`` when a call last let other tasks run."""
    _waiters: int = attrs.field(init=False, default=0)
    _waiting_for: int = attrs.field(init=False, default=0)
    """The events (``zmq.POLLIN | zmq.POLLOUT``) the waiting tasks wait for; 0 if none does."""
    _watch: trio.CancelScope | None = attrs.field(init=False, default=None)
    """The scope of the one task waiting on the descriptor, if one is."""
    _changed: trio.Event | None = attrs.field(init=False, default=None)
    """Set when the socket's events may have changed, for the tasks not on the descriptor."""
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    """Held for every ZeroMQ call, so :meth:`try_send_from_thread` can share the socket."""
    _calls: MessageCalls = attrs.field(init=False)
    _get: Callable[[int], object] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._fd = cast("int", self.raw.getsockopt(zmq.FD))
        pyzmq = PyzmqCalls(self.raw)
        self._get = pyzmq.get
        # Calls that keep the GIL where they can be had (see keepgil for why, and the figures).
        keep = socket_calls(self.raw, pyzmq.send_frame) if self.keep_gil else None
        self._calls = pyzmq if keep is None else keep

    async def recv(self) -> list[bytes]:
        """Receive one multipart message.

        Raises:
            trio.ClosedResourceError: the socket was closed while the call waited.
        """
        while True:
            with self._lock:
                frames = self._calls.recv()
            if not frames:
                await self._wait(zmq.POLLIN)
                continue
            self._after_op()
            await self.checkpoint()
            return frames

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send one multipart message (awaits only if ZeroMQ cannot take it now)."""
        while not self.try_send(frames):
            await self._wait(zmq.POLLOUT)
        await self.checkpoint()

    def try_send(self, frames: Sequence[bytes]) -> bool:
        """Send one multipart message if ZeroMQ takes it now; return whether it did."""
        with self._lock:
            sent = self._calls.send(frames)
        if sent:
            self._after_op()
        return sent

    def try_send_from_thread(self, frames: Sequence[bytes], token: trio.lowlevel.TrioToken) -> bool:
        """:meth:`try_send` from a thread other than the socket's loop (``token``).

        The caller keeps messages in order with the loop's own sends (the iopub queue's claim
        does). Call it KI-protected: an exception between two frames would leave half a
        message in ZeroMQ, and the next one would be appended to it.
        """
        with self._lock:
            if self.raw.closed:
                return False
            sent = self._calls.send(frames)
            waiting = self._waiting_for
            changed = sent and waiting and cast("int", self._get(_EVENTS)) & waiting
        if changed:
            # The send may have consumed the edge a task in the loop sleeps on (see the
            # invariants); it is woken there, where its cancel scope lives.
            try:
                token.run_sync_soon(self._after_op)
            except trio.RunFinishedError:
                pass
        return sent

    async def checkpoint(self) -> None:
        """A cancellation point; a schedule point too if the socket's last one was a while ago
        (what every call that completes at once ends with)."""
        if time.monotonic() - self._yielded < _YIELD_EVERY:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await trio.lowlevel.checkpoint()
            self._yielded = time.monotonic()

    async def _wait(self, events: int) -> None:
        """Return once ``events`` may be possible (the caller retries its operation)."""
        self._waiters += 1
        try:
            while True:
                # Said before looking: a send from another thread after the look then sees
                # that this task waits (try_send_from_thread).
                self._waiting_for |= events
                # Reading EVENTS also re-arms the descriptor: after it, any change makes it
                # readable.
                if self._events() & events:
                    break
                if self._watch is None:
                    self._watch = trio.CancelScope()
                    try:
                        with self._watch:
                            await trio.lowlevel.wait_readable(self._fd)
                    finally:
                        # Whoever else waits looks again; one of them takes over the watch.
                        self._watch = None
                        self._wake_others()
                else:
                    if self._changed is None:
                        self._changed = trio.Event()
                    await self._changed.wait()
        finally:
            self._waiters -= 1
            if not self._waiters:
                self._waiting_for = 0
        self._yielded = time.monotonic()

    def _after_op(self) -> None:
        # The operation may have consumed the edge a waiting task sleeps on: look at the events
        # on its behalf and wake it if what it waits for has come.
        if self._waiting_for and self._events() & self._waiting_for:
            if self._watch is not None:
                self._watch.cancel()
            self._wake_others()

    def _events(self) -> int:
        with self._lock:
            return cast("int", self._get(_EVENTS))

    def _wake_others(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def close(self) -> None:
        """Close the socket; a task waiting on it gets :class:`trio.ClosedResourceError`."""
        if not self.raw.closed:
            if self._waiters:
                trio.lowlevel.notify_closing(self._fd)
            with self._lock:
                self.raw.close()


def bind(sock: zmq.Socket[bytes], conn: ConnectionInfo, channel: Channel) -> int:
    """Bind ``sock`` for ``channel``; choose a free port when the connection info has 0.

    With Curve keys in ``conn``, ``sock`` is made a CurveZMQ server first.

    Returns:
        The port bound (for ipc, the number in the socket file's name).

    Raises:
        RuntimeError: ``conn`` has Curve keys but this libzmq was built without CurveZMQ.
        ValueError: ``conn``'s Curve public key is not the secret key's.
    """
    if conn.curve_publickey is not None and conn.curve_secretkey is not None:
        _make_curve_server(sock, conn.curve_publickey, conn.curve_secretkey)
    port = conn.port(channel)
    if conn.transport == "tcp":
        if port == 0:
            host = f"[{conn.ip}]" if ":" in conn.ip else conn.ip
            return sock.bind_to_random_port(f"tcp://{host}")
        sock.bind(conn.url(channel))
        return port
    if port == 0:
        port = 1
        while Path(f"{conn.ip}-{port}").exists():
            port += 1
    sock.bind(conn.url(channel, port))
    return port


def _make_curve_server(sock: zmq.Socket[bytes], public: str, secret: str) -> None:
    """Make ``sock`` a CurveZMQ server (ZeroMQ RFC 25, ZMTP-CURVE).

    Call before bind: libzmq copies a socket's options into each endpoint when it is bound.
    """
    if not zmq.has("curve"):
        raise RuntimeError(
            "the connection file has Curve keys, but this pyzmq's libzmq was built without "
            "CurveZMQ (zmq.has('curve') is False): refusing to serve unencrypted sockets"
        )
    # A mismatched pair would bind fine and then fail every client's handshake, silently.
    if zmq.curve_public(secret.encode("ascii")) != public.encode("ascii"):
        raise ValueError("curve_publickey is not the public key of curve_secretkey")
    sock.curve_secretkey = secret.encode("ascii")
    sock.curve_publickey = public.encode("ascii")
    sock.curve_server = True


@asynccontextmanager
async def open_socket(
    ctx: zmq.Context[zmq.Socket[bytes]],
    kind: int,
    conn: ConnectionInfo,
    channel: Channel,
    **options: int,
) -> AsyncIterator[FrameSocket]:
    """Open, configure and bind a socket for ``channel``; close it on exit (linger 0).

    Args:
        ctx: the ZeroMQ context.
        kind: ``zmq.ROUTER``, ``zmq.XPUB``...
        conn: where to bind.
        channel: which channel's port to use.
        **options: socket options by name (``sndhwm=...``).
    """
    raw = ctx.socket(kind)
    # Unsent messages get this long at close: enough to flush a reply to a connected client,
    # short enough that a vanished client cannot hold up the exit.
    raw.linger = 200
    if kind == zmq.ROUTER:
        # ROUTER_HANDOVER: a client that reconnects with the same identity takes over the
        # route; without it the kernel would keep replying to the vanished connection.
        raw.router_handover = 1
    for name, value in options.items():
        raw.setsockopt(getattr(zmq, name.upper()), value)
    try:
        port = bind(raw, conn, channel)
    except BaseException:
        raw.close(linger=0)
        raise
    sock = FrameSocket(raw, port)
    try:
        yield sock
    finally:
        sock.close()
