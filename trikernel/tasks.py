"""Background tasks: user code that outlives its cell, on the kernel's trio loop.

From a cell::

    import trikernel

    trikernel.background.start_soon(ticker, 0.5, name="ticker")

``%tasks`` lists them and ``%cancel NAME`` cancels one. The rules:

- Every task runs in one kernel-lifetime nursery on the main loop, each in a cancel scope of
  its own. It keeps running while the kernel is idle and while other cells run.
- Interrupts never touch background tasks: they are not requests (see
  :mod:`trikernel.execution`).
- A task that raises is reported (an ``error`` output where its output goes, and a log line)
  and nothing else happens: its siblings, the running cell and the kernel go on.
- Output goes to the cell that started the task while that cell runs; after, to the cell
  running now, else to the starting cell still: the task is ``started_by`` that cell, as a
  thread started in a cell is (see :meth:`trikernel.kernel.Kernel.parent`).
- At shutdown every task is cancelled and given ``shutdown.grace`` seconds to unwind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import attrs
import trio

from .handoff import post

if TYPE_CHECKING:
    from .kernel import Kernel
    from .protocol import Message

__all__ = ["BackgroundTask", "BackgroundTasks", "background"]

log = logging.getLogger("trikernel")

State = Literal["running", "done", "failed", "cancelled"]

_KEEP_FINISHED = 20


@attrs.define(eq=False)
class BackgroundTask:
    """One task started with :meth:`BackgroundTasks.start_soon`."""

    name: str
    """Unique among the kernel's tasks; ``%cancel`` takes it."""
    cell: int | None
    """Execution count of the cell that started it (None: not started from a cell)."""
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    """Cancelled by :meth:`BackgroundTasks.cancel` and at shutdown."""
    state: State = "running"
    """running, done, failed or cancelled."""
    error: BaseException | None = None
    """What it raised, if it failed."""
    started: float = attrs.field(factory=time.monotonic)
    """``time.monotonic()`` when it was started."""
    finished: trio.Event = attrs.field(factory=trio.Event)
    """Set when it ended, however it ended."""

    def __repr__(self) -> str:
        cell = "" if self.cell is None else f" from cell {self.cell}"
        return f"<background task {self.name!r} {self.state}{cell}>"


@attrs.define(eq=False)
class BackgroundTasks:
    """The kernel's nursery for user background tasks (see the module docstring)."""

    kernel: Kernel
    _nursery: trio.Nursery | None = attrs.field(init=False, default=None)
    _token: trio.lowlevel.TrioToken | None = attrs.field(init=False, default=None)
    _thread: int | None = attrs.field(init=False, default=None)
    _tasks: dict[str, BackgroundTask] = attrs.field(init=False, factory=dict)

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Hold the nursery open until cancelled (started by the kernel's main nursery)."""
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()
        raise AssertionError("unreachable")

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None
    ) -> BackgroundTask:
        """Start ``await fn(*args)`` as a background task; return its record at once.

        Safe from a cell (the main loop) and from other threads.

        Args:
            fn: an async function.
            *args: its positional arguments (use functools.partial for keywords).
            name: a name for ``%tasks`` / ``%cancel``; default: ``fn``'s name, made unique.

        Raises:
            RuntimeError: the kernel's loop is not running (or is shutting down).
        """
        if self._nursery is None or self._token is None:
            raise RuntimeError("trikernel's background nursery is not running")
        from .kernel import current_cell, request_or_origin

        task = BackgroundTask(
            self._unique(name or str(getattr(fn, "__name__", "task"))), current_cell.get()
        )
        self._tasks[task.name] = task
        origin = request_or_origin()
        if threading.get_ident() == self._thread:
            self._nursery.start_soon(self._run, task, origin, fn, args, name=task.name)
        else:
            post(
                self._token,
                lambda: self._nursery.start_soon(  # type: ignore[union-attr]
                    self._run, task, origin, fn, args, name=task.name
                ),
            )
        return task

    def cancel(self, name: str) -> BackgroundTask:
        """Cancel the task called ``name`` (main loop).

        Raises:
            KeyError: no task has that name.
        """
        task = self._tasks[name]
        task.scope.cancel()
        return task

    def __iter__(self) -> Iterator[BackgroundTask]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return sum(1 for t in self._tasks.values() if t.state == "running")

    async def aclose(self, grace: float) -> None:
        """Cancel every task and wait up to ``grace`` seconds for them to unwind."""
        for task in self._tasks.values():
            task.scope.cancel()
        with trio.move_on_after(grace) as waited:
            for task in list(self._tasks.values()):
                await task.finished.wait()
        if waited.cancelled_caught:
            running = ", ".join(t.name for t in self._tasks.values() if not t.finished.is_set())
            log.warning(
                "shutdown: background tasks still ran %g s after cancel: %s", grace, running
            )
        self._nursery = None

    async def _run(
        self,
        task: BackgroundTask,
        origin: Message | None,
        fn: Callable[..., Awaitable[object]],
        args: tuple[Any, ...],
    ) -> None:
        from .kernel import current_request, started_by

        # This task's own context (trio copied the starter's): no longer the request's.
        current_request.set(None)
        started_by.set(origin)
        try:
            with task.scope:
                try:
                    await fn(*args)
                except Exception as exc:  # noqa: BLE001 - reported, never propagated (module rule)
                    task.state = "failed"
                    task.error = exc
                    self._report(task, exc)
                    return
            task.state = "cancelled" if task.scope.cancelled_caught else "done"
        finally:
            task.finished.set()

    def _report(self, task: BackgroundTask, exc: BaseException) -> None:
        log.warning("background task %r failed: %r", task.name, exc)
        kernel = self.kernel
        kernel.publish(
            "stream",
            {"name": "stderr", "text": f"background task {task.name!r} failed:\n"},
        )
        kernel.publish("error", kernel.shell.format_exception(exc))

    def _unique(self, name: str) -> str:
        # A finished task's name is free again; the newest few finished records are kept so
        # that %tasks can still show how they ended.
        finished = [n for n, t in self._tasks.items() if t.state != "running"]
        for old in finished[: max(0, len(finished) - _KEEP_FINISHED)]:
            del self._tasks[old]
        if name in self._tasks and self._tasks[name].state != "running":
            del self._tasks[name]
        if name not in self._tasks:
            return name
        n = 2
        while f"{name}-{n}" in self._tasks:
            n += 1
        return f"{name}-{n}"


class _CurrentBackground:
    """``trikernel.background``: the running kernel's :class:`BackgroundTasks`."""

    tasks: BackgroundTasks | None = None

    def _get(self) -> BackgroundTasks:
        if self.tasks is None:
            raise RuntimeError("no trikernel kernel runs in this process")
        return self.tasks

    def start_soon(
        self, fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None
    ) -> BackgroundTask:
        """Start ``await fn(*args)`` as a background task (see :class:`BackgroundTasks`)."""
        return self._get().start_soon(fn, *args, name=name)

    def cancel(self, name: str) -> BackgroundTask:
        """Cancel the background task called ``name``."""
        return self._get().cancel(name)

    def __iter__(self) -> Iterator[BackgroundTask]:
        return iter(self._get())

    def __repr__(self) -> str:
        if self.tasks is None:
            return "<trikernel.background: no kernel running>"
        return f"<trikernel.background: {len(self.tasks)} running>"


#: The running kernel's background tasks, for user code: ``trikernel.background.start_soon``.
background = _CurrentBackground()
