"""The mailbox from any thread into a trio loop (:mod:`trikernel.handoff`), without sockets."""

from __future__ import annotations

import trio

from tests.unit.conftest import KIRecorder
from trikernel.handoff import Mailbox


async def test_an_interrupt_cannot_land_between_scheduling_a_wake_up_and_posting_it(
    ki_protection: KIRecorder,
) -> None:
    # put() runs on the main thread, also while user code runs there and SIGINT may raise.
    # Between noting the wake-up as scheduled and posting it, a KeyboardInterrupt would
    # leave the consumer asleep for good: nothing put afterwards would wake it.
    assert not trio.lowlevel.currently_ki_protected()
    protected = ki_protection(Mailbox, "_post_wake")
    mailbox: Mailbox[str] = Mailbox(trio.lowlevel.current_trio_token())
    mailbox.put("reply")
    assert protected == [True]
    assert mailbox.get_batch_nowait() == ["reply"]
