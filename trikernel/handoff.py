"""Hand-offs between the kernel's two trio loops, and the thread that runs the second one.

The kernel runs two trio loops (see ``docs/architecture.md``): the *main loop* on the main
thread, where user code runs, and the *io loop* on a thread of its own, which owns every socket.
Nothing else crosses between them: a value goes from one loop to the other only through a
:class:`Mailbox` (many producers in any thread, one consumer task in one loop), and a call goes
only through a loop's :class:`trio.lowlevel.TrioToken`. The one shortcut: a consumer may let a
producer handle an item in its own thread when nothing waits (:meth:`Mailbox.bypass_with`;
the io loop lets the main thread send a reply itself).

Invariants:
- :meth:`Mailbox.put` never blocks and never awaits: it is safe from any thread, and from sync
  code running inside either loop.
- A mailbox wakes its loop at most once per batch, however many items are put: producers that
  put thousands of items between two wake-ups cost the consumer one wake-up.
- :func:`run_loop_in_thread` is the only place a thread with a trio loop is started; the task
  that runs it is that thread's supervisor (cancel the task: the loop is cancelled and joined).
- Every thread the kernel starts blocks :data:`MAIN_THREAD_SIGNALS`, and so do the threads they
  start: the OS delivers those signals to the main thread (see :func:`main_thread_signals_only`).
- A call posted to another loop (:func:`post`) never raises there: an exception escaping a
  ``run_sync_soon`` callback is a ``TrioInternalError`` that ends that loop. Posting to a loop
  that has finished (late in shutdown) is dropped, not an error for the poster.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Generic, NoReturn, TypeVar

import attrs
import outcome
import trio

__all__ = [
    "MAIN_THREAD_SIGNALS",
    "Mailbox",
    "main_thread_signals_only",
    "post",
    "run_loop_in_thread",
    "run_sync_in_thread",
]

log = logging.getLogger("trikernel")

T = TypeVar("T")


#: Signals whose Python handlers decide what they mean, which CPython runs on the main thread
#: only: SIGINT (an interrupt), SIGTERM (shutdown), SIGVTALRM (the CPU-time tick).
MAIN_THREAD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGVTALRM})


@contextmanager
def main_thread_signals_only() -> Iterator[None]:
    """Block :data:`MAIN_THREAD_SIGNALS` in the calling thread for the body.

    A thread inherits the mask of the thread that starts it, so threads started in the body
    (or started from those) never take these signals. Why it matters: the OS hands a signal sent
    to the process to any thread that does not block it, and if that is not the main thread, the
    main thread is not woken. A cell blocked in ``time.sleep(30)`` then sleeps on: SIGTERM gave
    it no ``KeyboardInterrupt``, no reply and no exit until the sleep ended. Signals that arrive
    while the body runs on the main thread wait until it ends.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, MAIN_THREAD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def post(token: trio.lowlevel.TrioToken, fn: Callable[..., object], *args: object) -> None:
    """Call ``fn(*args)`` soon in ``token``'s loop; from any thread or a signal handler.

    An exception from ``fn`` is logged, never raised into the loop (see the invariants).
    """

    def guarded() -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("a call posted to another loop failed: %r", fn)

    try:
        token.run_sync_soon(guarded)
    except trio.RunFinishedError:
        log.debug("dropped %r: its loop has finished", fn)


def _always() -> bool:
    return True


@attrs.define(eq=False)
class Mailbox(Generic[T]):
    """A FIFO from any thread into one trio loop.

    Its consumer may also let producers in other threads handle an item themselves
    (:meth:`bypass_with`), when nothing waits and the consumer is not handling a batch: a reply
    is then sent by the thread that made it, and the consumer's loop is not woken (waking it
    costs the GIL twice, and against a busy thread up to a switch interval each time).

    Args:
        token: the token of the loop whose task calls :meth:`get_batch`.
    """

    token: trio.lowlevel.TrioToken
    may_bypass: Callable[[], bool] = _always
    """Asked before a producer handles an item itself (see :meth:`bypass_with`). The kernel
    says no while more requests wait (their replies go out in batches from the consumer's
    loop) and while user code runs on the main thread (see :mod:`trikernel.kernel`)."""
    _items: deque[T] = attrs.field(init=False, factory=deque)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _wake_scheduled: bool = attrs.field(init=False, default=False)
    _event: trio.Event | None = attrs.field(init=False, default=None)
    _bypass: Callable[[T], bool] | None = attrs.field(init=False, default=None)
    _claimed: bool = attrs.field(init=False, default=False)
    """Items are being handled: a batch by the consumer, or one item by a bypassing producer."""
    _consumer: int | None = attrs.field(init=False, default=None)

    def bypass_with(self, handle: Callable[[T], bool] | None) -> None:
        """Consumer: let producers in other threads call ``handle(item)`` instead of queueing
        it, when nothing waits (None: no more). ``handle`` returns whether it handled the
        item (if not, the item is queued first), and must not raise. Once a batch is handled,
        the consumer calls :meth:`release`."""
        with self._lock:
            self._bypass = handle
            self._consumer = threading.get_ident()

    def waiting(self) -> int:
        """How many items wait (a hint in any thread but the consumer's)."""
        return len(self._items)

    @trio.lowlevel.enable_ki_protection
    def put(self, item: T) -> None:
        """Append ``item``; wake the consumer if this is the first item since its last batch.

        KI-protected: an interrupt between marking the wake-up as scheduled and posting it
        would leave the consumer asleep for good."""
        if self._put_by_bypass(item):
            return
        with self._lock:
            self._items.append(item)
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        self._post_wake()

    @trio.lowlevel.enable_ki_protection
    def _put_by_bypass(self, item: T) -> bool:
        # KI-protected: an interrupt must not leave the claim taken, nor stop a send between
        # two frames (see FrameSocket.try_send_from_thread).
        handle = self._bypass
        if handle is None or threading.get_ident() == self._consumer or not self.may_bypass():
            return False
        with self._lock:
            if self._items or self._claimed:
                return False
            self._claimed = True
        handled = False
        try:
            handled = handle(item)
        finally:
            with self._lock:
                self._claimed = False
                if not handled:
                    self._items.appendleft(item)  # before what others queued meanwhile
                # The consumer may have found items claimed, and waits for this wake-up.
                wake = bool(self._items)
                self._wake_scheduled = self._wake_scheduled or wake
            if wake:
                self._post_wake()
        return True

    def release(self) -> None:
        """Consumer, with a bypass: the batch it took is handled; producers may bypass again."""
        with self._lock:
            self._claimed = False

    def _post_wake(self) -> None:
        try:
            self.token.run_sync_soon(self._wake)
        except trio.RunFinishedError:  # the consumer's loop ended (shutdown): nobody to wake
            pass

    def _wake(self) -> None:
        # Runs in the consumer's loop.
        if self._event is not None:
            self._event.set()

    def get_batch_nowait(self) -> list[T]:
        """Take every item waiting now (possibly none)."""
        with self._lock:
            if self._claimed:  # a producer is handling one: it wakes the consumer after
                return []
            items = list(self._items)
            self._items.clear()
            self._wake_scheduled = False
            self._claimed = bool(items) and self._bypass is not None
        return items

    async def get_batch(self) -> list[T]:
        """Wait until at least one item is waiting, then take them all, oldest first.

        Cancellation: nothing is taken when cancelled.
        """
        waited = False
        while True:
            # A fresh event before looking: a put after the look wakes exactly this event.
            self._event = trio.Event()
            with self._lock:
                ready = bool(self._items) and not self._claimed
            if ready:
                if not waited:
                    # Items there at once: still a checkpoint, before taking them. After a
                    # wait (itself a checkpoint) another one would only cost the consumer's
                    # loop one more turn per batch, on the path of every request.
                    await trio.lowlevel.checkpoint()
                items = self.get_batch_nowait()  # one consumer: nobody took them meanwhile
                if items:
                    return items
                continue
            await self._event.wait()
            waited = True


async def run_loop_in_thread(
    async_fn: Callable[[Callable[[T], None]], Awaitable[object]],
    name: str,
    *,
    join_timeout: float = math.inf,
    task_status: trio.TaskStatus[T] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run ``trio.run(async_fn, started)`` on a new thread, supervised by the calling task.

    Use it with ``await nursery.start(run_loop_in_thread, async_fn, name)``. ``async_fn`` runs
    in the new thread's loop and calls ``started(value)`` once it is ready; ``nursery.start``
    then returns ``value`` in the calling loop.

    Never returns. Raises what the thread's loop raised, or ``RuntimeError`` if it returned.
    When the calling task is cancelled, the thread's loop is cancelled and joined (waiting at
    most ``join_timeout`` seconds) before the cancellation propagates.

    :data:`MAIN_THREAD_SIGNALS` are blocked in the new thread so that the OS delivers them to
    the main thread, where the kernel's handlers decide what they mean (see
    :mod:`trikernel.execution`).
    """
    caller = trio.lowlevel.current_trio_token()
    done = trio.Event()
    result: list[outcome.Outcome[object]] = []
    lock = threading.Lock()
    remote: list[tuple[trio.lowlevel.TrioToken, trio.CancelScope]] = []
    stop_requested = False

    def started(value: T) -> None:
        # Called in the thread's loop; task_status belongs to the caller's loop.
        caller.run_sync_soon(task_status.started, value)

    async def body() -> object:
        with trio.CancelScope() as scope:
            with lock:
                remote.append((trio.lowlevel.current_trio_token(), scope))
                if stop_requested:
                    scope.cancel()
            return await async_fn(started)
        return None

    def thread_main() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, MAIN_THREAD_SIGNALS)
        result.append(outcome.capture(trio.run, body))
        try:
            caller.run_sync_soon(done.set)
        except trio.RunFinishedError:  # the caller's loop is gone; nobody is waiting
            pass

    thread = threading.Thread(target=thread_main, name=name, daemon=True)
    thread.start()
    try:
        await done.wait()
        result[0].unwrap()
        raise RuntimeError(f"the {name} loop returned; it should run until cancelled")
    finally:
        if not done.is_set():
            with lock:
                stop_requested = True
                targets = list(remote)
            for token, scope in targets:
                try:
                    token.run_sync_soon(scope.cancel)
                except trio.RunFinishedError:
                    pass
            with trio.CancelScope(shield=True), trio.move_on_after(join_timeout):
                await done.wait()


async def run_sync_in_thread(fn: Callable[[], T], name: str, *, stop: Callable[[], None]) -> T:
    """Run blocking ``fn()`` on a new thread of its own and return its result.

    Unlike ``trio.to_thread.run_sync``, the thread is not taken from (or returned to) a cache,
    so it ends with the call. When the calling task is cancelled, ``stop()`` is called (from
    the caller's thread) to make ``fn`` return, and the thread is joined before the
    cancellation propagates: the thread never outlives its task.
    """
    caller = trio.lowlevel.current_trio_token()
    done = trio.Event()
    result: list[outcome.Outcome[T]] = []

    def thread_main() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, MAIN_THREAD_SIGNALS)
        result.append(outcome.capture(fn))
        try:
            caller.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass

    thread = threading.Thread(target=thread_main, name=name, daemon=True)
    thread.start()
    try:
        await done.wait()
    finally:
        if not done.is_set():
            stop()
            with trio.CancelScope(shield=True):
                await done.wait()
    return result[0].unwrap()
