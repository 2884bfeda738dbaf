"""Non-blocking ZeroMQ sends and receives that keep the GIL.

pyzmq releases the GIL around every ``zmq_msg_send`` and ``zmq_msg_recv``, because either may
block. The kernel's sockets never block in them (every call is ``ZMQ_DONTWAIT``, and the io
loop waits on ZeroMQ's descriptor instead), and a release is not free: a thread that lets the
GIL go must win it back, and against a main thread that is busy with Python code but itself
lets the GIL go now and then (any system call: a poll, a trio checkpoint) it keeps losing that
race. CPython asks the holder to hand over only after a switch interval *without any switch*,
so each of the main thread's brief releases restarts the io thread's wait.

Measured while another client floods shell with requests: single frames of a 7-frame reply took
30 to 100 ms to send, and a control request took up to a second to answer. A small test program
(a thread sending 7-frame messages against a busy main thread that calls ``poll(0)`` every
~100 µs) sends its slowest message in 157 ms through pyzmq and in 12 ms with these calls.
pyzmq made the same choice for its calls that cannot block (its pull request 383).

The calls go to the libzmq that pyzmq itself loaded, through :mod:`ctypes` (``PyDLL``: the GIL
is held during the call). :func:`socket_calls` returns None where that library cannot be
reached this way (no ``dlsym`` through pyzmq's extension, as on Windows, or libzmq linked in
with hidden symbols); the caller then uses pyzmq's own calls, which do the same, only with the
GIL released.

Like pyzmq's calls, these refuse a closed socket (``ENOTSOCK``) rather than pass libzmq a
handle it has freed.
"""

from __future__ import annotations

import ctypes
import errno
import logging
from collections.abc import Callable, Sequence

import attrs
import zmq

__all__ = ["SMALL_FRAME", "SocketCalls", "socket_calls"]

log = logging.getLogger("trikernel")

SMALL_FRAME = 64 << 10
"""Frames up to this size are sent holding the GIL (pyzmq sends longer ones): copying a
longer one into ZeroMQ takes long enough that letting other threads run meanwhile is worth
the release. Frames of any size are received holding it: ZeroMQ hands over a received frame
without copying, and the copy out of it holds the GIL in pyzmq too. A received frame past
this size is released at once rather than at the next receive."""


_Msg = ctypes.Array[ctypes.c_uint64]
"""A ``zmq_msg_t``: 64 bytes, aligned as a pointer."""
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE) | _NOBLOCK
_INT_MAX = (1 << 31) - 1


@attrs.frozen
class _LibZmq:
    # No argtypes: ctypes then converts nothing through from_param, which halves the cost of
    # a call (a send took 0.74 µs with them, 0.60 without). So every argument is passed as a
    # ctypes object of its C type, or as what ctypes passes as a pointer (bytes, an array).
    send: Callable[[ctypes.c_void_p, bytes, ctypes.c_size_t, int], int]
    msg_init: Callable[[_Msg], int]
    msg_recv: Callable[[_Msg, ctypes.c_void_p, int], int]
    msg_data: Callable[[_Msg], int | None]
    msg_size: Callable[[_Msg], int]
    msg_more: Callable[[_Msg], int]
    msg_close: Callable[[_Msg], int]


def _load() -> _LibZmq | None:
    try:
        from zmq.backend.cython import _zmq  # the extension that links libzmq

        # dlsym through the extension's handle also searches the libraries it depends on.
        lib = ctypes.PyDLL(_zmq.__file__, use_errno=True)
        send, msg_init, msg_recv = lib.zmq_send, lib.zmq_msg_init, lib.zmq_msg_recv
        msg_data, msg_size = lib.zmq_msg_data, lib.zmq_msg_size
        msg_more, msg_close = lib.zmq_msg_more, lib.zmq_msg_close
    except (ImportError, OSError, AttributeError) as exc:
        log.debug("libzmq not reachable through ctypes (%s): pyzmq's calls are used", exc)
        return None
    for call in (send, msg_init, msg_recv, msg_more, msg_close):
        call.restype = ctypes.c_int
    msg_data.restype = ctypes.c_void_p
    msg_size.restype = ctypes.c_size_t
    return _LibZmq(send, msg_init, msg_recv, msg_data, msg_size, msg_more, msg_close)


_lib = _load()


def _error(code: int) -> zmq.ZMQError:
    return zmq.Again() if code == errno.EAGAIN else zmq.ZMQError(code)


@attrs.define(eq=False)
class SocketCalls:
    """Send and receive whole messages on one socket without letting the GIL go
    (:class:`~trikernel.channels.transport.MessageCalls`). Frames are copied, as pyzmq's
    ``copy=True`` does. Not thread-safe (one ``zmq_msg_t``): the caller holds the socket's
    lock, as for every ZeroMQ call.

    A whole message per call, rather than a frame: a Python call per frame cost as much
    again as the ctypes calls themselves (23 against 13 µs for a 7-frame message sent and
    received; pyzmq's compiled calls take 11).
    """

    _lib: _LibZmq
    _sock: zmq.Socket[bytes]
    _handle: ctypes.c_void_p
    _send_frame: Callable[[bytes, int], object]
    """pyzmq's send, for the frames these calls leave to it (long, or not bytes)."""
    _msg: _Msg = attrs.field(init=False)
    """Receives every frame: ``zmq_msg_recv`` releases what the message held before."""

    def __attrs_post_init__(self) -> None:
        self._msg = (ctypes.c_uint64 * 8)()
        self._lib.msg_init(self._msg)

    def _check_open(self) -> None:
        if self._sock._closed:
            raise zmq.ZMQError(errno.ENOTSOCK)

    def send(self, frames: Sequence[bytes]) -> bool:
        """Send one message if ZeroMQ takes it now; return whether it did.

        Raises:
            zmq.ZMQError: a failure other than "not now" (``EHOSTUNREACH`` for a ROUTER
                peer that is gone).
        """
        self._check_open()
        send, handle, size_t = self._lib.send, self._handle, ctypes.c_size_t
        last = len(frames) - 1
        for n, frame in enumerate(frames):
            flags = _NOBLOCK if n == last else _SNDMORE
            if type(frame) is not bytes or len(frame) > SMALL_FRAME:
                try:
                    self._send_frame(frame, flags)
                except zmq.Again:
                    if n:
                        raise
                    return False
            elif send(handle, frame, size_t(len(frame)), flags) < 0:
                code = ctypes.get_errno()
                # ZeroMQ takes the rest of a message once it took the first frame.
                if code == errno.EAGAIN and not n:
                    return False
                raise _error(code)
        return True

    def recv(self) -> list[bytes]:
        """One message's frames; empty when no message waits.

        Raises:
            zmq.ZMQError: a failure other than "none waits".
        """
        self._check_open()
        lib, msg, handle = self._lib, self._msg, self._handle
        frames: list[bytes] = []
        while True:
            size = lib.msg_recv(msg, handle, _NOBLOCK)
            if size < 0:
                code = ctypes.get_errno()
                if code == errno.EAGAIN and not frames:
                    return frames
                raise _error(code)
            if size == _INT_MAX:  # what zmq_msg_recv says for any frame at least this long
                size = lib.msg_size(msg)
            if size:
                data = lib.msg_data(msg)
                assert data is not None  # a frame with bytes has somewhere to hold them
                frames.append(ctypes.string_at(data, size))
            else:
                frames.append(b"")
            more = lib.msg_more(msg)
            if size > SMALL_FRAME:  # let ZeroMQ free a long frame now, not at the next one
                lib.msg_close(msg)
                lib.msg_init(msg)
            if not more:
                return frames


def socket_calls(
    sock: zmq.Socket[bytes], send_frame: Callable[[bytes, int], object]
) -> SocketCalls | None:
    """GIL-keeping calls for ``sock``, or None where libzmq cannot be reached (see above).

    ``send_frame(frame, flags)`` is pyzmq's send, for the frames these calls leave to it
    (long, or not bytes).
    """
    # pyzmq's own flag for a closed socket; a pyzmq without it gets its own calls.
    if _lib is None or not isinstance(getattr(sock, "_closed", None), bool):
        return None
    return SocketCalls(_lib, sock, ctypes.c_void_p(sock.underlying), send_frame)
