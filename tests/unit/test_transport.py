"""FrameSocket on real ZeroMQ sockets (inproc): its turns of the loop, its waits, its frames.

Each call that finds the socket ready is a cancellation point, and a schedule point once the
socket's last one was ``_YIELD_EVERY`` seconds ago (``trikernel/channels/transport.py``). Its
waits are on ZeroMQ's edge-triggered descriptor, where a lost edge means a message never read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
import zmq

from trikernel.channels import transport
from trikernel.channels.transport import _YIELD_EVERY, FrameSocket


@pytest.fixture(params=[True, False], ids=["keep_gil", "pyzmq_calls"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[FrameSocket, zmq.Socket[bytes]]]:
    """A FrameSocket (DEALER, bound) and a plain DEALER peer connected to it; the socket's
    frames go through the GIL-keeping calls (trikernel/channels/keepgil.py) and through
    pyzmq's, which it uses where those cannot be had."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ours = ctx.socket(zmq.DEALER)
    ours.bind("inproc://frames")
    peer = ctx.socket(zmq.DEALER)
    peer.connect("inproc://frames")
    sock = FrameSocket(ours, 0, keep_gil=request.param)
    yield sock, peer
    sock.close()
    peer.close(linger=0)
    ctx.term()


async def _turns_of_others(work: Any) -> int:
    """How often another task ran while ``work()`` ran."""
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            await trio.lowlevel.checkpoint()
            turns += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()  # let it start
        turns = 0
        await work()
        nursery.cancel_scope.cancel()
    return turns


async def test_frames_arrive_whole_and_in_order(pair: Any) -> None:
    sock, peer = pair
    big = bytes(range(256)) * 1024  # lent to ZeroMQ rather than copied
    await sock.send([b"a", b"", big, b"z"])
    assert peer.recv_multipart() == [b"a", b"", big, b"z"]
    peer.send_multipart([b"1", b"2", big])
    peer.send_multipart([b"3"])
    assert await sock.recv() == [b"1", b"2", big]
    assert await sock.recv() == [b"3"]


async def test_a_burst_of_ready_sends_takes_one_turn_of_the_loop(pair: Any) -> None:
    sock, _ = pair

    async def burst() -> None:
        for _ in range(20):
            await sock.send([b"x"])

    assert await _turns_of_others(burst) <= 2


async def test_a_long_flood_still_lets_other_tasks_run(
    pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, peer = pair
    for _ in range(40):
        peer.send_multipart([b"x"])

    class Clock:
        """Each call that asks the time finds half a yield interval gone: a slow socket."""

        now = 0.0

        def monotonic(self) -> float:
            self.now += _YIELD_EVERY / 2
            return self.now

    monkeypatch.setattr(transport, "time", Clock())

    async def flood() -> None:
        for _ in range(40):
            await sock.recv()
            await sock.send([b"x"])

    # 80 calls of at least a half interval each: a turn at least every other call.
    assert await _turns_of_others(flood) >= 20


async def test_a_ready_call_is_still_a_cancellation_point(pair: Any) -> None:
    sock, _ = pair
    await sock.send([b"x"])  # the first call yields; the next one would not
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await sock.send([b"x"])


# -- waits --------------------------------------------------------------------------------------


async def test_a_message_that_arrives_while_the_socket_sends_is_received(pair: Any) -> None:
    """Every send can consume the descriptor's edge a waiting receive sleeps on; the send then
    wakes the receive, or the peer's message would sit unread."""
    sock, peer = pair
    received: list[list[bytes]] = []

    async def receive() -> None:
        received.extend([await sock.recv() for _ in range(500)])

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            for n in range(500):
                await sock.send([b"ping"])
                assert peer.recv_multipart() == [b"ping"]
                peer.send_multipart([str(n).encode()])  # arrives while the next send runs
    assert received == [[str(n).encode()] for n in range(500)]


async def test_a_sender_and_a_receiver_can_wait_on_one_socket_at_once() -> None:
    """Only one task may wait on the descriptor; the other is woken when it changes."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.bind("inproc://lonely")  # no peer yet: a DEALER can neither send nor receive
    sock = FrameSocket(raw, 0)
    peer = ctx.socket(zmq.DEALER)
    got: list[list[bytes]] = []
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def receive() -> None:
                    got.append(await sock.recv())

                nursery.start_soon(receive)
                nursery.start_soon(sock.send, [b"out"])
                await trio.testing.wait_all_tasks_blocked()
                assert sock.raw.getsockopt(zmq.EVENTS) == 0  # both really wait
                peer.connect("inproc://lonely")
                assert await FrameSocket(peer, 0).recv() == [b"out"]  # sent once a peer is there
                peer.send_multipart([b"in"])
        assert got == [[b"in"]]
    finally:
        peer.close(linger=0)
        sock.close()
        ctx.term()


async def test_closing_the_socket_ends_a_waiting_receive(pair: Any) -> None:
    sock, _ = pair

    async def receive() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await sock.recv()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            sock.close()


async def test_a_message_that_arrives_while_another_thread_sends_is_received(pair: Any) -> None:
    """The iopub queue sends from the publishing thread (try_send_from_thread) while the io
    loop waits to receive on the same socket. Such a send can consume the edge the receive
    sleeps on too, and it must wake the receive in its loop."""
    sock, peer = pair
    token = trio.lowlevel.current_trio_token()
    received: list[list[bytes]] = []

    def send_from_thread() -> None:
        for n in range(500):
            assert sock.try_send_from_thread([b"ping"], token)
            assert peer.recv_multipart() == [b"ping"]
            peer.send_multipart([str(n).encode()])  # arrives while the next send runs

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: trio.to_thread.run_sync(send_from_thread))
            received.extend([await sock.recv() for _ in range(500)])
    assert received == [[str(n).encode()] for n in range(500)]


async def test_a_closed_socket_takes_nothing_from_another_thread(pair: Any) -> None:
    sock, _ = pair
    token = trio.lowlevel.current_trio_token()
    sock.close()
    assert not await trio.to_thread.run_sync(sock.try_send_from_thread, [b"late"], token)
