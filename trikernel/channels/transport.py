"""A small transport interface over zmq-anyio: open a bound socket, send and receive frames.

The kernel's channel modules speak only :class:`FrameSocket`; zmq-anyio lives here alone, so a
faster socket layer (or an in-memory one for tests) is a change to this module.

Invariants:
- A :class:`FrameSocket` is used only from the thread whose trio loop opened it.
- :meth:`FrameSocket.recv` and :meth:`FrameSocket.send` first try the non-blocking call and
  await zmq-anyio only when the socket is not ready: zmq-anyio starts helper tasks for every
  awaited call, and under load most calls find the socket ready. Each call is a cancellation
  point, and also a schedule point unless the socket's last one was under 0.5 ms ago: a flood
  on one socket cannot starve the loop's other tasks, and a burst of messages (a cell's
  status, input, reply and idle) does not cost a turn of the loop each.
- Sends on ROUTER sockets never block for long: past the high-water mark they drop (ZeroMQ's
  documented behaviour), so a vanished client cannot wedge a channel. The iopub XPUB refuses
  instead, and :mod:`trikernel.channels.iopub` decides how long to wait.
- When the connection info has Curve keys, every socket is a CurveZMQ server before it is
  bound (:func:`bind`, which the heartbeat uses too): no socket ever accepts a plain-text peer,
  and a kernel that cannot encrypt refuses to start rather than serve plain text.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar, cast

import attrs
import trio
import zmq
import zmq_anyio
from anyio import Future

from ..protocol import Channel, ConnectionInfo

__all__ = ["FrameSocket", "SentMarker", "bind", "open_socket"]

_T = TypeVar("_T")
_ZERO_COPY_BYTES = 1 << 16

# Seconds a socket's calls may complete without letting the loop's other tasks run. A turn of
# the loop is a pass through trio's scheduler and an epoll_wait, which lets a main thread that
# waits for the GIL take it; a turn per message cost pipelined cells 10-20% of their rate.
_YIELD_EVERY = 0.0005


@attrs.define(eq=False)
class SentMarker:
    """Put in an outgoing queue: ``event`` is set once everything before it was sent."""

    event: trio.Event = attrs.Factory(trio.Event)


@attrs.define(eq=False)
class FrameSocket:
    """A bound ZeroMQ socket that sends and receives lists of byte frames."""

    socket: zmq_anyio.Socket
    """zmq-anyio's socket, for waiting until the socket is ready."""
    raw: zmq.Socket[bytes]
    """The plain socket it shadows, for the non-blocking attempts: zmq-anyio's own methods
    start a helper task on every call, even one that completes at once.

    ZeroMQ's descriptor is edge-triggered, and any operation on the socket can consume the
    edge that a pending zmq-anyio receive waits for. So every raw operation is followed by
    :meth:`_rearm`, which has zmq-anyio look at the socket's events again."""
    port: int
    _yielded: float = attrs.field(init=False, default=-1.0)
    """``time.monotonic()`` when a call last let other tasks run."""

    async def recv(self) -> list[bytes]:
        """Receive one multipart message.

        Raises:
            zmq.ZMQError: the socket was closed.
        """
        try:
            frames: list[bytes] = self.raw.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            pass
        else:
            self._rearm()
            await self.checkpoint()
            return frames
        # copy=True (the default) means bytes, not zmq.Frame.
        frames = cast("list[bytes]", await _wait(self.socket.arecv_multipart()))
        self._yielded = time.monotonic()
        return frames

    async def send(self, frames: Sequence[bytes]) -> None:
        """Send one multipart message (awaits only if ZeroMQ cannot take it now)."""
        if self.try_send(frames):
            await self.checkpoint()
        else:
            await _wait(self.socket.asend_multipart(list(frames)))
            self._yielded = time.monotonic()

    def try_send(self, frames: Sequence[bytes]) -> bool:
        """Send one multipart message if ZeroMQ takes it now; return whether it did."""
        # Large frames are handed to ZeroMQ without a copy (pyzmq copies frames below its
        # copy_threshold anyway); small ones are copied, which is cheaper than tracking them.
        copy = all(len(frame) < _ZERO_COPY_BYTES for frame in frames)
        try:
            self.raw.send_multipart(frames, zmq.NOBLOCK, copy=copy)
        except zmq.Again:
            return False
        self._rearm()
        return True

    async def checkpoint(self) -> None:
        """A cancellation point; a schedule point too if the socket's last one was a while ago
        (what every call that completes at once ends with)."""
        if time.monotonic() - self._yielded < _YIELD_EVERY:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await trio.lowlevel.checkpoint()
            self._yielded = time.monotonic()

    def _rearm(self) -> None:
        # zmq-anyio's get(EVENTS) reschedules its event handling when a pending receive (or
        # send) can now complete: the edge this process may have consumed is not lost.
        get_option: Callable[[int], object] = self.socket.get  # zmq-anyio leaves it unannotated
        get_option(zmq.EVENTS)


async def _wait(future: Future[_T]) -> _T:
    """The result of a zmq-anyio future; cancelling the wait cancels the operation."""
    if future.status is Future.Status.PENDING:
        try:
            await future.wait()
        except BaseException:
            future.cancel()
            raise
    if future.status is Future.Status.FAILED:
        assert future.exception is not None
        raise future.exception
    return future.return_value


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
    sock = zmq_anyio.Socket(raw)
    async with sock:
        yield FrameSocket(sock, raw, port)
