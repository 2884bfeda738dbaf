"""The Jupyter wire protocol without I/O: frames in, messages out, and back.

A message on a ROUTER or PUB socket is a list of frames (messaging spec, "The Wire Protocol")::

    [identity, ..., b"<IDS|MSG>", signature, header, parent_header, metadata, content, buffer, ...]

:class:`Session` turns such a list into a :class:`Message` (:meth:`Session.unpack`) and a message
into frames (:meth:`Session.pack`). It never touches a socket, a loop or a thread: callers pass
bytes and get values, so every rule below is testable without a kernel.

Rules:
1. The signature is an HMAC over the four JSON frames, with the connection file's key and
   ``signature_scheme`` (``hmac-<any hashlib digest>``). An empty key means messages are neither
   signed nor checked. Signatures are compared in constant time.
2. A signature is accepted once. The last ``replay_window`` signatures are remembered; a message
   that repeats one is rejected as a replay. (An unsigned session cannot detect replays.)
3. The signature is checked before any JSON is parsed: unauthenticated bytes reach no parser.
4. :meth:`Session.unpack` returns a message or raises :class:`WireError` (one of its
   subclasses); it raises nothing else, whatever the frames hold.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import time
import types
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from . import jsonutil

__all__ = [
    "DELIMITER",
    "PROTOCOL_VERSION",
    "FramingError",
    "Header",
    "Message",
    "MessageFormatError",
    "ReplayError",
    "Session",
    "SignatureError",
    "WireError",
    "timestamp",
]

PROTOCOL_VERSION = "5.5"
DELIMITER = b"<IDS|MSG>"

# The shared default for empty fields; read-only so no message can change another's.
_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


class WireError(Exception):
    """Frames that do not make a valid, authentic message; the message is to be dropped."""


class FramingError(WireError):
    """No ``<IDS|MSG>`` delimiter, or too few frames after it."""


class SignatureError(WireError):
    """The signature is missing, malformed, or does not match the frames."""


class ReplayError(WireError):
    """The signature was seen before: the same message was sent again."""


class MessageFormatError(WireError):
    """A frame is not the JSON object the protocol requires (bad UTF-8, bad JSON, wrong type,
    missing header field)."""


# The current second, formatted, is kept: a header's date is made for every message, and
# datetime's isoformat took 2 µs of the 3 its making cost. One tuple, replaced whole, so the
# two loops' threads never see a second and a text that do not belong together.
_second: tuple[int, str] = (-1, "")


def timestamp() -> str:
    """Now, in UTC, as ISO 8601 with microseconds (``2026-11-21T20:11:06.123456+00:00``), as
    in every header's ``date``."""
    global _second
    now = time.time()
    second, text = _second
    if int(now) != second:
        second = int(now)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, text)
    return f"{text}.{int((now - second) * 1e6):06d}+00:00"


# The process id goes into every message id; reading it is a system call, so it is kept here
# and refreshed in a forked child.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_refresh_pid)

# What an empty metadata or content object is written as: the empty default is a read-only
# mapping, which orjson would hand to jsonutil's fallback for every message.
_EMPTY_OBJECT = b"{}"


@attrs.frozen
class Header:
    """A message header (spec: "Message Header")."""

    msg_id: str
    """Unique id of this message."""
    msg_type: str
    """What the message is, e.g. ``execute_request``."""
    session: str
    """Id of the sending session."""
    username: str = ""
    """User name of the sender."""
    date: str = ""
    """ISO 8601 time the message was made."""
    version: str = PROTOCOL_VERSION
    """Messaging protocol version of the sender."""
    extra: Mapping[str, Any] = _EMPTY
    """Fields beyond the six above (protocol 5.5's ``subshell_id``, or a client's own); kept
    verbatim so a header echoed as a reply's ``parent_header`` is the one the client sent."""
    raw: bytes | None = attrs.field(default=None, eq=False, repr=False)
    """The header frame as received, if it was; a reply echoes these bytes as its
    ``parent_header`` (cheaper than writing the JSON again, and always writable)."""

    def to_dict(self) -> dict[str, Any]:
        """The header as the JSON object the wire carries."""
        d: dict[str, Any] = {
            "msg_id": self.msg_id,
            "msg_type": self.msg_type,
            "session": self.session,
            "username": self.username,
            "date": self.date,
            "version": self.version,
        }
        if self.extra:
            d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: object, raw: bytes | None = None) -> Header:
        """Validate a parsed header object (``raw``: the frame it was parsed from).

        Raises:
            MessageFormatError: ``d`` is not an object, or ``msg_id``, ``msg_type`` or
                ``session`` is missing or not a string.
        """
        if not isinstance(d, dict):
            raise MessageFormatError(f"header is a {type(d).__name__}, not an object")
        for key in ("msg_id", "msg_type", "session"):
            if not isinstance(d.get(key), str):
                raise MessageFormatError(f"header field {key!r} is missing or not a string")
        for key in ("username", "date", "version"):
            if not isinstance(d.get(key, ""), str):
                raise MessageFormatError(f"header field {key!r} is not a string")
        extra = {k: v for k, v in d.items() if k not in _HEADER_FIELDS}
        # Only the extra fields can nest: the six above are strings.
        if extra and _too_deep(extra, MAX_HEADER_DEPTH):
            # It is echoed as parent_header to every client: jupyter_client's parser recurses.
            raise MessageFormatError(f"header nests deeper than {MAX_HEADER_DEPTH} levels")
        return cls(
            msg_id=d["msg_id"],
            msg_type=d["msg_type"],
            session=d["session"],
            username=d.get("username", ""),
            date=d.get("date", ""),
            version=d.get("version", ""),
            extra=extra or _EMPTY,
            raw=raw,
        )


_HEADER_FIELDS = frozenset({"msg_id", "msg_type", "session", "username", "date", "version"})

#: How deep a header's values may nest; a header is a flat object in every client we know.
MAX_HEADER_DEPTH = 32


def _too_deep(value: object, limit: int) -> bool:
    """Whether ``value`` nests lists/objects more than ``limit`` levels (no recursion)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Sequence[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


@attrs.frozen
class Message:
    """A Jupyter message: what the frames mean, without the framing."""

    header: Header
    """Who sent what, and when."""
    parent_header: Mapping[str, Any] = _EMPTY
    """The header of the request this message answers or was caused by; empty when none."""
    metadata: Mapping[str, Any] = _EMPTY
    """Free-form metadata (spec: "Metadata")."""
    content: Mapping[str, Any] = _EMPTY
    """The body; its shape depends on ``msg_type``."""
    buffers: Sequence[bytes] = ()
    """Binary frames after the content (comms, widgets)."""
    identities: Sequence[bytes] = ()
    """ROUTER routing ids before the delimiter (a PUB topic on iopub)."""
    parent_raw: bytes | None = attrs.field(default=None, eq=False, repr=False)
    """``parent_header`` as the bytes the parent arrived with, if known (see ``Header.raw``)."""

    @property
    def msg_type(self) -> str:
        """Shorthand for ``header.msg_type``."""
        return self.header.msg_type

    @property
    def msg_id(self) -> str:
        """Shorthand for ``header.msg_id``."""
        return self.header.msg_id


def _dumps_object(obj: Mapping[str, Any]) -> bytes:
    return jsonutil.dumps(obj) if obj else _EMPTY_OBJECT


def _parse_object(frame: bytes, what: str) -> dict[str, Any]:
    try:
        value = jsonutil.loads(frame)
    except ValueError as exc:
        raise MessageFormatError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MessageFormatError(f"{what} is a {type(value).__name__}, not an object")
    return value


@attrs.define(eq=False)
class Session:
    """One end of a signed conversation: packs, unpacks, signs and checks messages.

    Args:
        key: the connection file's ``key`` as bytes; empty for unsigned messages.
        signature_scheme: ``hmac-`` followed by a hashlib digest name.
        session_id: this end's session id, put in every header it makes.
        username: put in every header it makes.
        replay_window: how many recent signatures are remembered for replay detection.

    Raises:
        ValueError: the signature scheme is not ``hmac-<known digest>``.
    """

    key: bytes = attrs.field(converter=bytes)
    signature_scheme: str = "hmac-sha256"
    session_id: str = attrs.field(factory=lambda: os.urandom(16).hex())
    username: str = "kernel"
    replay_window: int = 1 << 16
    _hmac: hmac.HMAC | None = attrs.field(init=False, default=None)
    _seen: set[bytes] = attrs.field(init=False, factory=set)
    _seen_order: deque[bytes] = attrs.field(init=False, factory=deque)
    _ids: itertools.count[int] = attrs.field(init=False, factory=lambda: itertools.count(1))

    def __attrs_post_init__(self) -> None:
        scheme, _, digest = self.signature_scheme.partition("-")
        if scheme != "hmac" or not digest:
            raise ValueError(f"signature scheme {self.signature_scheme!r} is not hmac-<digest>")
        try:
            hashlib.new(digest)
        except ValueError:
            raise ValueError(f"unknown digest {digest!r} in {self.signature_scheme!r}") from None
        if self.key:
            # Key the HMAC once; each signature copies it (cheaper than re-keying per message).
            self._hmac = hmac.new(self.key, digestmod=digest)

    # -- signing -------------------------------------------------------------------------------

    def sign(self, parts: Sequence[bytes]) -> bytes:
        """Return the hex signature of the four JSON frames (empty when unsigned)."""
        if self._hmac is None:
            return b""
        mac = self._hmac.copy()
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode("ascii")

    def _check_signature(self, signature: bytes, parts: Sequence[bytes]) -> None:
        if self._hmac is None:
            return
        if not signature:
            raise SignatureError("message is unsigned but the session has a key")
        if not hmac.compare_digest(signature, self.sign(parts)):
            raise SignatureError("signature does not match the message")
        if signature in self._seen:
            raise ReplayError("signature was seen before (replayed message)")
        self._seen.add(signature)
        self._seen_order.append(signature)
        if len(self._seen_order) > self.replay_window:
            self._seen.discard(self._seen_order.popleft())

    # -- frames <-> messages -------------------------------------------------------------------

    def unpack(self, frames: Sequence[bytes]) -> Message:
        """Turn received frames into a message (rules 1-4 of the module).

        Raises:
            FramingError, SignatureError, ReplayError, MessageFormatError: all are
            :class:`WireError`; the frames are to be dropped.
        """
        try:
            split = list(frames).index(DELIMITER)
        except ValueError:
            raise FramingError("no <IDS|MSG> delimiter") from None
        if len(frames) - split < 6:
            raise FramingError(
                f"{len(frames) - split - 1} frames after the delimiter, at least 5 needed"
            )
        signature = bytes(frames[split + 1])
        parts = [bytes(f) for f in frames[split + 2 : split + 6]]
        self._check_signature(signature, parts)
        header = Header.from_dict(_parse_object(parts[0], "header"), raw=parts[0])
        return Message(
            header=header,
            parent_header=_parse_object(parts[1], "parent_header"),
            metadata=_parse_object(parts[2], "metadata"),
            content=_parse_object(parts[3], "content"),
            buffers=[bytes(b) for b in frames[split + 6 :]],
            identities=[bytes(i) for i in frames[:split]],
        )

    def pack(self, msg: Message) -> list[bytes]:
        """Turn a message into frames, signed, ready for ``send_multipart``.

        Raises:
            TypeError: the content or metadata holds an object JSON has no rule for.
            ValueError: the content or metadata is nested too deeply to write.
        """
        parts = [
            jsonutil.dumps(msg.header.to_dict()),
            msg.parent_raw if msg.parent_raw is not None else _dumps_object(msg.parent_header),
            _dumps_object(msg.metadata),
            _dumps_object(msg.content),
        ]
        return [*msg.identities, DELIMITER, self.sign(parts), *parts, *msg.buffers]

    # -- making messages -----------------------------------------------------------------------

    def new_id(self) -> str:
        """A message id unique to this session (cheaper than a uuid per message)."""
        # next() on a count is atomic: ids made by the two loops' threads never repeat.
        return f"{self.session_id}_{_pid}_{next(self._ids)}"

    def msg(
        self,
        msg_type: str,
        content: Mapping[str, Any] | None = None,
        *,
        parent: Message | None = None,
        metadata: Mapping[str, Any] | None = None,
        buffers: Sequence[bytes] = (),
        identities: Sequence[bytes] | None = None,
    ) -> Message:
        """Make a message from this session.

        Args:
            msg_type: the header's ``msg_type``.
            content: the body.
            parent: the request this message answers; its header becomes ``parent_header``
                and, unless ``identities`` is given, its identities route the reply.
            metadata: the metadata object.
            buffers: binary frames.
            identities: routing ids (or the iopub topic).
        """
        header = Header(
            msg_id=self.new_id(),
            msg_type=msg_type,
            session=self.session_id,
            username=self.username,
            date=timestamp(),
            version=PROTOCOL_VERSION,
        )
        if identities is None:
            identities = parent.identities if parent is not None else ()
        return Message(
            header=header,
            parent_header=parent.header.to_dict() if parent is not None else _EMPTY,
            parent_raw=parent.header.raw if parent is not None else None,
            metadata=metadata if metadata is not None else _EMPTY,
            content=content if content is not None else _EMPTY,
            buffers=buffers,
            identities=identities,
        )
