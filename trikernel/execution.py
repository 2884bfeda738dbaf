"""Running user code: one cancel scope per request, and what an interrupt does to it.

Every piece of user code the kernel runs (a cell, a comm handler) runs inside
:meth:`UserCode.running`, which gives it its own :class:`trio.CancelScope` and records which
task runs it. An interrupt — ``interrupt_request`` on control or shell, or SIGINT from the OS —
always arrives as SIGINT on the main thread (the io loop sends it with ``pthread_kill``), and
:meth:`UserCode._on_sigint` decides what it means:

1. If the main thread is executing user code of a running request right now (the current trio
   task belongs to a running request, and the interrupted frame is not KI-protected), raise
   ``KeyboardInterrupt`` there. This is what stops ``time.sleep(30)``, ``while True: pass`` and
   a regex in C: the signal makes the blocking call return early (EINTR) and Python raises.
2. Otherwise the main loop is between steps, or awaiting: cancel every running request's scope
   (posted with ``TrioToken.run_sync_soon``, which is safe from a signal handler). The request
   unwinds at its await, ``finally`` blocks run, and its handler replies ``KeyboardInterrupt``.

So the kernel's own code never sees a stray ``KeyboardInterrupt``: it either runs KI-protected
(trio's machinery, and the kernel's request runners, which are marked with
:func:`trio.lowlevel.enable_ki_protection`) or outside every request. Background tasks are not
requests and are never interrupted.

While user code runs, a CPU-time timer (``ITIMER_VIRTUAL``, SIGVTALRM) fires every few
milliseconds of CPU use, and its handler sleeps for zero seconds. Sleeping releases the GIL, so
the io thread gets to answer control requests even during a C call that holds the GIL for
seconds (CPython checks for signals inside its regex engine, for instance). The timer counts
CPU time only, so a cell that sleeps or waits costs nothing.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import attrs
import trio

__all__ = ["CancelReason", "UserCode"]

#: Why a request's scope was cancelled; the reply names it.
CancelReason = str

_GIL_YIELD_INTERVAL = 0.005


@attrs.define(eq=False)
class _Running:
    scope: trio.CancelScope
    task: trio.lowlevel.Task
    reason: CancelReason | None = None


@attrs.define(eq=False)
class UserCode:
    """The registry of running user code on the main loop, and the SIGINT policy above.

    Args:
        token: the main loop's token.
    """

    token: trio.lowlevel.TrioToken
    _running: list[_Running] = attrs.field(init=False, factory=list)
    _main_thread: int = attrs.field(init=False, factory=threading.get_ident)
    _previous_handlers: dict[int, object] = attrs.field(init=False, factory=dict)

    # -- installation (main thread, before the loop serves anything) -----------------------

    def install(self) -> None:
        """Own SIGINT and SIGVTALRM. Must be called on the main thread."""
        self._previous_handlers[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
        self._previous_handlers[signal.SIGVTALRM] = signal.signal(
            signal.SIGVTALRM, self._on_cpu_tick
        )
        # Restart interrupted system calls after a tick instead of failing them with EINTR:
        # C libraries that do not retry EINTR must not see errors because of the kernel.
        signal.siginterrupt(signal.SIGVTALRM, False)

    def uninstall(self) -> None:
        """Give the signals back (tests run kernels in-process)."""
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous_handlers.clear()

    # -- requests ----------------------------------------------------------------------------

    @contextmanager
    def running(self, *, deadline: float = float("inf")) -> Iterator[_Running]:
        """Run the body as a request's user code, in a cancel scope of its own.

        Args:
            deadline: trio deadline for the scope (``%%timeout``, ``shell.timeout``).

        Yields:
            The record of this run: ``.scope`` is its cancel scope; ``.reason`` says why it
            was cancelled (``"interrupt"``, ``"shutdown"``), None while it was not.
        """
        with trio.CancelScope(deadline=deadline) as scope:
            run = _Running(scope, trio.lowlevel.current_task())
            self._running.append(run)
            if len(self._running) == 1:
                signal.setitimer(signal.ITIMER_VIRTUAL, _GIL_YIELD_INTERVAL, _GIL_YIELD_INTERVAL)
            try:
                yield run
            finally:
                self._running.remove(run)
                if not self._running:
                    signal.setitimer(signal.ITIMER_VIRTUAL, 0)

    @property
    def busy(self) -> bool:
        """Whether any request's user code is running."""
        return bool(self._running)

    def cancel_all(self, reason: CancelReason) -> None:
        """Cancel every running request's scope (main loop only)."""
        for run in self._running:
            if run.reason is None:
                run.reason = reason
            run.scope.cancel()

    # -- interrupts (any thread) ---------------------------------------------------------------

    def interrupt(self) -> None:
        """Interrupt whatever user code runs now; from any thread, never blocks."""
        signal.pthread_kill(self._main_thread, signal.SIGINT)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._running and not trio.lowlevel.currently_ki_protected():
            try:
                task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
            except RuntimeError:
                task = None
            if task is not None and self._owns(task):
                raise KeyboardInterrupt
        if self._running:
            self.token.run_sync_soon(self.cancel_all, "interrupt")

    def _owns(self, task: trio.lowlevel.Task) -> bool:
        """Whether ``task`` is a running request's task or was spawned inside one."""
        roots = {run.task for run in self._running}
        current: trio.lowlevel.Task | None = task
        while current is not None:
            if current in roots:
                return True
            nursery = current.parent_nursery
            current = nursery.parent_task if nursery is not None else None
        return False

    @staticmethod
    def _on_cpu_tick(signum: int, frame: FrameType | None) -> None:
        # Releases the GIL for a moment: see the module docstring.
        time.sleep(0)
