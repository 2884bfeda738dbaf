"""CurveZMQ transport encryption (issue 7): the kernel is a Curve server on all five sockets.

jupyter_client (8.9+) started with ``transport_encryption="required"`` writes a key pair into
the connection file, and its clients connect with the kernel's public key as their server key.

How "refused" is proved without sleeping: a plain-text peer's own socket monitor reports the
failed handshake (ZMTP mechanism mismatch: it offers NULL, the kernel demands CURVE), so its
frames can never reach the kernel. A short wait for a reply that must not come backs that up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from jupyter_client.connect import write_connection_file
from jupyter_client.session import Session
from zmq.utils.monitor import recv_monitor_message

from tests.kernel.conftest import TIMEOUT, Kernel, outputs, start_kernel, stop_kernel, stream_text
from trikernel.channels.transport import bind
from trikernel.protocol import ConnectionInfo

needs_curve = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CurveZMQ")

# A key pair as zmq.curve_keypair() makes it, for tests that must not need CurveZMQ to make one.
CURVE_PUBLIC = "{#@xa)K3^D)ogvG!0K(M+md8G:V]z}/DH9C?7eWT"
CURVE_SECRET = "RI%J)>aXH]Bwo8$>D4i41rFCTH^[?!0iz6Ru!uw-"

# How long a reply that must not come is waited for; the socket monitor already proved it.
NO_REPLY_WAIT_MS = 1000

# How a plain-text peer's handshake with a Curve server ends. Both ends see the mechanism
# mismatch in the greetings; when the kernel's end closes the connection first, the peer sees
# no detail (and retries every ~0.1 s). Which end is first is ZeroMQ's race: the peer's
# "mismatch" took from 0 to over 20 s of retries on a 2-core machine (two full local runs failed).
HANDSHAKE_ENDS = (
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
)

PLAIN_PEERS = {
    "shell": zmq.DEALER,
    "control": zmq.DEALER,
    "stdin": zmq.DEALER,
    "iopub": zmq.SUB,
    "hb": zmq.REQ,
}


def start_encrypted_kernel() -> Kernel:
    k = start_kernel(transport_encryption="required")
    assert k.km.curve_publickey is not None, "jupyter_client gave the kernel no Curve keys"
    return k


@pytest.fixture(scope="module")
def encrypted() -> Iterator[Kernel]:
    """One encrypted kernel shared by the module's tests (they leave it idle and usable)."""
    k = start_encrypted_kernel()
    yield k
    stop_kernel(k)


def endpoint(k: Kernel, channel: str) -> str:
    return f"tcp://{k.km.ip}:{getattr(k.km, f'{channel}_port')}"


@needs_curve
def test_connection_file_carries_the_key_pair(encrypted: Kernel) -> None:
    info = json.loads(Path(encrypted.km.connection_file).read_text())
    assert info["curve_publickey"].encode() == encrypted.km.curve_publickey
    assert zmq.curve_public(info["curve_secretkey"].encode()) == info["curve_publickey"].encode()


@needs_curve
def test_execute_over_curve_replies_on_shell_and_publishes_on_iopub(encrypted: Kernel) -> None:
    reply, msgs = encrypted.execute("print('over curve'); 1+1")
    assert reply["content"]["status"] == "ok"
    assert stream_text(msgs) == "over curve\n"
    [result] = outputs(msgs, "execute_result")
    assert result["content"]["data"]["text/plain"] == "2"


@needs_curve
def test_input_over_curve(encrypted: Kernel) -> None:
    msg_id = encrypted.kc.execute("print(input('key? '))", allow_stdin=True)
    assert encrypted.kc.get_stdin_msg(timeout=TIMEOUT)["content"]["prompt"] == "key? "
    encrypted.kc.input("typed")
    assert encrypted.reply(msg_id)["content"]["status"] == "ok"
    assert stream_text(encrypted.until_idle(msg_id)) == "typed\n"


@needs_curve
def test_control_answers_over_curve(encrypted: Kernel) -> None:
    msg_id = encrypted.control("kernel_info_request")
    assert encrypted.reply(msg_id, "control")["content"]["status"] == "ok"


@needs_curve
def test_heartbeat_echoes_over_curve(encrypted: Kernel) -> None:
    # Configured as jupyter_client's HBChannel does: a fresh client key pair, the kernel's
    # public key as server key. Its own thread reports only failures, so ping directly.
    client_public, client_secret = zmq.curve_keypair()
    with zmq.Context() as ctx, ctx.socket(zmq.REQ) as hb:
        hb.linger = 0
        hb.curve_publickey = client_public
        hb.curve_secretkey = client_secret
        hb.curve_serverkey = encrypted.km.curve_publickey
        hb.connect(endpoint(encrypted, "hb"))
        hb.send(b"ping")
        assert hb.poll(int(TIMEOUT * 1000)), "no heartbeat echo over Curve"
        assert hb.recv() == b"ping"


@needs_curve
@pytest.mark.slow
def test_plain_text_peers_are_refused_on_every_port(encrypted: Kernel, tmp_path: Path) -> None:
    marker = tmp_path / "plain-text-ran"
    # Signed with the right HMAC key: only the missing encryption stands in the way.
    session = Session(key=encrypted.km.session.key)
    with zmq.Context() as ctx:
        peers: dict[str, zmq.Socket[bytes]] = {}
        monitors: dict[str, zmq.Socket[bytes]] = {}
        try:
            for channel, kind in PLAIN_PEERS.items():
                peer = peers[channel] = ctx.socket(kind)
                peer.linger = 0
                monitors[channel] = peer.get_monitor_socket(HANDSHAKE_ENDS)
                peer.connect(endpoint(encrypted, channel))
            peers["iopub"].subscribe(b"")
            peers["hb"].send(b"ping")
            code = f"open({str(marker)!r}, 'w').close()"
            session.send(peers["shell"], "execute_request", {"code": code, "silent": False})

            for channel, monitor in monitors.items():
                assert monitor.poll(int(TIMEOUT * 1000)), f"{channel}: handshake did not fail"
                event = recv_monitor_message(monitor)
                assert event["event"] != zmq.EVENT_HANDSHAKE_SUCCEEDED, channel
                if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                    assert event["value"] == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH, channel

            poller = zmq.Poller()
            for channel in ("shell", "iopub", "hb"):
                poller.register(peers[channel], zmq.POLLIN)
            assert poller.poll(NO_REPLY_WAIT_MS) == []
        finally:
            for sock in [*monitors.values(), *peers.values()]:
                sock.close(linger=0)

    # The kernel still serves its encrypted client, and the plain-text request never ran.
    _, msgs = encrypted.execute("1+1")
    assert outputs(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "2"
    assert not marker.exists()


@needs_curve
def test_shutdown_over_curve_is_clean() -> None:
    k = start_encrypted_kernel()
    try:
        msg_id = k.control("shutdown_request")
        assert k.reply(msg_id, "control")["content"]["status"] == "ok"
        k.wait_exit()
        assert k.km.provisioner.process.returncode == 0  # type: ignore[union-attr]
    finally:
        stop_kernel(k)


def _run_kernel(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "trikernel", "-f", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


GO_TOGETHER = "curve_publickey and curve_secretkey go together"


@needs_curve
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("public-only", GO_TOGETHER),
        ("secret-only", GO_TOGETHER),
        ("mismatched", "curve_publickey is not the public key of curve_secretkey"),
    ],
    ids=["public-only", "secret-only", "mismatched"],
)
def test_a_broken_key_pair_stops_the_kernel_with_a_clear_error(
    tmp_path: Path, case: str, message: str
) -> None:
    """A connection file with one Curve key, or two that do not match, is not a request for
    plain text: the kernel refuses to start rather than serve unencrypted (or unreachable)."""
    public, secret = zmq.curve_keypair()
    path = tmp_path / "kernel.json"
    write_connection_file(str(path), ip="127.0.0.1", curve_publickey=public, curve_secretkey=secret)
    info = json.loads(path.read_text())
    if case == "public-only":
        del info["curve_secretkey"]
    elif case == "secret-only":
        del info["curve_publickey"]
    else:
        info["curve_publickey"] = zmq.curve_keypair()[0].decode()
    path.write_text(json.dumps(info))

    result = _run_kernel(path)
    assert result.returncode != 0
    assert message in result.stderr
    assert secret.decode() not in result.stderr


def test_bind_refuses_curve_keys_without_curve_support(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = ConnectionInfo(curve_publickey=CURVE_PUBLIC, curve_secretkey=CURVE_SECRET)
    monkeypatch.setattr(zmq, "has", lambda capability: capability != "curve")
    with zmq.Context() as ctx, ctx.socket(zmq.ROUTER) as sock:
        sock.linger = 0
        with pytest.raises(RuntimeError, match=r"built without CurveZMQ.*refusing"):
            bind(sock, conn, "shell")
        assert sock.get(zmq.LAST_ENDPOINT) == b""  # nothing was bound
