"""A lean measuring client: raw ZeroMQ sockets, signed with jupyter_client's ``Session``.

jupyter_client's blocking client hands every message through a thread and deserialises (and
verifies) all of it; in the hot loops (1000 pipelined cells, 100,000 printed lines) that cost
would be measured instead of the kernel's. This client:

* signs what it sends with ``jupyter_client.session.Session`` (the kernel verifies it);
* does not verify the signature of what it receives (it trusts the kernel it started) and parses
  only the header and parent header of each message; ``content`` is parsed when it is read;
* polls shell, control and iopub from one thread with ``zmq.Poller`` and stamps each message
  with ``time.perf_counter()`` as it is taken from its socket;
* sets unlimited high-water marks on its sockets, so it never makes the kernel's sockets drop
  or wait, and a 5 ms reconnect interval, so a kernel that binds late is reached promptly.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import zmq
from jupyter_client.session import Session

try:
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is installed by `nox -s bench`
    import json

    _loads = json.loads

DELIM = b"<IDS|MSG>"
CHANNELS = ("shell", "control", "iopub")


class Msg:
    """One received message; ``content`` is parsed on first access."""

    __slots__ = ("_content", "_raw_content", "channel", "header", "parent", "received")

    def __init__(self, channel: str, frames: list[bytes], received: float) -> None:
        i = frames.index(DELIM)
        self.channel = channel
        self.received = received
        self.header: dict[str, Any] = _loads(frames[i + 2])
        self.parent: dict[str, Any] = _loads(frames[i + 3])
        self._raw_content = frames[i + 5]
        self._content: dict[str, Any] | None = None

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type", ""))

    @property
    def parent_id(self) -> str | None:
        return self.parent.get("msg_id")

    @property
    def content(self) -> dict[str, Any]:
        if self._content is None:
            self._content = _loads(self._raw_content)
        return self._content

    def is_idle(self) -> bool:
        return self.msg_type == "status" and self.content.get("execution_state") == "idle"

    def __repr__(self) -> str:
        return f"<{self.channel} {self.msg_type} parent={self.parent_id}>"


class Wire:
    """Sockets to one kernel: DEALER on shell and control, SUB on iopub.

    Args:
        ctx: the ZeroMQ context to make sockets in.
        info: the kernel's connection info (``KernelManager.get_connection_info()``).
        session: a ``Session`` holding the kernel's key and signature scheme.
    """

    def __init__(self, ctx: zmq.Context[Any], info: Mapping[str, Any], session: Session) -> None:
        self.session = session
        self.sockets: dict[str, zmq.Socket[bytes]] = {}
        transport, ip = info["transport"], info["ip"]
        for channel, kind in (("shell", zmq.DEALER), ("control", zmq.DEALER), ("iopub", zmq.SUB)):
            sock: zmq.Socket[bytes] = ctx.socket(kind)
            sock.linger = 0
            sock.rcvhwm = 0
            sock.sndhwm = 0
            sock.setsockopt(zmq.RECONNECT_IVL, 5)
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            port = info[f"{channel}_port"]
            address = f"tcp://{ip}:{port}" if transport == "tcp" else f"ipc://{ip}-{port}"
            sock.connect(address)
            self.sockets[channel] = sock
        self._by_socket = {sock: name for name, sock in self.sockets.items()}
        self.poller = zmq.Poller()
        for sock in self.sockets.values():
            self.poller.register(sock, zmq.POLLIN)
        self._ready: collections.deque[Msg] = collections.deque()
        self.alive: Callable[[], bool] | None = None
        """If set, checked after each quiet second while waiting: a dead kernel fails at once."""

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close(linger=0)

    # -- sending -------------------------------------------------------------------------------

    def prepare(
        self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any] | None = None
    ) -> tuple[str, list[bytes]]:
        """A signed message ready to send, and its id (so a hot loop only sends)."""
        msg = self.session.msg(msg_type, content, metadata=metadata)
        return str(msg["header"]["msg_id"]), self.session.serialize(msg)

    def send(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        msg_id, frames = self.prepare(msg_type, content or {}, metadata)
        self.sockets[channel].send_multipart(frames)
        return msg_id

    def send_frames(self, channel: str, frames: list[bytes]) -> None:
        self.sockets[channel].send_multipart(frames)

    def execute(self, code: str, *, silent: bool = False) -> str:
        return self.send("shell", "execute_request", execute_content(code, silent=silent))

    # -- receiving -----------------------------------------------------------------------------

    def next(self, timeout: float) -> Msg | None:
        """The next message on any channel, or None after ``timeout`` seconds."""
        if self._ready:
            return self._ready.popleft()
        events = self.poller.poll(max(0, int(timeout * 1000)))
        if not events:
            return None
        for sock, _ in events:
            channel = self._by_socket[sock]
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                # Stamped one by one: messages that arrive while this loop drains the socket
                # must not take the time the poll returned, which would make a kernel that
                # streams look faster than it is.
                self._ready.append(Msg(channel, frames, time.perf_counter()))
        return self._ready.popleft() if self._ready else None

    def messages(self, timeout: float, what: str = "a message") -> Iterator[Msg]:
        """Messages until the caller stops iterating; TimeoutError after ``timeout`` s."""
        deadline = time.perf_counter() + timeout
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within {timeout:g} s")
            msg = self.next(min(remaining, 1.0))
            if msg is not None:
                yield msg
            elif self.alive is not None and not self.alive():
                raise KernelDiedError(f"the kernel died while waiting for {what}")

    def drain(self, quiet: float = 0.05) -> int:
        """Drop every message until none arrives for ``quiet`` seconds; how many were dropped."""
        dropped = 0
        while self.next(quiet) is not None:
            dropped += 1
        return dropped

    def reply(self, msg_id: str, channel: str = "shell", timeout: float = 30.0) -> Msg:
        """The reply to ``msg_id`` on ``channel``; every other message is dropped."""
        for msg in self.messages(timeout, f"{channel} reply"):
            if msg.channel == channel and msg.parent_id == msg_id:
                return msg
        raise AssertionError("unreachable")

    def until(
        self,
        msg_id: str,
        *,
        reply: str | None = "shell",
        idle: bool = True,
        on_iopub: Callable[[Msg], None] | None = None,
        stop: Callable[[Msg], bool] | None = None,
        timeout: float = 30.0,
    ) -> Done:
        """Collect the messages of request ``msg_id`` until its reply and its ``idle`` arrived.

        Args:
            msg_id: the request.
            reply: the channel its reply comes on, or None not to wait for a reply.
            idle: whether to wait for its ``idle`` status on iopub.
            on_iopub: called with each iopub message of the request.
            stop: if given, return as soon as it is true for a message of the request.
            timeout: seconds before TimeoutError.

        Messages of other requests are dropped.
        """
        done = Done()
        need_reply, need_idle = reply is not None, idle
        for msg in self.messages(timeout, f"end of request {msg_id[:8]}"):
            if msg.parent_id != msg_id:
                continue
            if msg.channel == "iopub":
                if on_iopub is not None:
                    on_iopub(msg)
                if msg.is_idle():
                    done.idle = msg.received
                    need_idle = False
            elif msg.channel == reply:
                done.reply = msg
                need_reply = False
            if stop is not None and stop(msg):
                done.stopped = msg
                return done
            if stop is None and not need_reply and not need_idle:
                return done
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until shell answers and iopub delivers; the kernel_info reply's content.

        A SUB socket misses what is published before its subscription reached the kernel, so
        this repeats kernel_info until the request's ``idle`` status arrives on iopub.
        """
        deadline = time.perf_counter() + timeout
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"kernel not ready within {timeout:g} s")
            msg_id = self.send("shell", "kernel_info_request")
            info = self.reply(msg_id, "shell", timeout=remaining).content
            try:
                self.until(msg_id, reply=None, idle=True, timeout=0.5)
            except TimeoutError:
                continue
            self.drain()
            return info


class KernelDiedError(AssertionError):
    """The kernel process exited while the client waited for it."""


class Done:
    """What :meth:`Wire.until` saw: the reply, the idle's arrival time, the stopping message."""

    __slots__ = ("idle", "reply", "stopped")

    def __init__(self) -> None:
        self.reply: Msg | None = None
        self.idle: float | None = None
        self.stopped: Msg | None = None

    @property
    def end(self) -> float:
        """When both the reply and the idle had arrived."""
        times = [t for t in (self.reply.received if self.reply else None, self.idle) if t]
        return max(times)


def execute_content(code: str, *, silent: bool = False) -> dict[str, Any]:
    return {
        "code": code,
        "silent": silent,
        "store_history": not silent,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": False,
    }
