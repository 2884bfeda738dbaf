"""Raw ZeroMQ clients for hostile-input tests: send exactly the frames a test means.

:class:`Wire` is a plain DEALER on one of the kernel's ROUTER channels (shell, control, stdin).
It signs with the connection key itself, so a test can send a wrong signature, no delimiter,
invalid UTF-8 or a 50 MB frame, and it checks the kernel's signature on everything it receives.
:class:`Subscriber` is a plain SUB on iopub that reads tens of thousands of messages cheaply.

Waits follow the rule of ``tests/kernel/conftest.py``: wait for the message that proves a
state, with a timeout that fails loudly; never sleep a guessed time.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import zmq
from zmq.utils.monitor import recv_monitor_message

try:  # Fast enough to read the load tests' tens of thousands of messages as they come.
    import orjson
except ImportError:  # pragma: no cover - the no-orjson session
    orjson = None


def _loads(data: bytes) -> Any:
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # e.g. the escape of a lone surrogate, which json reads
    return json.loads(data)


DELIMITER = b"<IDS|MSG>"
TIMEOUT = 20.0
Msg = dict[str, Any]


def hmac_hex(key: bytes, parts: Iterable[bytes], digest: str = "sha256") -> bytes:
    """The hex HMAC of ``parts`` (protocol: over header, parent, metadata, content)."""
    mac = hmac.new(key, digestmod=digest)
    for part in parts:
        mac.update(part)
    return mac.hexdigest().encode("ascii")


def new_header(msg_type: str, **fields: Any) -> dict[str, Any]:
    """A client header for ``msg_type`` with a fresh ``msg_id``; ``fields`` override it."""
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "session": "hostile-client",
        "username": "mallory",
        "date": "2024-01-01T00:00:00+00:00",
        "version": "5.4",
    }
    header.update(fields)
    return header


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def json_parts(
    header: Mapping[str, Any],
    content: Mapping[str, Any] | None = None,
    parent: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[bytes]:
    """The four JSON frames of a message."""
    return [dumps(header), dumps(parent or {}), dumps(metadata or {}), dumps(content or {})]


def parse(frames: Sequence[bytes], key: bytes) -> Msg:
    """A received message as a dict; fails if the kernel's signature is wrong."""
    split = list(frames).index(DELIMITER)
    signature, *parts = frames[split + 1 : split + 6]
    if key:
        assert hmac.compare_digest(signature, hmac_hex(key, parts)), "bad signature from kernel"
    header, parent, metadata, content = (_loads(p) for p in parts)
    return {
        "identities": list(frames[:split]),
        "header": header,
        "msg_type": header["msg_type"],
        "parent_header": parent,
        "metadata": metadata,
        "content": content,
        "buffers": list(frames[split + 6 :]),
    }


def parent_id(msg: Msg) -> str | None:
    value = msg["parent_header"].get("msg_id")
    return value if isinstance(value, str) else None


@attrs.define(eq=False)
class Wire:
    """A DEALER connected to one of the kernel's request channels.

    Args:
        sock: the connected DEALER (closed by :meth:`close`).
        key: the connection key; empty for an unsigned session.
    """

    sock: zmq.Socket[bytes]
    key: bytes

    @classmethod
    def connect(
        cls,
        ctx: zmq.Context[zmq.Socket[bytes]],
        info: Mapping[str, Any],
        channel: str,
        *,
        identity: bytes | None = None,
        wait_connected: bool = False,
        options: Mapping[str, int] | None = None,
    ) -> Wire:
        """Connect a DEALER to ``channel``.

        Args:
            identity: the routing id (the kernel routes stdin requests by it).
            wait_connected: return only once the ZeroMQ handshake with the kernel is done.
                Needed where the kernel sends first (stdin): a ROUTER drops messages for a
                peer it does not know yet.
            options: socket options by name, set before connecting (``rcvhwm=2``).
        """
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        # No client-side limit: a test that floods the kernel reads replies as it goes, and
        # what it has not read yet must not be what decides whether a reply is lost.
        sock.rcvhwm = 0
        if identity is not None:
            sock.identity = identity
        for name, value in (options or {}).items():
            sock.setsockopt(getattr(zmq, name.upper()), value)
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED) if wait_connected else None
        sock.connect(f"tcp://{info['ip']}:{info[f'{channel}_port']}")
        if monitor is not None:
            try:
                if not monitor.poll(TIMEOUT * 1000):
                    raise AssertionError(f"no handshake with the kernel's {channel} in {TIMEOUT} s")
                event = recv_monitor_message(monitor)
                assert event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED, event
            finally:
                sock.disable_monitor()
                monitor.close(linger=0)
        key = info["key"]
        return cls(sock, key.encode() if isinstance(key, str) else bytes(key))

    def close(self) -> None:
        self.sock.close(linger=0)

    # -- sending -----------------------------------------------------------------------------

    def sign(self, parts: Iterable[bytes]) -> bytes:
        return hmac_hex(self.key, parts) if self.key else b""

    def signed(self, parts: Sequence[bytes], *, prefix: Sequence[bytes] = ()) -> list[bytes]:
        """Correctly signed frames for ``parts`` (which may hold anything at all)."""
        return [*prefix, DELIMITER, self.sign(parts[:4]), *parts]

    def message(
        self,
        msg_type: str,
        content: Mapping[str, Any] | None = None,
        *,
        parent: Mapping[str, Any] | None = None,
        buffers: Sequence[bytes] = (),
        prefix: Sequence[bytes] = (),
    ) -> tuple[str, list[bytes]]:
        """A valid, signed message: its msg_id and its frames."""
        header = new_header(msg_type)
        parts = json_parts(header, content, parent)
        return header["msg_id"], self.signed([*parts, *buffers], prefix=prefix)

    def send(self, frames: Sequence[bytes]) -> None:
        if not self.sock.poll(TIMEOUT * 1000, zmq.POLLOUT):
            raise AssertionError(f"could not send within {TIMEOUT} s")
        self.sock.send_multipart(list(frames), copy=False)

    def request(
        self,
        msg_type: str,
        content: Mapping[str, Any] | None = None,
        *,
        parent: Mapping[str, Any] | None = None,
        buffers: Sequence[bytes] = (),
    ) -> str:
        """Send a valid, signed message; return its msg_id."""
        msg_id, frames = self.message(msg_type, content, parent=parent, buffers=buffers)
        self.send(frames)
        return msg_id

    # -- receiving ---------------------------------------------------------------------------

    def recv(self, timeout: float = TIMEOUT) -> Msg:
        return receive(self.sock, self.key, timeout)

    def until(self, msg_id: str, timeout: float = TIMEOUT) -> list[Msg]:
        """Everything received up to and including the reply to ``msg_id``."""
        return receive_until(
            self.sock, self.key, lambda m: parent_id(m) == msg_id, timeout, f"no reply to {msg_id}"
        )

    def reply(self, msg_id: str, timeout: float = TIMEOUT) -> Msg:
        """The reply to ``msg_id``; fails if anything else arrives before it."""
        *before, reply = self.until(msg_id, timeout)
        assert before == [], f"unexpected before the reply: {before}"
        return reply


@attrs.define(eq=False)
class Subscriber:
    """A SUB socket on iopub that reads only what a test counts (no datetime parsing)."""

    sock: zmq.Socket[bytes]
    key: bytes

    @classmethod
    def connect(
        cls, ctx: zmq.Context[zmq.Socket[bytes]], info: Mapping[str, Any], *, rcvhwm: int = 0
    ) -> Subscriber:
        """Subscribe to everything; return once the kernel's welcome arrived.

        Args:
            rcvhwm: messages this client's ZeroMQ queue holds; 0 (no limit) means the kernel
                never waits for this subscriber, however late the test reads.
        """
        sock = ctx.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = rcvhwm
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(f"tcp://{info['ip']}:{info['iopub_port']}")
        key = info["key"]
        sub = cls(sock, key.encode() if isinstance(key, str) else bytes(key))
        # protocol 5.4: the kernel welcomes every subscription; after it nothing is missed.
        sub.until(lambda m: m["msg_type"] == "iopub_welcome")
        return sub

    def close(self) -> None:
        self.sock.close(linger=0)

    def recv(self, timeout: float = TIMEOUT) -> Msg:
        return receive(self.sock, self.key, timeout)

    def until(self, predicate: Any, timeout: float = TIMEOUT) -> list[Msg]:
        """iopub messages up to and including the first that matches ``predicate``."""
        return receive_until(self.sock, self.key, predicate, timeout, "iopub: condition not met")


def receive(sock: zmq.Socket[bytes], key: bytes, timeout: float = TIMEOUT) -> Msg:
    """One message from ``sock``, checked with ``key``; fails after ``timeout`` seconds."""
    if not sock.poll(timeout * 1000):
        raise AssertionError(f"nothing received within {timeout} s")
    return parse(sock.recv_multipart(), key)


def receive_until(
    sock: zmq.Socket[bytes], key: bytes, predicate: Any, timeout: float, failure: str
) -> list[Msg]:
    """Messages from ``sock`` up to and including the first matching ``predicate``."""
    deadline = time.monotonic() + timeout
    seen: list[Msg] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"{failure} within {timeout} s; saw {len(seen)} messages, last "
                f"{[(m['msg_type'], parent_id(m)) for m in seen[-5:]]}"
            )
        msg = receive(sock, key, remaining)
        seen.append(msg)
        if predicate(msg):
            return seen


def is_idle_of(msg_id: str) -> Any:
    """Predicate: the ``idle`` status that ends request ``msg_id``."""
    return lambda m: (
        m["msg_type"] == "status"
        and m["content"]["execution_state"] == "idle"
        and parent_id(m) == msg_id
    )


def stream_of(msgs: Iterable[Msg], msg_id: str, name: str = "stdout") -> str:
    """The text request ``msg_id`` wrote to stream ``name``, in arrival order."""
    return "".join(
        m["content"]["text"]
        for m in msgs
        if m["msg_type"] == "stream" and m["content"]["name"] == name and parent_id(m) == msg_id
    )


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux: /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")
