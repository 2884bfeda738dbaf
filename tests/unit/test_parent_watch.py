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


def test_the_launcher_is_watched_when_it_is_an_ancestor() -> None:
    assert parent_to_watch({"JPY_PARENT_PID": str(os.getppid())}) == os.getppid()


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"JPY_PARENT_PID": ""},
        {"JPY_PARENT_PID": "1"},  # init never exits
        {"JPY_PARENT_PID": "notanumber"},  # ipykernel fails to start on this one
        # Not an ancestor: inherited from elsewhere, or another namespace's pid (a container):
        # watched, its absence would end the kernel at once.
        {"JPY_PARENT_PID": str(os.getpid())},
    ],
)
def test_nothing_is_watched_without_a_launcher_among_the_ancestors(
    environ: dict[str, str],
) -> None:
    assert parent_to_watch(environ) is None


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
