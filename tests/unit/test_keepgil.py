"""The GIL-keeping ZeroMQ calls (trikernel/channels/keepgil.py) on real inproc sockets: each
message arrives as pyzmq would deliver it, and each failure is what pyzmq's calls report, so
the transport above cannot tell the two apart."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Iterator

import pytest
import zmq

from trikernel.channels.keepgil import SMALL_FRAME, SocketCalls, socket_calls
from trikernel.channels.transport import PyzmqCalls

Open = Callable[[int], zmq.Socket[bytes]]


@pytest.fixture
def open_socket() -> Iterator[Open]:
    """Opens sockets of a kind in one context; each is closed after the test."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    opened: list[zmq.Socket[bytes]] = []

    def open_(kind: int) -> zmq.Socket[bytes]:
        opened.append(ctx.socket(kind))
        return opened[-1]

    yield open_
    for sock in opened:
        sock.close(linger=0)
    ctx.term()


def _calls(sock: zmq.Socket[bytes]) -> SocketCalls:
    calls = socket_calls(sock, PyzmqCalls(sock).send_frame)
    if calls is None:
        pytest.fail(f"libzmq cannot be reached through pyzmq's extension on {sys.platform}")
    return calls


def _dealers(open_socket: Open, name: str) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    ours, peer = open_socket(zmq.DEALER), open_socket(zmq.DEALER)
    ours.bind(f"inproc://{name}")
    peer.connect(f"inproc://{name}")
    return ours, peer


@pytest.mark.skipif(sys.platform != "linux", reason="the calls are asserted where CI runs")
def test_the_kernel_gets_the_gil_keeping_calls_on_linux(open_socket: Open) -> None:
    sock = open_socket(zmq.DEALER)
    assert isinstance(socket_calls(sock, PyzmqCalls(sock).send_frame), SocketCalls)


@pytest.mark.parametrize(
    "frame",
    [b"", b"x", bytes(range(256)) * (SMALL_FRAME // 256), b"y" * (SMALL_FRAME + 1)],
    ids=["empty", "one_byte", "small_limit", "past_small_limit"],
)
def test_a_frame_of_any_size_crosses_whole_both_ways(open_socket: Open, frame: bytes) -> None:
    ours, peer = _dealers(open_socket, "sizes")
    calls = _calls(ours)
    assert calls.send([b"head", frame, frame, b"tail"])
    assert peer.recv_multipart() == [b"head", frame, frame, b"tail"]
    peer.send_multipart([frame, b"", frame])
    peer.send_multipart([frame])
    assert calls.recv() == [frame, b"", frame]
    assert calls.recv() == [frame]
    assert calls.recv() == []


def test_frames_that_are_not_bytes_go_through_pyzmq(open_socket: Open) -> None:
    ours, peer = _dealers(open_socket, "views")
    assert _calls(ours).send([memoryview(b"a view"), bytearray(b"an array")])  # type: ignore[list-item]
    assert peer.recv_multipart() == [b"a view", b"an array"]


def test_no_room_to_send_is_false_and_sends_nothing(open_socket: Open) -> None:
    lonely = open_socket(zmq.DEALER)  # no peer: a DEALER has nowhere to queue a message
    lonely.bind("inproc://lonely")
    calls = _calls(lonely)
    assert not calls.send([b"x", b"y"])
    assert not calls.send([b"z" * (SMALL_FRAME + 1)])  # refused by pyzmq's call alike
    peer = open_socket(zmq.DEALER)
    peer.connect("inproc://lonely")
    assert lonely.poll(10_000, zmq.POLLOUT), "the peer never connected"
    assert calls.send([b"after"])
    assert peer.recv_multipart() == [b"after"]  # no half message was left behind


def test_a_gone_router_peer_is_ehostunreach(open_socket: Open) -> None:
    """What the router channels catch to drop a reply for a client that left."""
    router = open_socket(zmq.ROUTER)
    router.router_mandatory = 1
    router.bind("inproc://router")
    with pytest.raises(zmq.ZMQError) as caught:
        _calls(router).send([b"no-such-client", b"reply"])
    assert caught.value.errno == errno.EHOSTUNREACH
    assert not isinstance(caught.value, zmq.Again)


def test_a_closed_socket_is_refused_not_touched(open_socket: Open) -> None:
    ours, _ = _dealers(open_socket, "closed")
    calls = _calls(ours)
    ours.close(linger=0)
    for call in (lambda: calls.send([b"x"]), calls.recv):
        with pytest.raises(zmq.ZMQError) as caught:
            call()
        assert caught.value.errno == errno.ENOTSOCK
