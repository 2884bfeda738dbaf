"""The SIGINT policy of ``trikernel.execution``, on a trio loop in the test's main thread."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator

import pytest
import trio

from trikernel.execution import UserCode, call_user_code


@pytest.fixture
async def user() -> AsyncIterator[UserCode]:
    user = UserCode(trio.lowlevel.current_trio_token())
    user.install()
    yield user
    user.uninstall()


async def test_a_resend_that_lands_after_the_interrupt_is_not_a_second_one(
    user: UserCode, monkeypatch: pytest.MonkeyPatch
) -> None:
    with user.running():
        # The io loop interrupts; user code of the running request gets KeyboardInterrupt.
        with pytest.raises(KeyboardInterrupt):
            call_user_code(user.interrupt)
        # The io loop's re-send loop saw the interrupt pending just before it took effect (its
        # check and its send are not atomic), so its SIGINT lands now, once it has.
        checks = iter([True])
        pending = UserCode.interrupt_pending.fget
        assert pending is not None
        monkeypatch.setattr(
            UserCode, "interrupt_pending", property(lambda u: next(checks, False) or pending(u))
        )
        try:
            await user.resend_while_pending(resend_every=0)
        except KeyboardInterrupt:
            pytest.fail("a late re-send raised KeyboardInterrupt a second time")
        monkeypatch.undo()
        assert not user.interrupt_pending


async def test_sigint_from_outside_after_an_interrupt_is_a_new_interrupt(user: UserCode) -> None:
    with user.running():
        with pytest.raises(KeyboardInterrupt):
            call_user_code(user.interrupt)
        # Ctrl-C again (or a frontend in signal mode): not a re-send, so it interrupts again.
        with pytest.raises(KeyboardInterrupt):
            call_user_code(signal.raise_signal, signal.SIGINT)


async def test_the_sigint_handler_a_cell_can_see_has_a_short_repr(user: UserCode) -> None:
    # A cell that prints signal.getsignal(SIGINT) sees one line, not the kernel's registry.
    shown = repr(signal.getsignal(signal.SIGINT))
    assert shown.startswith("<bound method UserCode._on_sigint of <trikernel.execution.UserCode")
    assert len(shown) < 120
