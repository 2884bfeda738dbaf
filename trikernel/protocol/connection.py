"""Connection information: which transport, address, ports and keys the kernel uses.

Parsing and printing only; reading and writing the file is the kernel's job
(:mod:`trikernel.kernel`), so this module stays free of I/O like the rest of the package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from . import jsonutil

__all__ = ["CHANNELS", "Channel", "ConnectionInfo"]

Channel = Literal["shell", "iopub", "stdin", "control", "hb"]
CHANNELS: tuple[Channel, ...] = ("shell", "iopub", "stdin", "control", "hb")


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535, got {value!r}")
    return value


# Z85 (ZeroMQ RFC 32), the text form of CurveZMQ keys: 32 bytes are 40 of these characters.
_Z85 = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)


def _curve_key(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    # Say what is wrong without showing the value: it may be the secret key.
    if not isinstance(value, str):
        problem = type(value).__name__
    elif len(value) != 40:
        problem = f"{len(value)} characters"
    elif not _Z85.issuperset(value):
        problem = "characters outside Z85"
    else:
        return
    raise ValueError(
        f"{attribute.name} must be a CurveZMQ key, 40 characters of Z85 text as "
        f"zmq.curve_keypair() makes; got {problem}"
    )


@attrs.frozen(kw_only=True)
class ConnectionInfo:
    """The contents of a connection file (spec: "Connection files")."""

    transport: Literal["tcp", "ipc"] = "tcp"
    """``tcp`` or ``ipc`` (Unix domain sockets named ``<ip>-<port>``)."""
    ip: str = "127.0.0.1"
    """Address to bind (tcp) or path prefix (ipc). Loopback unless the file says otherwise."""
    shell_port: int = attrs.field(default=0, converter=_port)
    """Port of the shell ROUTER; 0 until a port is chosen."""
    iopub_port: int = attrs.field(default=0, converter=_port)
    """Port of the iopub XPUB."""
    stdin_port: int = attrs.field(default=0, converter=_port)
    """Port of the stdin ROUTER."""
    control_port: int = attrs.field(default=0, converter=_port)
    """Port of the control ROUTER."""
    hb_port: int = attrs.field(default=0, converter=_port)
    """Port of the heartbeat echo."""
    key: str = ""
    """HMAC key; empty means unsigned messages."""
    signature_scheme: str = "hmac-sha256"
    """``hmac-<hashlib digest>``."""
    kernel_name: str = ""
    """Name of the kernelspec the kernel was started from, if the launcher said."""
    curve_publickey: str | None = attrs.field(default=None, validator=_curve_key)
    """The kernel's CurveZMQ public key (Z85), which clients use as ``curve_serverkey``; None
    (and so is ``curve_secretkey``) when the sockets are not encrypted."""
    curve_secretkey: str | None = attrs.field(default=None, validator=_curve_key, repr=False)
    """The matching secret key (Z85); given exactly when ``curve_publickey`` is. Left out of
    ``repr``, so a logged ConnectionInfo does not carry it."""

    def __attrs_post_init__(self) -> None:
        # One key alone is a broken launcher, not a request for plain text: refuse it rather
        # than serve unencrypted sockets to a client that expects encryption.
        if (self.curve_publickey is None) != (self.curve_secretkey is None):
            given = "curve_publickey" if self.curve_secretkey is None else "curve_secretkey"
            raise ValueError(
                f"curve_publickey and curve_secretkey go together, but only {given} is given"
            )

    def port(self, channel: Channel) -> int:
        """The port of ``channel``."""
        return int(getattr(self, f"{channel}_port"))

    def url(self, channel: Channel, port: int | None = None) -> str:
        """The ZeroMQ endpoint of ``channel`` (or of ``port`` on this transport)."""
        port = self.port(channel) if port is None else port
        if self.transport == "ipc":
            return f"ipc://{self.ip}-{port}"
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"tcp://{host}:{port}"

    def with_ports(self, ports: Mapping[Channel, int]) -> ConnectionInfo:
        """A copy with the given channels' ports."""
        changes: dict[str, Any] = {f"{ch}_port": p for ch, p in ports.items()}
        return attrs.evolve(self, **changes)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConnectionInfo:
        """Validate a parsed connection file; unknown keys are ignored.

        Raises:
            ValueError: a field has the wrong type, the transport is unknown, or only one of
                the two Curve keys is given.
        """
        transport = d.get("transport", "tcp")
        if transport not in ("tcp", "ipc"):
            raise ValueError(f"transport must be 'tcp' or 'ipc', got {transport!r}")
        fields: dict[str, Any] = {"transport": transport}
        for name in ("ip", "key", "signature_scheme", "kernel_name"):
            if name in d:
                if not isinstance(d[name], str):
                    raise ValueError(f"{name} must be a string, got {d[name]!r}")
                fields[name] = d[name]
        for name in ("curve_publickey", "curve_secretkey"):
            # null reads as absent, as jupyter_client's clients read it.
            if d.get(name) is not None:
                fields[name] = d[name]
        for ch in CHANNELS:
            if f"{ch}_port" in d:
                fields[f"{ch}_port"] = d[f"{ch}_port"]
        return cls(**fields)

    @classmethod
    def from_json(cls, data: bytes | str) -> ConnectionInfo:
        """Parse a connection file's text.

        Raises:
            ValueError: not JSON, not an object, or a field is wrong.
        """
        d = jsonutil.loads(data)
        if not isinstance(d, dict):
            raise ValueError("connection file is not a JSON object")
        return cls.from_dict(d)

    def to_json(self) -> bytes:
        """The connection file's text; the Curve keys only when there are some."""
        # Only the Curve keys can be None: leave them out, as jupyter_client does.
        return jsonutil.dumps({k: v for k, v in attrs.asdict(self).items() if v is not None})

    @staticmethod
    def new_key() -> str:
        """A fresh random HMAC key (what a kernel writes when it makes its own file)."""
        return os.urandom(32).hex()
