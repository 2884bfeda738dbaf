"""The iopub queue's bound, seen from the io loop: who waits for room, and who is woken.

No sockets: the test takes batches from the queue as ``serve_iopub`` does.
"""

from __future__ import annotations

import trio
import trio.testing

from tests.unit.conftest import KIRecorder
from trikernel.channels.iopub import MAX_PENDING_MESSAGES, IOPubQueue
from trikernel.protocol import Session


async def test_every_task_waiting_for_room_is_woken_when_the_queue_is_taken() -> None:
    # The control channel and each descriptor capture wait for room at the same time; a
    # second waiter once replaced the first one's wake-up, and the control channel then
    # read no request again.
    session = Session(b"")
    queue = IOPubQueue(session, trio.lowlevel.current_trio_token())
    for _ in range(MAX_PENDING_MESSAGES + 1):
        queue.publish(session.msg("status", {"execution_state": "busy"}))  # the io loop: no wait
    woken: list[str] = []

    async def wait(name: str, *, text: bool) -> None:
        await queue.wait_for_room(text=text)
        woken.append(name)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: wait("control", text=False))
            nursery.start_soon(lambda: wait("stderr capture", text=True))
            await trio.testing.wait_all_tasks_blocked()
            assert woken == [], "the queue is full: nobody may go on"
            batch = list(await queue.get_batch())
            assert len(batch) == MAX_PENDING_MESSAGES + 1
    assert sorted(woken) == ["control", "stderr capture"]


async def test_an_interrupt_cannot_land_between_a_change_and_its_wake_up(
    ki_protection: KIRecorder,
) -> None:
    # A cell's print() or display() changes the queue from the main thread while user code
    # runs, where SIGINT raises KeyboardInterrupt unless the frame is KI-protected. Raised
    # after _mark noted the io loop as woken but before the wake-up went out, it left the
    # io loop asleep: no output came again (about once in 300 interrupts of a displaying
    # cell, on a busy machine). Every change must run protected; this task itself is user
    # code (unprotected).
    assert not trio.lowlevel.currently_ki_protected()
    protected = ki_protection(IOPubQueue, "_mark")
    session = Session(b"")
    queue = IOPubQueue(session, trio.lowlevel.current_trio_token())
    queue.publish(session.msg("status", {"execution_state": "busy"}))
    queue.write("stdout", "text", None)
    queue.flush()
    assert protected == [True, True, True]


async def test_text_alternating_between_streams_is_batched_per_stream() -> None:
    # A cell alternating print() and a warning made a message per write: 20,000 where
    # ipykernel sent 4, and papermill gave up waiting. A few switches keep their order; past
    # them each stream's text joins the message of its stream.
    session = Session(b"")
    queue = IOPubQueue(session, trio.lowlevel.current_trio_token())
    parent = session.msg("execute_request", {})
    for i in range(1000):
        queue.write("stdout", f"out {i}\n", parent)
        queue.write("stderr", f"err {i}\n", parent)
    queue.write("stdout", "last\n", None)  # another request's text is never joined to these
    with trio.fail_after(5):
        sent = [(m.content["name"], m.content["text"]) for m in await queue.get_batch()]
    assert len(sent) < 20
    assert sent[:3] == [("stdout", "out 0\n"), ("stderr", "err 0\n"), ("stdout", "out 1\n")]
    for name, prefix in (("stdout", "out"), ("stderr", "err")):
        text = "".join(t for n, t in sent[:-1] if n == name)
        assert text == "".join(f"{prefix} {i}\n" for i in range(1000))  # in order, all of it
    assert sent[-1] == ("stdout", "last\n")
