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

3. An interrupt is *pending* until it took effect: ``KeyboardInterrupt`` was raised, the
   request ended, or the cancellation reached every task of the request (the cancel ran while
   no task was runnable, or the main loop reached its I/O wait since: either way every task
   is parked at an await and has its ``Cancelled``, so ``finally`` blocks run undisturbed). While one is pending, the io
   loop sends SIGINT again every few milliseconds (:meth:`UserCode.wait_interrupted`). This
   closes the race in which SIGINT lands in protected code (IPython compiling the cell) and
   the cell then runs blocking code with no await for the cancellation to land on.

A deadline (``%%timeout``, ``shell.timeout``) is an interrupt with reason "timeout": the io
loop's timer marks the run and interrupts it, and the cell gets ``TimeoutError`` (raised as
:class:`DeadlineExceeded`, a ``BaseException`` like ``KeyboardInterrupt``, so that an
``except Exception`` in the cell cannot swallow its own deadline).

So the kernel's own code never sees a stray ``KeyboardInterrupt``: it either runs KI-protected
(trio's machinery, and the kernel's request runners, which are marked with
:func:`trio.lowlevel.enable_ki_protection`) or outside every request. Background tasks are not
requests and are never interrupted.

While user code runs, a CPU-time timer (SIGVTALRM) fires every few milliseconds of the main
thread's CPU use, and its handler sleeps for zero seconds. Sleeping releases the GIL, so the io
thread gets to answer control requests even during a C call that holds the GIL for seconds
(CPython checks for signals inside its regex engine, for instance). The timer counts the main
thread's CPU time only (:class:`_CpuTick`), so a cell that sleeps or waits is never signalled:
counting the whole process's (``ITIMER_VIRTUAL``), the other threads' work fired it into a C
call's ``sleep()``, which returned early (8 of 15 times), as C code that does not retry after
a signal does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

import attrs
import trio

__all__ = [
    "CancelReason",
    "DeadlineExceeded",
    "Run",
    "UserCode",
    "call_user_code",
    "deadline_message",
    "exception_text",
]

#: Why a request's scope was cancelled; the reply names it.
CancelReason = str

_GIL_YIELD_INTERVAL = 0.005


class _TimeSpec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _ITimerSpec(ctypes.Structure):
    _fields_ = (("it_interval", _TimeSpec), ("it_value", _TimeSpec))


class _SigEvent(ctypes.Structure):
    # Linux's struct sigevent on 64-bit targets: 64 bytes, the thread id first in its union.
    _fields_ = (
        ("sigev_value", ctypes.c_void_p),
        ("sigev_signo", ctypes.c_int),
        ("sigev_notify", ctypes.c_int),
        ("sigev_notify_thread_id", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    )


_SIGEV_THREAD_ID = 4


class _CpuTick:
    """SIGVTALRM every ``interval`` seconds of the calling thread's CPU time, while started.

    On 64-bit Linux, a POSIX timer on the thread's CPU clock that signals that thread; where
    that cannot be had, ``setitimer(ITIMER_VIRTUAL)``, which counts every thread's CPU time.
    Make it on the thread to count (the main thread).
    """

    def __init__(self, interval: float) -> None:
        self._spec = _ITimerSpec()
        self._spec.it_interval.tv_nsec = self._spec.it_value.tv_nsec = int(interval * 1e9)
        self._interval = interval
        self._timer: ctypes.c_void_p | None = None
        self._settime: Any = None
        self._delete: Any = None
        if sys.platform != "linux" or ctypes.sizeof(ctypes.c_void_p) != 8:
            return
        try:
            # PyDLL: these calls keep the GIL (they take microseconds, and each request makes
            # two; releasing it could hand the GIL to the io thread for a switch interval).
            libc = ctypes.PyDLL(None, use_errno=True)
            if not hasattr(libc, "timer_create"):  # glibc before 2.34 keeps it in librt
                libc = ctypes.PyDLL(ctypes.util.find_library("rt"), use_errno=True)
            clock = time.pthread_getcpuclockid(threading.get_ident())
            event = _SigEvent(
                sigev_signo=signal.SIGVTALRM,
                sigev_notify=_SIGEV_THREAD_ID,
                sigev_notify_thread_id=threading.get_native_id(),
            )
            timer = ctypes.c_void_p()
            if libc.timer_create(clock, ctypes.byref(event), ctypes.byref(timer)) != 0:
                return
        except (OSError, AttributeError, TypeError):
            return
        self._timer, self._settime, self._delete = timer, libc.timer_settime, libc.timer_delete

    def start(self) -> None:
        if self._timer is None:
            signal.setitimer(signal.ITIMER_VIRTUAL, self._interval, self._interval)
        else:
            self._settime(self._timer, 0, ctypes.byref(self._spec), None)

    def stop(self) -> None:
        if self._timer is None:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        else:
            self._settime(self._timer, 0, ctypes.byref(_ITimerSpec()), None)

    def close(self) -> None:
        self.stop()
        if self._timer is not None:
            self._delete(self._timer)
            self._timer = None


T = TypeVar("T")


def _runs_code_in(frame: FrameType | None, folders: tuple[str, ...]) -> bool:
    """Whether ``frame`` or a frame that called it runs code from one of ``folders``."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(folders):
            return True
        frame = frame.f_back
    return False


def exception_text(exc: BaseException) -> str:
    """``str(exc)`` of an exception from user code, or what Python's own tracebacks say when
    that raises (a reply must not fail over a broken ``__str__``)."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - whatever __str__ raises
        return "<exception str() failed>"


class DeadlineExceeded(BaseException):
    """Raised into a cell that blocks past its deadline; shown as ``TimeoutError``."""


@attrs.define(eq=False)
class Run:
    """One request's user code while it runs."""

    scope: trio.CancelScope
    task: trio.lowlevel.Task
    timeout: float | None = None
    reason: CancelReason | None = None
    """Why it was stopped: "interrupt", "shutdown", "timeout"; None while it was not."""
    active: bool = True
    watchdog: trio.CancelScope | None = None
    """The io loop's deadline watch for this run, if it has a timeout."""
    input_wait: trio.CancelScope | None = None
    """While its code waits in ``input()``: that wait's scope (see :meth:`UserCode.input_wait`)."""
    input_interrupted: bool = False


# No attrs repr: the SIGINT handler is a method of this object, and a cell that looks at
# signal.getsignal(SIGINT) would get the whole registry, loop token and runs included.
@attrs.define(eq=False, repr=False)
class UserCode(trio.abc.Instrument):
    """The registry of running user code on the main loop, and the SIGINT policy above.

    Args:
        token: the main loop's token.
    """

    token: trio.lowlevel.TrioToken
    _running: list[Run] = attrs.field(init=False, factory=list)
    # Interrupt bookkeeping: numbers only grow. The io loop writes _requested (and _handled
    # when the user's own SIGINT handler took it); the main thread writes the other two. An
    # interrupt n is pending while _handled < n and code runs.
    _requested: int = attrs.field(init=False, default=0)
    _handled: int = attrs.field(init=False, default=0)
    _cancelled_upto: int = attrs.field(init=False, default=0)
    # Set by the io loop just before it re-sends SIGINT, cleared by the handler: see _on_sigint.
    _resent: bool = attrs.field(init=False, default=False)
    _idle: trio.Event | None = attrs.field(init=False, default=None)
    closing: bool = attrs.field(init=False, default=False)
    """Set (any thread) before the interrupt that stops user code for shutdown: a request that
    enters :meth:`running` after it must not run its code (see :meth:`close`)."""
    watch_pending: Callable[[], None] | None = attrs.field(init=False, default=None)
    """Set by the kernel: asks the io loop to run :meth:`resend_while_pending` (for a SIGINT
    from outside, in signal mode, which the io loop did not send)."""
    _main_thread: int = attrs.field(init=False, factory=threading.get_ident)
    _tick: _CpuTick | None = attrs.field(init=False, default=None)
    _previous_handlers: dict[int, object] = attrs.field(init=False, factory=dict)
    not_in: tuple[str, ...] = attrs.field(init=False, default=())
    """Folders of code a KeyboardInterrupt is never raised in, set by the kernel: the
    debugger's, once it runs. Raised in its wait for the frontend at a breakpoint (Python 3.11
    and earlier run signal handlers there), it broke debugpy until the kernel restarted.
    Instead the interrupt is raised at the next event (a call, a return) of a cell's code, once
    the debugger lets the cell run on (see :meth:`_raise_in_next_cell_event`)."""
    cells: str = attrs.field(init=False, default="\0")
    """The path prefix of cells' code (set with :attr:`not_in`)."""

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
        self._tick = _CpuTick(_GIL_YIELD_INTERVAL)
        trio.lowlevel.add_instrument(self)

    def uninstall(self) -> None:
        """Give the signals back."""
        if self._tick is not None:
            self._tick.close()
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous_handlers.clear()

    # -- requests ----------------------------------------------------------------------------

    @contextmanager
    def running(self, *, timeout: float | None = None) -> Iterator[Run]:
        """Run the body as a request's user code, in a cancel scope of its own.

        Args:
            timeout: the run's deadline in seconds, to name it in errors (the io loop's timer
                enforces it; see the module docstring).

        Yields:
            The record of this run: ``.scope`` is its cancel scope; ``.reason`` says why it
            was cancelled (``"interrupt"``, ``"shutdown"``), None while it was not.
        """
        with trio.CancelScope() as scope:
            run = Run(scope, trio.lowlevel.current_task(), timeout)
            self._running.append(run)
            if len(self._running) == 1 and self._tick is not None:
                self._tick.start()
            try:
                yield run
            finally:
                run.active = False
                self._running.remove(run)
                if not self._running:
                    if self._tick is not None:
                        self._tick.stop()
                    if signal.getsignal(signal.SIGINT) != self._on_sigint:
                        # A SIGINT handler user code put in is its own while its request
                        # runs; after, interrupts are the kernel's again. (pdb leaves its
                        # handler in after `continue`: every later interrupt broke into it.)
                        signal.signal(signal.SIGINT, self._on_sigint)
                    self._handled = self._requested
                    if self._idle is not None:
                        self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no request's user code runs (main loop)."""
        while self._running:
            self._idle = trio.Event()
            await self._idle.wait()

    def cancel_task(self, task: trio.lowlevel.Task) -> None:
        """Interrupt the request whose code ``task`` runs, if one does (main loop only)."""
        for run in self._running:
            if run.task is task:
                if run.reason is None:
                    run.reason = "interrupt"
                self._cancel(run)

    def cancel_all(self, reason: CancelReason) -> None:
        """Cancel every running request's scope (main loop only); an interrupt ends only the
        wait of a request whose code waits in ``input()`` (see :meth:`input_wait`)."""
        for run in self._running:
            if reason == "interrupt" and run.reason is None and run.input_wait is not None:
                run.input_interrupted = True
                run.input_wait.cancel()
                continue
            if run.reason is None:
                run.reason = reason
            self._cancel(run)

    @staticmethod
    def _cancel(run: Run) -> None:
        run.scope.cancel()
        if run.input_wait is not None:  # shielded from the run's scope
            run.input_wait.cancel()

    @contextmanager
    def input_wait(self) -> Iterator[trio.CancelScope]:
        """The body awaits the frontend's answer to ``input()`` called by a request's code, in
        the code's task (main loop).

        An interrupt meanwhile ends the wait, not the request: ``KeyboardInterrupt`` is raised
        here, so ``input()`` raises it where it was called, as after Ctrl-C in a terminal, and
        code that catches it goes on (``while True: try: input() except KeyboardInterrupt:
        break``), its later awaits not cancelled. The wait is shielded from the request's own
        scope, whose cancellations (shutdown, deadline, a deleted subshell) cancel it too: then
        the body ends early, the scope yielded has ``cancelled_caught``, and the caller's next
        checkpoint raises the request's Cancelled.
        """
        run = self._owner(trio.lowlevel.current_task())
        if run is None:
            yield trio.CancelScope()
            return
        with trio.CancelScope(shield=True) as scope:
            run.input_wait = scope
            try:
                yield scope
            finally:
                run.input_wait = None
        if run.input_interrupted:
            run.input_interrupted = False
            raise KeyboardInterrupt

    # -- interrupts (any thread) ---------------------------------------------------------------

    def close(self) -> None:
        """Any thread, before the shutdown's interrupt: user code that has not started by then
        must not start.

        The interrupt only stops code that runs when SIGINT lands; a request on its way into
        :meth:`running` at that moment would run its cell in full, while the shutdown waited
        for it (seen in a test). So a cell checks :attr:`closing` once it is registered in
        :meth:`running` (``Kernel.execute_request``): either it sees the flag, or it was
        registered before the SIGINT was sent, and the SIGINT reaches it.
        """
        self.closing = True

    def interrupt(self) -> None:
        """Interrupt whatever user code runs now. Call from the io loop; never blocks."""
        self._requested += 1
        signal.pthread_kill(self._main_thread, signal.SIGINT)

    @property
    def active(self) -> bool:
        """Whether a request's user code runs (or awaits) now."""
        return bool(self._running)

    @property
    def interrupt_pending(self) -> bool:
        """Whether the last interrupt has not taken effect yet (rule 3 of the module)."""
        return bool(self._running) and self._handled < self._requested

    async def wait_interrupted(self) -> None:
        """Interrupt, and keep re-sending SIGINT while the interrupt is pending (io loop)."""
        self.interrupt()
        await self.resend_while_pending()

    async def resend_while_pending(
        self, *, resend_every: float = 0.02, give_up: float = 2.0
    ) -> None:
        """Re-send SIGINT every ``resend_every`` s while an interrupt is pending (io loop)."""
        with trio.move_on_after(give_up):
            while True:
                await trio.sleep(resend_every)
                if not self.interrupt_pending:
                    return
                if signal.getsignal(signal.SIGINT) != self._on_sigint:
                    # User code put a handler of its own in (a training loop's graceful stop,
                    # pdb's while a program continues): that handler had the SIGINT, and is
                    # the one to decide what an interrupt means. Sent again, it got a signal
                    # every few milliseconds (pdb broke in, then the cell died at its prompt).
                    self._handled = self._requested
                    return
                self._resent = True
                signal.pthread_kill(self._main_thread, signal.SIGINT)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        number = self._requested
        resent, self._resent = self._resent, False
        if not self._running:
            self._handled = number
            return
        if self._handled >= number and resent:
            # A re-send the io loop decided on while the interrupt was pending, and which landed
            # after it took effect (the check and the send are not atomic). Taken for a SIGINT
            # from outside, it would interrupt the cell a second time: a second
            # KeyboardInterrupt, raised in its `except` or `finally` block, or in IPython
            # showing the first one. A SIGINT from outside that the OS merges with this one
            # (both arrive before the handler runs, a window of a GIL switch) is lost with it.
            return
        if self._handled >= number:
            # Not one the io loop sent: SIGINT from outside (interrupt_mode "signal", or a
            # terminal). It becomes pending like the others, and the io loop watches it.
            self._requested = number = number + 1
            if self.watch_pending is not None:
                self.watch_pending()
        if not trio.lowlevel.currently_ki_protected():
            try:
                task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
            except RuntimeError:
                task = None
            run = self._owner(task) if task is not None else None
            if run is not None and self.not_in and _runs_code_in(frame, self.not_in):
                self._raise_in_next_cell_event(number, run)
                return
            if run is not None:
                self._handled = number
                if run.reason == "timeout":
                    raise DeadlineExceeded(deadline_message(run.timeout))
                raise KeyboardInterrupt
        self.token.run_sync_soon(self._cancel_for_interrupt, number)

    def _raise_in_next_cell_event(self, number: int, run: Run) -> None:
        """Raise interrupt ``number`` in the main thread at the next call, return or C call of
        a cell's code (main thread, from the SIGINT handler).

        A profile function sees those events whatever the debugger does with tracing, and an
        exception it raises propagates into the code at that point, as if raised there. It
        removes itself once it raised or the interrupt was taken otherwise.
        """
        previous: Any = sys.getprofile()
        if getattr(previous, "trikernel_interrupt", False):
            return  # set already, by an earlier SIGINT of this interrupt

        def at_event(frame: FrameType, event: str, arg: object) -> None:
            if previous is not None:
                previous(frame, event, arg)
            if self._handled >= number or not run.active:
                sys.setprofile(previous)
            elif frame.f_code.co_filename.startswith(self.cells):
                sys.setprofile(previous)
                self._handled = number
                if run.reason == "timeout":
                    raise DeadlineExceeded(deadline_message(run.timeout))
                raise KeyboardInterrupt

        at_event.trikernel_interrupt = True  # type: ignore[attr-defined]
        sys.setprofile(at_event)

    def _cancel_for_interrupt(self, number: int) -> None:
        self.cancel_all("interrupt")
        if trio.lowlevel.current_statistics().tasks_runnable == 0:
            # Every task is parked at an await: each has just received its Cancelled.
            self._handled = max(self._handled, number)
        else:
            self._cancelled_upto = max(self._cancelled_upto, number)

    def before_io_wait(self, timeout: float) -> None:
        """Trio instrument hook: the main loop is idle, so every cancel has landed."""
        if self._cancelled_upto > self._handled:
            self._handled = self._cancelled_upto

    def _owner(self, task: trio.lowlevel.Task) -> Run | None:
        """The running request whose task is ``task`` or spawned it (through nurseries)."""
        roots = {run.task: run for run in self._running}
        current: trio.lowlevel.Task | None = task
        while current is not None:
            if current in roots:
                return roots[current]
            nursery = current.parent_nursery
            current = nursery.parent_task if nursery is not None else None
        return None

    @staticmethod
    def _on_cpu_tick(signum: int, frame: FrameType | None) -> None:
        # Releases the GIL for a moment: see the module docstring.
        time.sleep(0)


@trio.lowlevel.disable_ki_protection
def call_user_code(fn: Callable[..., T], *args: Any) -> T:
    """Call a user callback (a comm handler) where an interrupt may raise KeyboardInterrupt.

    The kernel's request runners are KI-protected; user code they call must not be, or an
    interrupt could never stop a busy callback.
    """
    return fn(*args)


def deadline_message(timeout: float | None) -> str:
    """The message of a cell's timeout error."""
    return f"the cell ran past its {timeout:g} s deadline" if timeout else "the cell timed out"
