"""Which launcher the kernel watches (``JPY_PARENT_PID``) and the wait for its exit, with a
real child process (tests/kernel/test_interrupts.py kills a real kernel's launcher)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import trio
import trio.testing

from trikernel.kernel import parent_to_watch, wait_process_exit


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"JPY_PARENT_PID": "4242"}, 4242),
        ({}, None),
        ({"JPY_PARENT_PID": ""}, None),
        ({"JPY_PARENT_PID": "1"}, None),  # init never exits
        ({"JPY_PARENT_PID": "notanumber"}, None),  # ipykernel fails to start on this one
    ],
)
def test_parent_to_watch(environ: dict[str, str], expected: int | None) -> None:
    assert parent_to_watch(environ) == expected


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
async def test_wait_process_exit_returns_when_the_process_exits(
    pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    elif not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd_open on this platform")
    child = await trio.lowlevel.open_process(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            exited = trio.Event()

            async def watch() -> None:
                await wait_process_exit(child.pid, poll_every=0.01)
                exited.set()

            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            assert not exited.is_set()  # alive: still waiting
            assert child.stdin is not None
            await child.stdin.aclose()  # the child reads EOF and exits
            await child.wait()
            await exited.wait()


async def test_a_process_that_is_gone_is_not_waited_for() -> None:
    child = await trio.lowlevel.open_process([sys.executable, "-c", "pass"])
    await child.wait()  # reaped: the pid names no process now
    with trio.fail_after(5):
        await wait_process_exit(child.pid, poll_every=0.01)
