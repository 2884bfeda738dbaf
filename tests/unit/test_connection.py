"""Connection files: parsing, printing and the endpoints the kernel binds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trikernel.protocol import CHANNELS, ConnectionInfo

# What jupyter_client writes (plus the keys it adds that the kernel does not use).
JUPYTER_CLIENT_FILE: dict[str, Any] = {
    "shell_port": 50001,
    "iopub_port": 50002,
    "stdin_port": 50003,
    "control_port": 50004,
    "hb_port": 50005,
    "ip": "127.0.0.1",
    "key": "8f2a4c6e-1b3d-4f5a-9c7e-0a1b2c3d4e5f",
    "transport": "tcp",
    "signature_scheme": "hmac-sha256",
    "kernel_name": "trikernel",
    "jupyter_session": "/home/me/notebook.ipynb",
    "f": 1,
}

# A CurveZMQ key pair as zmq.curve_keypair() makes it (public, secret), for these tests only.
CURVE_PUBLIC = "{#@xa)K3^D)ogvG!0K(M+md8G:V]z}/DH9C?7eWT"
CURVE_SECRET = "RI%J)>aXH]Bwo8$>D4i41rFCTH^[?!0iz6Ru!uw-"


def test_a_jupyter_client_file_is_read() -> None:
    info = ConnectionInfo.from_json(json.dumps(JUPYTER_CLIENT_FILE))

    assert info.transport == "tcp"
    assert info.ip == "127.0.0.1"
    assert {ch: info.port(ch) for ch in CHANNELS} == {
        "shell": 50001,
        "iopub": 50002,
        "stdin": 50003,
        "control": 50004,
        "hb": 50005,
    }
    assert info.key == JUPYTER_CLIENT_FILE["key"]
    assert info.signature_scheme == "hmac-sha256"
    assert info.kernel_name == "trikernel"


def test_to_json_then_from_json_is_the_same_info() -> None:
    info = ConnectionInfo(
        transport="ipc",
        ip="/run/user/1000/kernel-x",
        shell_port=1,
        iopub_port=2,
        stdin_port=3,
        control_port=4,
        hb_port=65535,
        key=ConnectionInfo.new_key(),
        signature_scheme="hmac-sha512",
        kernel_name="trikernel-dev",
    )
    assert ConnectionInfo.from_json(info.to_json()) == info
    assert ConnectionInfo.from_json(info.to_json().decode("utf-8")) == info


def test_to_json_writes_the_connection_file_keys() -> None:
    written = json.loads(ConnectionInfo(shell_port=5, key="k").to_json())
    assert written == {
        "transport": "tcp",
        "ip": "127.0.0.1",
        "shell_port": 5,
        "iopub_port": 0,
        "stdin_port": 0,
        "control_port": 0,
        "hb_port": 0,
        "key": "k",
        "signature_scheme": "hmac-sha256",
        "kernel_name": "",
    }  # no Curve keys: clients take their presence to mean "encrypted"


def test_curve_keys_are_read_from_a_jupyter_client_file() -> None:
    file = {**JUPYTER_CLIENT_FILE, "curve_publickey": CURVE_PUBLIC, "curve_secretkey": CURVE_SECRET}
    info = ConnectionInfo.from_json(json.dumps(file))
    assert info.curve_publickey == CURVE_PUBLIC
    assert info.curve_secretkey == CURVE_SECRET
    assert info.key == JUPYTER_CLIENT_FILE["key"]


def test_curve_keys_round_trip_and_are_written() -> None:
    info = ConnectionInfo(
        shell_port=5, key="k", curve_publickey=CURVE_PUBLIC, curve_secretkey=CURVE_SECRET
    )
    assert ConnectionInfo.from_json(info.to_json()) == info
    written = json.loads(info.to_json())
    assert written["curve_publickey"] == CURVE_PUBLIC
    assert written["curve_secretkey"] == CURVE_SECRET
    assert info.with_ports({"hb": 6}).curve_secretkey == CURVE_SECRET


def test_without_curve_keys_none_are_read_or_written() -> None:
    info = ConnectionInfo.from_json(json.dumps(JUPYTER_CLIENT_FILE))
    assert info.curve_publickey is info.curve_secretkey is None
    assert not {"curve_publickey", "curve_secretkey"} & json.loads(info.to_json()).keys()
    # null is read as absent, as jupyter_client's clients read it.
    nulls = {"curve_publickey": None, "curve_secretkey": None}
    assert ConnectionInfo.from_dict(nulls) == ConnectionInfo()


@pytest.mark.parametrize(
    "fields",
    [
        {"curve_publickey": CURVE_PUBLIC},
        {"curve_secretkey": CURVE_SECRET},
        {"curve_publickey": CURVE_PUBLIC, "curve_secretkey": None},
    ],
    ids=["public-only", "secret-only", "secret-null"],
)
def test_one_curve_key_alone_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="curve_publickey and curve_secretkey go together"):
        ConnectionInfo.from_dict(fields)
    with pytest.raises(ValueError, match="go together"):
        ConnectionInfo(**fields)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (CURVE_SECRET[:-1], "39 characters"),
        (CURVE_SECRET + "0", "41 characters"),
        ("", "0 characters"),
        (CURVE_SECRET[:-1] + "~", "characters outside Z85"),
        (CURVE_SECRET[:-1] + " ", "characters outside Z85"),
        (CURVE_SECRET[:-1] + "\u00e9", "characters outside Z85"),
        (CURVE_SECRET.encode(), "got bytes"),
        (5, "got int"),
        ([CURVE_SECRET], "got list"),
    ],
    ids=["short", "long", "empty", "tilde", "space", "non-ascii", "bytes", "int", "list"],
)
def test_a_malformed_curve_key_is_named_but_not_shown(key: object, problem: str) -> None:
    for name in ("curve_publickey", "curve_secretkey"):
        fields = {"curve_publickey": CURVE_PUBLIC, "curve_secretkey": CURVE_SECRET, name: key}
        with pytest.raises(ValueError, match=f"^{name} must be a CurveZMQ key") as raised:
            ConnectionInfo.from_dict(fields)
        assert problem in str(raised.value)
        assert CURVE_SECRET[:30] not in str(raised.value)


def test_repr_leaves_out_the_curve_secret_key() -> None:
    info = ConnectionInfo(curve_publickey=CURVE_PUBLIC, curve_secretkey=CURVE_SECRET)
    assert CURVE_PUBLIC in repr(info)
    assert CURVE_SECRET not in repr(info)


def test_missing_keys_take_the_defaults() -> None:
    assert ConnectionInfo.from_json(b"{}") == ConnectionInfo()
    assert ConnectionInfo().key == ""  # unsigned unless the file says otherwise
    assert ConnectionInfo().ip == "127.0.0.1"  # loopback unless the file says otherwise


def test_unknown_keys_are_ignored() -> None:
    info = ConnectionInfo.from_json(b'{"shell_port": 7, "future_field": [1, 2], "f": null}')
    assert info == ConnectionInfo(shell_port=7)


@pytest.mark.parametrize(
    ("fields", "channel", "url"),
    [
        ({"ip": "127.0.0.1", "shell_port": 5555}, "shell", "tcp://127.0.0.1:5555"),
        ({"ip": "0.0.0.0", "hb_port": 1}, "hb", "tcp://0.0.0.0:1"),
        ({"ip": "*", "iopub_port": 9}, "iopub", "tcp://*:9"),
        ({"ip": "::1", "control_port": 5556}, "control", "tcp://[::1]:5556"),
        ({"ip": "fe80::1%eth0", "stdin_port": 2}, "stdin", "tcp://[fe80::1%eth0]:2"),
        (
            {"transport": "ipc", "ip": "/tmp/kernel-abc", "shell_port": 1},
            "shell",
            "ipc:///tmp/kernel-abc-1",
        ),
        ({"transport": "ipc", "ip": "kernel", "hb_port": 5}, "hb", "ipc://kernel-5"),
    ],
    ids=["tcp", "any-v4", "wildcard", "ipv6", "ipv6-scoped", "ipc-absolute", "ipc-relative"],
)
def test_url(fields: dict[str, Any], channel: Any, url: str) -> None:
    info = ConnectionInfo.from_dict(fields)
    assert info.url(channel) == url


def test_url_with_an_explicit_port() -> None:
    assert ConnectionInfo(shell_port=1).url("shell", port=2) == "tcp://127.0.0.1:2"
    assert ConnectionInfo(transport="ipc", ip="k").url("hb", port=0) == "ipc://k-0"


def test_with_ports_sets_only_the_given_channels() -> None:
    info = ConnectionInfo(shell_port=1, key="k").with_ports({"iopub": 2, "hb": 3})
    assert [info.port(ch) for ch in CHANNELS] == [1, 2, 0, 0, 3]
    assert info.key == "k"


@pytest.mark.parametrize(
    "fields",
    [
        {"transport": "udp"},
        {"transport": "TCP"},
        {"transport": None},
        {"transport": ["tcp"]},
        {"shell_port": -1},
        {"iopub_port": 65536},
        {"stdin_port": True},
        {"control_port": False},
        {"hb_port": "5555"},
        {"shell_port": 5555.0},
        {"shell_port": None},
        {"key": 5},
        {"key": None},
        {"key": b"bytes"},
        {"ip": 127},
        {"signature_scheme": ["hmac-sha256"]},
        {"kernel_name": 1},
    ],
    ids=lambda fields: "-".join(f"{k}={v!r}" for k, v in fields.items()),
)
def test_invalid_fields_are_value_errors(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ConnectionInfo.from_dict(fields)
    if not any(isinstance(v, bytes) for v in fields.values()):
        with pytest.raises(ValueError):
            ConnectionInfo.from_json(json.dumps(fields))


@pytest.mark.parametrize("port", [-1, 65536, True, 1.0, "1"])
def test_ports_are_validated_on_construction_too(port: object) -> None:
    with pytest.raises(ValueError):
        ConnectionInfo(shell_port=port)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ConnectionInfo().with_ports({"hb": port})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "data", [b"", b"not json", b"\xff", b"[]", b'"tcp"', b"1", b"null"], ids=repr
)
def test_a_file_that_is_not_a_json_object_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        ConnectionInfo.from_json(data)


def test_new_key_is_256_random_bits_in_hex() -> None:
    keys = [ConnectionInfo.new_key() for _ in range(200)]
    assert all(len(key) == 64 for key in keys)
    assert all(len(bytes.fromhex(key)) == 32 for key in keys)
    assert len(set(keys)) == len(keys)
    # Every hex digit turns up across the keys: not a constant or a narrow alphabet.
    assert set("".join(keys)) == set("0123456789abcdef")
