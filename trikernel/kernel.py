"""The kernel: what runs where, in which loop, and the handler for every request.

Two trio loops (drawn in ``docs/architecture.md``):

- The **main loop**, on the main thread, runs user code through IPython. Its nursery holds the
  io-loop supervisor (:func:`~trikernel.handoff.run_loop_in_thread`), the shell request
  dispatcher and executor, and user background tasks.
- The **io loop**, on thread ``trikernel-io``, owns every socket. Its nursery holds one task
  per channel: ``serve_heartbeat``, ``serve_iopub``, ``serve_control``, ``serve_stdin``,
  ``serve_shell``. It keeps answering while user code blocks the main thread.

Hand-offs: shell requests go io -> main through a :class:`~trikernel.handoff.Mailbox`; replies,
output and input requests go main -> io through the channels' outboxes and the
:class:`~trikernel.channels.IOPubQueue`; interrupts go io -> main as SIGINT
(:mod:`trikernel.execution`); shutdown steps are posted with ``TrioToken.run_sync_soon``.

One shortcut: a shell reply or an iopub message made on the main thread is sent from there
when nothing waits to be sent before it (the bypass of the shell outbox and of the queue), so
a ``pass`` cell's busy, input, reply and idle never wake the io loop. Not while more requests
wait (their messages go out in batches from the io loop), and not while user code runs: the
io loop's interrupt SIGINT would land mostly in one of its sends, where it is deferred
(docs/architecture.md, "Hand-offs").

Handlers are ``async def <msg_type>(self, request) -> reply content`` methods, collected into
one table per channel (:attr:`Kernel.shell_handlers`, :attr:`Kernel.control_handlers`). A
wrapper kernel subclasses :class:`Kernel` and overrides them.
"""

from __future__ import annotations

import contextlib
import contextvars
import faulthandler
import functools
import gc
import logging
import math
import os
import platform
import re
import signal
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, NoReturn, TextIO, TypeVar

import attrs
import outcome
import trio
import zmq

from . import __version__
from .channels import (
    HEARTBEAT_THREAD,
    MAX_PENDING_MESSAGES,
    IOPubQueue,
    Outbox,
    SentMarker,
    serve_control,
    serve_heartbeat,
    serve_iopub,
    serve_shell,
    serve_stdin,
)
from .debugger import CELL_PREFIX, Debugger, remove_cell_files
from .execution import Run, UserCode, call_user_code, deadline_message, exception_text
from .handoff import Mailbox, main_thread_signals_only, post, run_loop_in_thread
from .protocol import PROTOCOL_VERSION, Channel, ConnectionInfo, Message, Session, timestamp
from .settings import KernelSettings
from .streams import FdCapture, FdCaptures, OutStream
from .tasks import BackgroundTasks, background
from .usage import UsageMeter

__all__ = ["Kernel", "RequestError", "ainput", "current_cell", "current_request", "started_by"]

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger("trikernel")
T = TypeVar("T")

_IO_THREAD = "trikernel-io"
"""The io loop's thread (named for debuggers and logs)."""

#: The request whose handling is running in this context (trio copies it into spawned tasks).
current_request: contextvars.ContextVar[Message | None] = contextvars.ContextVar(
    "trikernel_current_request", default=None
)
#: The request whose handling started this thread or background task, which may outlive it
#: (see :meth:`Kernel.parent`). Set instead of ``current_request`` there.
started_by: contextvars.ContextVar[Message | None] = contextvars.ContextVar(
    "trikernel_started_by", default=None
)
#: The execution count of the cell running in this context, if one is.
current_cell: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "trikernel_current_cell", default=None
)


def request_or_origin() -> Message | None:
    """The request this context runs for, or else the one that started its thread or task:
    what a thread or task started here is ``started_by``."""
    return current_request.get() or started_by.get()


def parent_to_watch(environ: Mapping[str, str] = os.environ) -> int | None:
    """The process whose exit ends the kernel: ``JPY_PARENT_PID``, which jupyter_client sets
    to the launching process (a server, a console, papermill); None when it is unset, not a
    pid, 1 (init, which never exits), or not the kernel's parent or an ancestor of it (a
    value inherited from elsewhere, or a pid of another namespace, as in a container: watched,
    it would end the kernel at once, or with an unrelated process)."""
    value = environ.get("JPY_PARENT_PID", "")
    try:
        pid = int(value)
    except ValueError:
        if value:
            log.warning("JPY_PARENT_PID=%r is not a process id; no parent is watched", value)
        return None
    if pid <= 1:
        return None
    if pid not in _ancestors():
        log.warning("JPY_PARENT_PID=%d is not an ancestor of the kernel; not watched", pid)
        return None
    return pid


def _ancestors(limit: int = 64) -> list[int]:
    """The kernel's parent, its parent and so on (Linux's /proc); elsewhere the parent only."""
    found: list[int] = []
    pid = os.getppid()
    while pid > 1 and len(found) < limit:
        found.append(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])  # "pid (name) state ppid ..."
    return found


async def wait_process_exit(pid: int, poll_every: float = 1.0) -> None:
    """Return once process ``pid`` has exited (at once if there is none).

    On Linux a pidfd makes this one wait with no polling; elsewhere the pid is checked every
    ``poll_every`` seconds. (A pid reused by a new process after the watched one exited would
    read as alive: the kernel's parent does not exit and come back that fast.)
    """
    try:
        fd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
        fd = None
    if fd is None:
        # An exited process that was not reaped yet still exists; a parent's child learns
        # sooner, from being given to another parent.
        child = os.getppid() == pid
        while True:
            if not _exists(pid) or (child and os.getppid() != pid):
                return
            await trio.sleep(poll_every)
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but another user's
        return True
    return True


# `%%timeout SECONDS` as a cell's first line: the rest of the cell runs under that deadline.
_TIMEOUT_MAGIC = re.compile(r"\A%%timeout\b[ \t]*(?P<seconds>[^\n]*?)[ \t]*(?:\n|\Z)")

Handler = Callable[[Message], Awaitable[Mapping[str, Any] | None]]

# Comm messages are handled as soon as they arrive, even while a cell awaits: a cell that
# awaits a widget's change must see the comm_msg that changes it (ipykernel issue 646).
_INLINE_SHELL = frozenset({"comm_open", "comm_msg", "comm_close", "comm_info_request"})
# Acted on in the io loop even when sent on shell: interrupt and shutdown because some
# frontends send them there, and kernel_info because its answer needs nothing of the shell, so
# a frontend learns the kernel is up while IPython still loads (execute requests wait for it).
_SHELL_IN_IO = frozenset({"interrupt_request", "shutdown_request", "kernel_info_request"})


_MAX_IDLE_LATER = 100
"""kernel_info requests whose idle may wait for the running cell's (see Kernel._idle_soon)."""

_EXIT_GRACE = 0.1
"""Seconds between the reply to a cell that called ``exit`` and the kernel's stop."""


class RequestError(Exception):
    """A request's content is wrong; the reply says so with ``status: "error"``."""


@attrs.frozen
class _Incoming:
    msg: Message
    received: float
    """``time.monotonic()`` when the io loop read it."""

    @property
    def subshell(self) -> str | None:
        """The subshell the request is for (protocol 5.5); None: the parent shell."""
        return _subshell_of(self.msg)


# Stands for a subshell_id that is not a string: no subshell has it, so the request is refused
# as one for an unknown subshell, rather than run in the parent shell.
_NOT_A_STRING = "\0not a string"


def _subshell_of(msg: Message) -> str | None:
    sid = msg.header.extra.get("subshell_id")
    return sid if sid is None or isinstance(sid, str) else _NOT_A_STRING


@attrs.define(eq=False)
class _Shell:
    """The parent shell or a subshell: its queue of requests and the task that runs them."""

    send: trio.MemorySendChannel[_Incoming]
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    task: trio.lowlevel.Task | None = None
    """The task that runs its requests, once started."""
    abort_before: float = -math.inf
    """Execute requests received before this ``time.monotonic()`` are aborted (a failed or
    interrupted cell); per shell, so a failure in a subshell aborts only its own queue."""


class Kernel:
    """A Jupyter kernel for Python on trio.

    Args:
        connection: where to bind and how to sign.
        settings: the kernel's settings.
        connection_file: where the connection info came from; if it does not exist, the
            kernel writes it (mode 0600) once its sockets are bound.
    """

    implementation: ClassVar[str] = "trikernel"
    implementation_version: ClassVar[str] = __version__
    banner: ClassVar[str] = (
        f"Python {sys.version.split()[0]} on trikernel {__version__}: "
        "every cell runs on one trio loop; top-level await works."
    )
    help_links: ClassVar[list[dict[str, str]]] = [
        {"text": "Python", "url": "https://docs.python.org/3/"},
        {"text": "trio", "url": "https://trio.readthedocs.io/"},
        {"text": "IPython", "url": "https://ipython.readthedocs.io/"},
        {"text": "NumPy", "url": "https://numpy.org/doc/stable/"},
        {"text": "SciPy", "url": "https://docs.scipy.org/doc/scipy/"},
        {"text": "Matplotlib", "url": "https://matplotlib.org/stable/"},
        {"text": "pandas", "url": "https://pandas.pydata.org/docs/"},
        {"text": "SymPy", "url": "https://docs.sympy.org/latest/"},
    ]

    def __init__(
        self,
        connection: ConnectionInfo,
        *,
        settings: KernelSettings | None = None,
        connection_file: Path | None = None,
    ) -> None:
        self.connection = connection
        self.settings = settings if settings is not None else KernelSettings()
        self.connection_file = connection_file
        if not connection.key:
            log.warning(
                "the connection key is empty: messages are not signed, and anyone who can "
                "reach the kernel's ports can run code"
            )
        self.session = Session(
            key=connection.key.encode(), signature_scheme=connection.signature_scheme
        )
        self.shell_handlers: dict[str, Handler] = {
            name: getattr(self, name)
            for name in (
                "execute_request",
                "complete_request",
                "inspect_request",
                "history_request",
                "is_complete_request",
                "kernel_info_request",
                "comm_info_request",
                "comm_open",
                "comm_msg",
                "comm_close",
            )
        }
        self.control_handlers: dict[str, Handler] = {
            name: getattr(self, name)
            for name in (
                "kernel_info_request",
                "shutdown_request",
                "interrupt_request",
                "connect_request",
                "create_subshell_request",
                "delete_subshell_request",
                "list_subshell_request",
                "debug_request",
                "usage_request",
            )
        }
        self._usage: tuple[UsageMeter, trio.Lock] | None = None  # io loop; made on first use
        self._debugger: Debugger | None = None  # io loop; made by the first debug_request
        self._debug_parent: Message | None = None  # the debug_request its events belong to
        self._last_parent: Message | None = None
        # Main loop: the shell requests being answered, oldest first; replaced whole, so any
        # thread may read it.
        self._answering: tuple[Message, ...] = ()
        self._fd_captures = FdCaptures([])
        self._shells: dict[str | None, _Shell] = {}  # main loop; None is the parent shell
        self._shell_nursery: trio.Nursery | None = None
        self._subshell_ids: set[str] = set()  # io loop: what list_subshell_request reports
        # The input requests waiting for their reply, oldest first, by msg_id: several can
        # wait at once (a subshell's cell and the parent's, a thread and its cell).
        self._pending_input: dict[str, Callable[[Message | None], None]] = {}
        self._ports: dict[Channel, int] = {}
        # Set once the loops run:
        self._main_token: trio.lowlevel.TrioToken
        self._io_token: trio.lowlevel.TrioToken
        self._io_nursery: trio.Nursery
        self._iopub: IOPubQueue
        self._outboxes: dict[Channel, Outbox] = {}
        self._shell_inbox: Mailbox[_Incoming]
        self._user: UserCode
        self._shutdown_started = False  # main loop
        self._more_requests = False  # main loop: a shell's next request waits already
        self._requests_done: trio.Event | None = None  # set when _answering empties
        self._idle_later: list[Message] = []  # io loop: kernel_info requests (see _idle_soon)
        self._shutdown_replying = False  # a shutdown_request waits for its reply
        self._main_stopped: trio.Event  # io loop: main loop has stopped user code
        self._io_finished: trio.Event  # main loop: the io loop sent the shutdown reply
        self._shutdown_requested: trio.Event  # main loop

    # -- publishing: safe from any thread ---------------------------------------------------

    def parent(self) -> Message | None:
        """The request output made now belongs to.

        Code that runs for a request (a cell, a comm callback, the tasks they spawn) writes to
        that request. A thread or background task a request started may outlive it: its
        output goes to that request while it is answered; after, to the cell running now, if
        one runs (nbclient keeps a cell's output only until its idle, and a pool's worker
        that an earlier cell started writes for the cell that gave it work), else to that
        request still (JupyterLab shows late output in its cell). Output from no request
        (descriptor-level text, threads started outside any) goes to the running cell, else
        to the latest request.
        """
        return current_request.get() or self._parent_of_outliving_code()

    def _parent_of_outliving_code(self) -> Message | None:
        origin = started_by.get()
        answering = self._answering
        if origin is not None and (not answering or any(m is origin for m in answering)):
            return origin
        for request in reversed(answering):
            if request.msg_type == "execute_request":
                return request
        return origin or self._last_parent

    def get_parent(self, channel: str | None = None) -> dict[str, Any]:
        """:meth:`parent` as ipykernel's ``get_parent`` gives it: the message as a dict, or
        ``{}``. ipywidgets' ``Output`` widget captures what a cell or a callback shows by
        taking ``["header"]["msg_id"]`` from it. (``channel`` is ipykernel's and changes
        nothing: the parent is that of the running task's request, on whichever channel.)"""
        from .comms import message_dict  # loaded with the shell, long before a cell asks

        msg = self.parent()
        return {} if msg is None else message_dict(msg)

    iopub_socket: ClassVar[object] = object()
    """Stands for the iopub socket in :meth:`send_response` (it is no socket: iopub is the io
    loop's to send on, see :mod:`trikernel.channels.iopub`)."""

    def send_response(
        self,
        stream: object,
        msg_or_type: str | Mapping[str, Any],
        content: Mapping[str, Any] | None = None,
        ident: object = None,
        buffers: list[bytes] | tuple[bytes, ...] | None = None,
        track: bool = False,
        header: object = None,
        metadata: Mapping[str, Any] | None = None,
        channel: str | None = None,
    ) -> None:
        """ipykernel's way to publish, which libraries call as
        ``kernel.send_response(kernel.iopub_socket, "display_data", content)``: the message
        goes out as :meth:`publish` sends it, after everything published before it.

        Raises:
            ValueError: ``stream`` is not :attr:`iopub_socket` (replies and stdin are the
                kernel's own to send).
        """
        if stream is not self.iopub_socket:
            raise ValueError("trikernel's send_response publishes on iopub_socket only")
        if not isinstance(msg_or_type, str):  # a message dict made by the caller
            content = msg_or_type.get("content", content)
            metadata = msg_or_type.get("metadata", metadata)
            msg_or_type = str(msg_or_type.get("header", {}).get("msg_type", ""))
        self.flush_output()  # text written before it goes before it, as with display()
        self.publish(msg_or_type, content or {}, metadata=metadata, buffers=buffers or ())

    def flush_output(self) -> None:
        """Queue the text written so far ahead of whatever is published next: what waits in
        ``sys.stdout`` and ``sys.stderr`` and, on the main thread (the pipes' reader besides
        the io loop), what was written to their file descriptors, by a subprocess say."""
        if threading.current_thread() is threading.main_thread():
            self._fd_captures.drain()
        sys.stdout.flush()
        sys.stderr.flush()

    def publish(
        self,
        msg_type: str,
        content: Mapping[str, Any],
        *,
        parent: Message | None = None,
        metadata: Mapping[str, Any] | None = None,
        buffers: list[bytes] | tuple[bytes, ...] = (),
    ) -> None:
        """Broadcast a message on iopub, after everything published before it.

        Args:
            msg_type: e.g. ``display_data``.
            content: its content.
            parent: the request it belongs to; default: the current request.
            metadata: its metadata.
            buffers: binary frames.
        """
        self._iopub.publish(
            self.session.msg(
                msg_type,
                content,
                parent=parent if parent is not None else self.parent(),
                metadata=metadata,
                buffers=buffers,
                identities=[msg_type.encode()],
            )
        )

    def _status(self, state: str, parent: Message) -> None:
        self.publish("status", {"execution_state": state}, parent=parent)

    def _reply(
        self,
        channel: Channel,
        request: Message,
        content: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        reply_type = request.msg_type.removesuffix("_request") + "_reply"
        reply = self.session.msg(reply_type, content, parent=request, metadata=metadata)
        self._outboxes[channel].put(reply)

    # -- running -----------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until shut down. Blocks; call on the main thread."""
        # Figures appear in the cell that draws them, as in every Jupyter Python kernel.
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        # The io thread takes the GIL back after each wait in trio's epoll (and pyzmq's calls,
        # where keepgil's cannot be had, release it for each frame); against a busy cell each
        # take waits for the switch interval. 5 ms (Python's default) made an interrupt wait
        # ~35 ms; 1 ms costs a busy cell nothing measurable, because switches only happen
        # while the io thread has work.
        sys.setswitchinterval(0.001)
        # sys.excepthook too: a cell runs with IPython's (see ZMQInteractiveShell.run_code), and
        # an error that ends the kernel while a cell is unfinished must be printed by Python's.
        # IPython 8's prints an exception group as the bare line "NoneType: None".
        saved = sys.stdout, sys.stderr, sys.excepthook
        try:
            trio.run(self._serve_main)
        finally:
            sys.stdout, sys.stderr, sys.excepthook = saved
            remove_cell_files()

    def _install_io(self) -> None:
        """Route stdout and stderr, Python's and the file descriptors', to the frontend."""
        sys.stdout = OutStream("stdout", self._iopub, self.parent, 1)
        sys.stderr = OutStream("stderr", self._iopub, self.parent, 2)
        _attribute_threads()
        # The kernel's own log keeps going to the terminal that started it, not to a cell.
        log_stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8")
        for handler in logging.getLogger("trikernel").handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(log_stream)
        # So does the Python traceback of a crash (a segfault in a C extension, an abort):
        # descriptor 2 becomes a pipe below, which a dying kernel never reads. JupyterLab only
        # says the kernel died; its log then says where.
        faulthandler.enable(file=log_stream)
        self._fd_captures = FdCaptures(
            [
                FdCapture(1, "stdout", self._iopub, self.parent),
                FdCapture(2, "stderr", self._iopub, self.parent),
            ]
        )
        for capture in self._fd_captures.captures:
            post(self._io_token, self._io_nursery.start_soon, capture.serve)

    async def _serve_main(self) -> None:
        self._main_token = trio.lowlevel.current_trio_token()
        self._shell_inbox = Mailbox(self._main_token)
        self._shutdown_requested = trio.Event()
        self._io_finished = trio.Event()
        self._user = UserCode(self._main_token)
        self._user.install()
        self._user.watch_pending = self._watch_pending
        signal.signal(signal.SIGTERM, self._on_sigterm)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_python_signals_in_forked_child)
        try:
            async with trio.open_nursery() as nursery:
                self._ports = await nursery.start(run_loop_in_thread, self._serve_io, _IO_THREAD)
                self._write_connection_file()
                self._install_io()
                # No "starting" status: published once the sockets were bound, it reached a
                # client that had subscribed by then before the iopub_welcome JEP 65 makes
                # its first message (jupyter_kernel_test's check failed in CI), and ZeroMQ
                # registers a subscription during any send, so no ordering avoids that. No
                # frontend needs it: Jupyter Server reports "starting" itself.
                # What only the main thread uses loads now, after the sockets are bound:
                # IPython above all (docs/architecture.md, "Startup").
                from .comms import install_comms
                from .shell import make_shell

                with _startup_messages_in_log():
                    # IPython starts its history thread here.
                    with main_thread_signals_only():
                        self.shell = make_shell(
                            self,
                            history=self.settings.shell.history,
                            profile=self.settings.shell.profile,
                            args=self.settings.ipython_args,
                        )
                    self.comm_manager = install_comms(self)
                    self.background = BackgroundTasks(self)
                    await nursery.start(self.background.serve)
                    background.tasks = self.background
                    # Before the first cell, as in ipykernel; execute requests wait meanwhile.
                    self.shell.run_startup()
                await nursery.start(self._serve_shell_requests)
                # What is loaded by now (IPython, trio, the kernel: some 36,000 objects) lives
                # as long as the kernel. Frozen, Python's cyclic collector no longer walks it:
                # a full collection, which Python starts on its own every so often while cells
                # allocate, fell from 34 ms to 0.07 ms, a pause a cell or a reply would wait out.
                # Garbage made later, the user's included, is collected as before.
                gc.freeze()
                log.info("trikernel %s ready: %s", __version__, self._ports)
                await self._shutdown_requested.wait()
                await self._stop_user_code()
                post(self._io_token, self._main_stopped.set)
                if not self._shutdown_replying:
                    # SIGTERM or `exit`: no shutdown_reply, but queued replies and output still
                    # go out.
                    post(self._io_token, self._io_nursery.start_soon, self._finish_shutdown)
                with trio.move_on_after(2) as waited:
                    await self._io_finished.wait()
                if waited.cancelled_caught:
                    log.warning("shutdown: the io loop had not finished after 2 s; stopping it")
                nursery.cancel_scope.cancel()
        finally:
            # A debugger's tracer stays on after `continue` while a breakpoint is set anywhere
            # (bdb's list is global): it must not run while Python tears the modules down, where
            # it failed in every weakref callback ("'NoneType' object has no attribute ...").
            sys.settrace(None)
            self._fd_captures.restore()
            _end_child_processes()
            self._user.uninstall()
            shell = getattr(self, "shell", None)
            if shell is not None:
                shell.history_manager.end_session()

    async def _stop_user_code(self) -> None:
        """Cancel running cells (main loop), then let their output reach the queue."""
        grace = self.settings.shutdown.grace
        self._user.cancel_all("shutdown")
        with trio.move_on_after(grace) as waited:
            await self._user.wait_idle()
            # And until the stopped requests have queued their replies and idles, which
            # _finish_shutdown then sees out (a cell SIGTERM interrupts still gets its reply).
            while self._answering:
                self._requests_done = trio.Event()
                await self._requests_done.wait()
        if waited.cancelled_caught:
            log.warning("shutdown: cancelled requests still ran after %g s; going on", grace)
        await self.background.aclose(grace)
        background.tasks = None
        self.flush_output()

    async def _serve_io(self, started: Callable[[dict[Channel, int]], None]) -> NoReturn:
        self._io_token = trio.lowlevel.current_trio_token()
        self._main_stopped = trio.Event()
        conn, session = self.connection, self.session
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            async with trio.open_nursery() as nursery:
                self._io_nursery = nursery
                ports: dict[Channel, int] = {}
                ports["hb"] = await nursery.start(serve_heartbeat, ctx, conn)
                streams, iopub = self.settings.streams, self.settings.iopub
                ports["iopub"], self._iopub = await nursery.start(
                    lambda task_status: serve_iopub(
                        ctx,
                        conn,
                        session,
                        flush_interval=streams.flush_interval,
                        max_batch_bytes=streams.max_batch_bytes,
                        max_pending_bytes=streams.max_pending_bytes,
                        hwm=iopub.hwm,
                        stall_timeout=iopub.stall_timeout,
                        task_status=task_status,
                    )
                )
                # Made before the channels are served: a request's reply may be queued as soon
                # as its channel reads it.
                token = self._io_token
                self._outboxes = {ch: Mailbox(token) for ch in ("control", "stdin", "shell")}
                self._iopub.may_bypass = self._may_bypass
                self._outboxes["shell"].may_bypass = self._may_bypass_iopub
                iopub_room = functools.partial(
                    self._iopub.wait_for_room, text=False, messages=2 * MAX_PENDING_MESSAGES
                )
                stall = self.settings.replies.stall_timeout
                ports["control"] = await nursery.start(
                    functools.partial(serve_control, ready=iopub_room, stall_timeout=stall),
                    ctx,
                    conn,
                    session,
                    self._on_control,
                    self._outboxes["control"],
                )
                ports["stdin"] = await nursery.start(
                    functools.partial(
                        serve_stdin, on_unroutable=self._on_input_unroutable, stall_timeout=stall
                    ),
                    ctx,
                    conn,
                    session,
                    self._on_stdin,
                    self._outboxes["stdin"],
                )
                ports["shell"] = await nursery.start(
                    functools.partial(
                        serve_shell, before_send=self._iopub_sent, stall_timeout=stall
                    ),
                    ctx,
                    conn,
                    session,
                    self._on_shell,
                    self._outboxes["shell"],
                )
                started(ports)
                parent = parent_to_watch()
                if parent is not None:
                    nursery.start_soon(self._serve_parent_watch, parent)
                await trio.sleep_forever()
        except Exception as exc:
            # A channel that cannot go on ends the kernel: without its sockets nobody can reach
            # it. A cell blocking the main thread would keep the process alive, unreachable,
            # until it returned; an interrupt makes it unwind now.
            reason = "; ".join(f"{type(e).__name__}: {e}" for e in _leaves(exc))
            log.critical("the io loop failed, the kernel stops: %s (traceback follows)", reason)
            if hasattr(self, "_user"):
                self._user.interrupt()
            raise
        finally:
            ctx.term()

    def _may_bypass(self) -> bool:
        """Whether a message made on the main thread may be sent from there (see the module's
        hand-offs)."""
        return not self._more_requests and not self._user.active

    def _may_bypass_iopub(self) -> bool:
        """:meth:`_may_bypass`, for a shell reply: and only once iopub has sent what it holds
        (see :meth:`_iopub_sent`)."""
        return self._may_bypass() and self._iopub.idle()

    async def _iopub_sent(self, batch: Sequence[Message | SentMarker]) -> None:
        """IO loop, before shell replies go out: send what iopub holds first, if an
        execute_reply is among them.

        An execute_reply is the last word on its cell: a frontend that has it reads only the
        output already there (jupyter console prints the rest after its next prompt). An
        interrupted cell's traceback, published just before its reply, came after it 12 times
        in 20 (ipykernel: 0). Other replies do not wait for iopub (a kernel_info_reply on
        shell must not wait for a slow subscriber's backlog).
        """
        if not self._iopub.idle() and any(
            isinstance(item, Message) and item.msg_type == "execute_reply" for item in batch
        ):
            await self._iopub.wait_sent()

    def _write_connection_file(self) -> None:
        if self.connection_file is None or self.connection_file.exists():
            return
        self.connection = self.connection.with_ports(self._ports)
        path = self.connection_file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.connection.to_json())
        log.info("wrote connection file %s", path)

    # -- io loop: receiving ------------------------------------------------------------------

    def _on_control(self, msg: Message) -> None:
        self._io_nursery.start_soon(self._run_io_request, "control", msg)

    def _on_shell(self, msg: Message) -> None:
        if msg.msg_type in _SHELL_IN_IO:
            self._io_nursery.start_soon(self._run_io_request, "shell", msg)
        else:
            self._shell_inbox.put(_Incoming(msg, time.monotonic()))

    def _on_stdin(self, msg: Message) -> None:
        if msg.msg_type != "input_reply":
            log.warning("stdin: ignored a %s", msg.msg_type)
            return
        parent_id = msg.parent_header.get("msg_id")
        if parent_id is None:  # jupyter_client's input() names no parent: the oldest request
            parent_id = next(iter(list(self._pending_input)), None)  # a copy: threads add too
        resolve = self._pending_input.pop(parent_id, None) if isinstance(parent_id, str) else None
        if resolve is None:
            log.warning("stdin: an input_reply matches no pending input_request; ignored")
            return
        resolve(msg)

    def _on_input_unroutable(self, request: Message) -> None:
        resolve = self._pending_input.pop(request.msg_id, None)
        if resolve is not None:
            resolve(None)

    async def _run_io_request(self, channel: Channel, msg: Message) -> None:
        """Handle a control request (or interrupt/shutdown sent on shell) in the io loop."""
        self._status("busy", msg)
        content = await self._call(self.control_handlers, msg)
        if content is not None:
            self._reply(channel, msg, content)
        if msg.msg_type == "kernel_info_request":
            self._idle_soon(msg)
        else:
            self._status("idle", msg)
        if msg.msg_type == "shutdown_request":
            await self._finish_shutdown()

    def _idle_soon(self, request: Message) -> None:
        """IO loop: publish ``request``'s idle once no shell request runs.

        A kernel_info request is answered at once, also while a cell runs, but its idle would
        say the kernel is idle: JupyterLab shows the latest kernel_info or execute status (and
        asks for kernel_info whenever it reconnects), Jupyter Server tracks the state to cull
        idle kernels. ipykernel queues kernel_info on shell behind the cell, so its idle comes
        after the cell's; here only the idle waits, until the main loop's request runner sees
        ``_answering`` empty and posts :meth:`_publish_idles_later`. At most
        ``_MAX_IDLE_LATER`` wait; past that (a flood), at once.
        """
        if not self._answering or len(self._idle_later) >= _MAX_IDLE_LATER:
            self._status("idle", request)
            return
        self._idle_later.append(request)
        # The main loop may have emptied _answering since, seeing no idle to post for.
        if not self._answering:
            self._publish_idles_later()

    def _publish_idles_later(self) -> None:
        """IO loop: the idles :meth:`_idle_soon` kept back; no shell request runs now."""
        waiting, self._idle_later = self._idle_later, []
        for request in waiting:
            self._status("idle", request)

    async def _call(
        self, handlers: Mapping[str, Handler], msg: Message
    ) -> Mapping[str, Any] | None:
        """Run the handler for ``msg``; turn every failure into an error reply's content."""
        handler = handlers.get(msg.msg_type)
        if handler is None:
            log.warning("no handler for %s on this channel", msg.msg_type)
            if msg.msg_type.endswith("_request"):
                return _error_content(
                    "UnknownRequest", f"trikernel does not handle {msg.msg_type!r} here"
                )
            return None
        try:
            return await handler(msg)
        except RequestError as exc:
            log.warning("%s: bad request: %s", msg.msg_type, exc)
            return _error_content("RequestError", str(exc))
        except Exception as exc:
            log.exception("%s: handler failed", msg.msg_type)
            return _error_content(type(exc).__name__, str(exc), traceback.format_exc())

    # -- main loop: shell requests -----------------------------------------------------------

    async def _serve_shell_requests(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Dispatch shell requests: comm messages at once; the rest to their shell's queue,
        which runs them one at a time, in order (the parent shell, or a subshell)."""
        async with trio.open_nursery() as nursery:
            self._shell_nursery = nursery
            self._open_shell(None)
            # Subshells created before this (control is served from the io loop's start on).
            for subshell in list(self._subshell_ids):
                self._open_shell(subshell)
            task_status.started()
            while True:
                for incoming in await self._shell_inbox.get_batch():
                    shell = self._shells.get(incoming.subshell)
                    if incoming.msg.msg_type in _INLINE_SHELL:
                        await self._run_shell_request(incoming)
                    elif shell is not None:
                        shell.send.send_nowait(incoming)
                    else:
                        self._refuse_unknown_subshell(incoming)
        raise AssertionError("unreachable")

    def _refuse_unknown_subshell(self, incoming: _Incoming) -> None:
        msg = incoming.msg
        sid = msg.header.extra.get("subshell_id")
        problem = (
            f"no subshell {sid!r}"
            if isinstance(sid, str)
            else f"subshell_id must be a string, got {sid!r}"
        )
        log.warning("%s refused: %s", msg.msg_type, problem)
        self._status("busy", msg)
        if msg.msg_type.endswith("_request"):
            error = _error_content("UnknownSubshell", problem)
            self._reply("shell", msg, error)
        self._status("idle", msg)

    def _open_shell(self, subshell: str | None) -> None:
        """Main loop: start the task that runs the requests of ``subshell``."""
        if self._shell_nursery is None or subshell in self._shells:
            return  # not serving yet: _serve_shell_requests opens it when it starts
        send, receive = trio.open_memory_channel[_Incoming](math.inf)
        shell = self._shells[subshell] = _Shell(send)

        async def run() -> None:
            shell.task = trio.lowlevel.current_task()
            with shell.scope:
                await self._run_in_order(shell, receive)

        name = "shell" if subshell is None else f"subshell {subshell}"
        self._shell_nursery.start_soon(run, name=name)

    def _close_shell(self, subshell: str) -> None:
        """Main loop: stop a subshell. Every request sent to it is answered: the cell running
        in it is interrupted (a cell that blocks has ended by now: nothing else ran while it
        did), the cells waiting are aborted, then its task ends."""
        shell = self._shells.pop(subshell, None)
        if shell is not None:
            shell.abort_before = math.inf
            shell.send.close()
            if shell.task is not None:
                self._user.cancel_task(shell.task)

    @trio.lowlevel.enable_ki_protection
    async def _run_in_order(
        self, shell: _Shell, receive: trio.MemoryReceiveChannel[_Incoming]
    ) -> None:
        # A portal lets sync code in a cell (input()) await on this loop: while a cell waits
        # for input, background tasks and comm handlers keep running. Once per task.
        #
        # with_portal_run from this KI-protected frame, not ensure_portal: greenback's shim runs
        # on the main greenlet at every step of this task, and under ensure_portal it becomes
        # the task's root coroutine, where trio's KI protection is the task's own (off). A
        # SIGINT landing there while a cell ran raised KeyboardInterrupt inside the shim: it
        # ended this task, left the cell's frames suspended for ever in their greenlet, and took
        # the kernel down with no reply (a rare flake of the interrupt stress test). Here
        # the shim's frames sit above this one, so such a SIGINT is deferred as in any kernel
        # code (trikernel.execution, rule 2).
        import greenback  # loaded after the sockets are bound, as IPython is

        await greenback.with_portal_run(self._serve_in_order, shell, receive)

    @trio.lowlevel.enable_ki_protection
    async def _serve_in_order(
        self, shell: _Shell, receive: trio.MemoryReceiveChannel[_Incoming]
    ) -> None:
        async for incoming in receive:
            # With subshells the last one to start a request decides; either way is correct.
            waiting = receive.statistics().current_buffer_used
            self._more_requests = waiting > 0 or self._shell_inbox.waiting() > 0
            await self._run_shell_request(incoming, shell)

    @trio.lowlevel.enable_ki_protection
    async def _run_shell_request(self, incoming: _Incoming, shell: _Shell | None = None) -> None:
        self._answering = (*self._answering, incoming.msg)
        try:
            await self._answer_shell_request(incoming, shell)
        finally:
            self._answering = tuple(m for m in self._answering if m is not incoming.msg)
            if not self._answering:
                if self._idle_later:
                    post(self._io_token, self._publish_idles_later)
                if self._requests_done is not None:
                    self._requests_done.set()

    @trio.lowlevel.enable_ki_protection
    async def _answer_shell_request(self, incoming: _Incoming, shell: _Shell | None) -> None:
        """Answer one request; ``shell`` is the one whose queue it came from (None for what
        is answered at once: comm messages, comm_info).

        A comm message handled while a cell runs has its busy and idle too, at once: ipywidgets
        sends a widget's next change only after the idle of the one before (its message
        throttle), so without them a widget changed during a cell sent nothing more. Its idle
        does not make a busy kernel look idle in recent JupyterLab, whose status follows only the
        statuses of execute and kernel_info requests."""
        msg = incoming.msg
        self._last_parent = msg
        self._status("busy", msg)
        started = timestamp() if msg.msg_type == "execute_request" else ""
        token = current_request.set(msg)
        try:
            abort_before = shell.abort_before if shell is not None else -math.inf
            aborting = self._shutdown_started or incoming.received < abort_before
            if msg.msg_type == "execute_request" and aborting:
                content: Mapping[str, Any] | None = {"status": "aborted"}
            else:
                content = await self._call(self.shell_handlers, msg)
        finally:
            current_request.reset(token)
        if content is not None and msg.msg_type == "execute_request":
            # As ipykernel's: JupyterLab records a cell's timing ("shell.execute_reply" in the
            # cell's metadata, which execution-time extensions show) only with "started".
            metadata = {
                "started": started,
                "dependencies_met": True,
                "engine": self.session.session_id,
                "status": content.get("status"),
            }
            self._reply("shell", msg, content, metadata)
        elif content is not None and msg.msg_type.endswith("_request"):
            self._reply("shell", msg, content)
        # Text the request wrote at the file-descriptor level belongs before its idle.
        self._fd_captures.drain()
        self._status("idle", msg)

    # -- handlers: shell ---------------------------------------------------------------------

    async def execute_request(self, request: Message) -> Mapping[str, Any]:
        """Run a cell (spec: "Execute")."""
        c = request.content
        code = c.get("code")
        if not isinstance(code, str):
            raise RequestError("'code' must be a string" if "code" in c else "'code' is missing")
        silent = bool(c.get("silent", False))
        store_history = bool(c.get("store_history", not silent)) and not silent
        user_expressions = c.get("user_expressions") or {}
        if not isinstance(user_expressions, dict):
            raise RequestError("'user_expressions' must be an object")
        stop_on_error = bool(c.get("stop_on_error", True))
        shell = self.shell
        if not silent:
            self.publish("execute_input", {"code": code, "execution_count": shell.execution_count})
        timeout = self.settings.shell.timeout
        source = code
        magic = _TIMEOUT_MAGIC.match(code)
        if magic is not None:
            try:
                timeout = _parse_timeout(magic["seconds"])
            except ValueError as exc:
                error = {
                    "ename": "UsageError",
                    "evalue": str(exc),
                    "traceback": [f"UsageError: {exc}"],
                }
                self.publish("error", error)
                return {"status": "error", **error, "execution_count": shell.execution_count}
            source = code[magic.end() :]
        cell_id = request.metadata.get("cellId")
        cancelled: BaseException | None = None
        cell_token = current_cell.set(shell.execution_count)
        try:
            with self._user.running(timeout=timeout) as run:
                if self._user.closing:  # the kernel shuts down: see UserCode.close
                    return {"status": "aborted"}
                if timeout:
                    run.watchdog = trio.CancelScope()
                    post(self._io_token, self._start_deadline_watch, run, timeout)
                try:
                    result, cancelled = await shell.run_cell_trio(
                        source,
                        store_history=store_history,
                        silent=silent,
                        cell_id=cell_id if isinstance(cell_id, str) else None,
                        raw_cell=code,
                    )
                    if cancelled is not None:
                        # The cell was cancelled: let the cancellation reach the scope that did.
                        await trio.lowlevel.checkpoint()
                finally:
                    if run.watchdog is not None:
                        post(self._io_token, run.watchdog.cancel)
        finally:
            current_cell.reset(cell_token)
        count = result.execution_count  # this cell's, even if a subshell's cell ran meanwhile
        if count is None or not store_history:
            # Not stored (an empty cell has no count at all): the counter's value, which is
            # the number of the last stored cell (spec: "execution_count").
            count = shell.execution_count - 1
        reply: dict[str, Any]
        if run.scope.cancelled_caught:
            shown: BaseException = (
                TimeoutError(deadline_message(timeout))
                if run.reason == "timeout"
                else KeyboardInterrupt()
            )
            error = {
                "ename": type(shown).__name__,
                "evalue": str(shown),
                "traceback": shell.format_interruption(cancelled or shown, shown),
            }
            self.publish("error", error)
            reply = {"status": "error", **error}
        elif result.success:
            reply = {"status": "ok", "user_expressions": shell.evaluate(user_expressions)}
        else:
            failure = result.error_in_exec or result.error_before_exec
            error = shell.last_error or {
                "ename": type(failure).__name__,
                "evalue": exception_text(failure) if isinstance(failure, BaseException) else "",
                "traceback": [],
            }
            reply = {"status": "error", **error}
        reply["execution_count"] = count
        reply["payload"] = shell.take_payloads()
        if reply["status"] == "error" and (
            (stop_on_error and not silent) or reply.get("ename") == "KeyboardInterrupt"
        ):
            # Requests that arrived before now were sent without knowing of this failure. A
            # silent request is a frontend's own (a variable viewer's, say): its failure is no
            # reason to drop the user's queued cells.
            failed_in = self._shells.get(_subshell_of(request))
            if failed_in is not None:
                failed_in.abort_before = (
                    time.monotonic() + self.settings.shell.stop_on_error_timeout
                )
        if shell.exit_now:
            shell.exit_now = False
            if not shell.keepkernel_on_exit:
                post(self._io_token, self._io_nursery.start_soon, self._exit_after_grace)
        return reply

    async def _exit_after_grace(self) -> None:
        """IO loop: stop, as ``exit`` in a cell asked, once frontends had a moment to read the
        reply and act on its ``ask_exit`` payload. jupyter console reads the reply only while
        the kernel is alive, then sends its own shutdown_request: a kernel gone at once left it
        at a prompt with no kernel."""
        await trio.sleep(_EXIT_GRACE)
        post(self._main_token, self._begin_shutdown)

    async def complete_request(self, request: Message) -> Mapping[str, Any]:
        """Completions at the cursor (spec: "Completion")."""
        code, cursor = _code_and_cursor(request.content)
        return {"status": "ok", **self.shell.complete_at(code, cursor)}

    async def inspect_request(self, request: Message) -> Mapping[str, Any]:
        """Help for the object at the cursor (spec: "Introspection")."""
        code, cursor = _code_and_cursor(request.content)
        level = request.content.get("detail_level", 0)
        if level not in (0, 1):
            raise RequestError("'detail_level' must be 0 or 1")
        return {"status": "ok", **self.shell.inspect_at(code, cursor, level)}

    async def history_request(self, request: Message) -> Mapping[str, Any]:
        """Past inputs (and outputs) from IPython's history (spec: "History")."""
        try:
            history = self.shell.history_for(request.content)
        except ValueError as exc:  # an unknown access type, a bad 'n' or 'pattern'
            raise RequestError(str(exc)) from None
        return {"status": "ok", "history": history}

    async def is_complete_request(self, request: Message) -> Mapping[str, Any]:
        """Whether the code is a complete statement (spec: "Code completeness")."""
        code = request.content.get("code", "")
        if not isinstance(code, str):
            raise RequestError("'code' must be a string")
        return self.shell.completeness(code)

    async def kernel_info_request(self, request: Message) -> Mapping[str, Any]:
        """Who this kernel is (spec: "Kernel info"); also answered on control (5.5)."""
        debugger = _has_debugpy()
        return {
            "status": "ok",
            "protocol_version": PROTOCOL_VERSION,
            "implementation": self.implementation,
            "implementation_version": self.implementation_version,
            "language_info": {
                "name": "python",
                "version": platform.python_version(),
                "mimetype": "text/x-python",
                "codemirror_mode": {"name": "ipython", "version": sys.version_info[0]},
                "pygments_lexer": f"ipython{sys.version_info[0]}",
                "nbconvert_exporter": "python",
                "file_extension": ".py",
            },
            "banner": self.banner,
            "help_links": self.help_links,
            "debugger": debugger,
            "supported_features": ["kernel subshells", *(["debugger"] if debugger else [])],
        }

    async def debug_request(self, request: Message) -> Mapping[str, Any]:
        """A DAP request from the frontend's debugger (spec: "Debug request"); the reply's
        content is the DAP response (see :mod:`trikernel.debugger`)."""
        if not _has_debugpy():
            raise RequestError("the debugger needs debugpy, which is not installed")
        self._debug_parent = request
        if self._debugger is None:
            self._debugger = Debugger(
                nursery=self._io_nursery,
                on_main=self._call_on_main,
                publish_event=lambda event: self.publish(
                    "debug_event", event, parent=self._debug_parent
                ),
                namespace=lambda: self.shell.user_ns,
                # By name: debugpy is started on the main thread, which has no other handle.
                kernel_threads=frozenset(
                    {_IO_THREAD, HEARTBEAT_THREAD, "IPythonHistorySavingThread"}
                ),
                interrupt_pending=lambda: self._user.interrupt_pending,
                rich_format=lambda value: self.shell.mime_bundle(value),
                keep_blank_lines=lambda keep: self.shell.keep_leading_blank_lines(keep),
                protect=self._protect_debugger,
            )
        return await self._debugger.handle(request.content)

    async def _call_on_main(self, fn: Callable[[], T]) -> T:
        """``fn()``'s result, called in the main loop (io loop; waits while a cell blocks)."""
        done = trio.Event()
        result: list[outcome.Outcome[T]] = []

        def call() -> None:
            result.append(outcome.capture(fn))
            post(self._io_token, done.set)

        post(self._main_token, call)
        await done.wait()
        return result[0].unwrap()

    async def comm_info_request(self, request: Message) -> Mapping[str, Any]:
        """Open comms, optionally of one target (spec: "Comm info")."""
        target = request.content.get("target_name")
        comms = {
            comm_id: {"target_name": c.target_name}
            for comm_id, c in self.comm_manager.comms.items()
            if target is None or c.target_name == target
        }
        return {"status": "ok", "comms": comms}

    async def comm_open(self, request: Message) -> None:
        """A frontend opens a comm: the target registered for its name gets it."""
        self._comm_call(self.comm_manager.comm_open, request)

    async def comm_msg(self, request: Message) -> None:
        """A frontend sends a comm message: the comm's ``on_msg`` callback gets it."""
        self._comm_call(self.comm_manager.comm_msg, request)

    async def comm_close(self, request: Message) -> None:
        """A frontend closes a comm: its ``on_close`` callback gets it."""
        self._comm_call(self.comm_manager.comm_close, request)

    def _comm_call(
        self, handle: Callable[[Any, Any, dict[str, Any]], None], request: Message
    ) -> None:
        from .comms import message_dict

        if not isinstance(request.content.get("comm_id"), str):
            raise RequestError(f"{request.msg_type} needs a string 'comm_id'")
        with self._user.running():
            try:
                call_user_code(handle, None, None, message_dict(request))
            except KeyboardInterrupt:
                self.shell.show_exception()

    def _start_deadline_watch(self, run: Run, timeout: float) -> None:
        """IO loop: at the deadline, interrupt the cell with reason "timeout".

        The io loop keeps the time because it runs even while the cell blocks the main thread;
        the interrupt then cancels an awaiting cell or raises into a blocking one.
        """
        scope = run.watchdog
        assert scope is not None

        async def watch() -> None:
            with scope:
                await trio.sleep(timeout)
                if run.active and run.reason is None:
                    run.reason = "timeout"
                    await self._user.wait_interrupted()

        self._io_nursery.start_soon(watch)

    # -- handlers: control (io loop) ---------------------------------------------------------

    def _protect_debugger(self, folders: tuple[str, ...]) -> None:
        """No KeyboardInterrupt in the debugger's code (see UserCode.not_in)."""
        self._user.cells = CELL_PREFIX
        self._user.not_in = folders

    async def interrupt_request(self, request: Message) -> Mapping[str, Any]:
        """Interrupt the running cell (spec: "Kernel interrupt"); see trikernel.execution."""
        self._io_nursery.start_soon(self._user.wait_interrupted)
        if self._debugger is not None:
            self._io_nursery.start_soon(self._debugger.release)
        return {"status": "ok"}

    async def create_subshell_request(self, request: Message) -> Mapping[str, Any]:
        """Create a subshell (protocol 5.5, JEP 91): a queue of its own, run concurrently.

        A subshell is a task on the main loop: it runs while the parent shell's cell awaits
        (and vice versa). A cell that blocks the main thread blocks every shell, since user
        code runs on the one main thread.
        """
        subshell = uuid.uuid4().hex
        self._subshell_ids.add(subshell)
        # Posted before the reply is sent, so it runs before any request for the subshell.
        post(self._main_token, self._open_shell, subshell)
        return {"status": "ok", "subshell_id": subshell}

    async def delete_subshell_request(self, request: Message) -> Mapping[str, Any]:
        """Delete a subshell; a request running in it is cancelled."""
        subshell = request.content.get("subshell_id")
        if not isinstance(subshell, str) or subshell not in self._subshell_ids:
            raise RequestError(f"no subshell {subshell!r}")
        self._subshell_ids.discard(subshell)
        post(self._main_token, self._close_shell, subshell)
        return {"status": "ok"}

    async def list_subshell_request(self, request: Message) -> Mapping[str, Any]:
        """The ids of the subshells (not the parent shell)."""
        return {"status": "ok", "subshell_id": sorted(self._subshell_ids)}

    async def usage_request(self, request: Message) -> Mapping[str, Any]:
        """The kernel's CPU and memory use, for JupyterLab's "Kernel usage" panel (see
        :mod:`trikernel.usage`); measured in a worker thread, as it reads ``/proc``."""
        if self._usage is None:
            self._usage = (UsageMeter(), trio.Lock())
        meter, lock = self._usage
        async with lock:  # one measurement at a time: each is relative to the one before
            content = await trio.to_thread.run_sync(meter.measure)
        return {"status": "ok", **content}

    async def connect_request(self, request: Message) -> Mapping[str, Any]:
        """The kernel's ports (spec: "Connect", deprecated but answered)."""
        return {"status": "ok", **{f"{ch}_port": p for ch, p in self._ports.items()}}

    async def shutdown_request(self, request: Message) -> Mapping[str, Any]:
        """Stop user code, flush output, reply, exit (spec: "Kernel shutdown")."""
        restart = bool(request.content.get("restart", False))
        self._shutdown_replying = True
        # A cell that blocks the main thread would never run _begin_shutdown: interrupt it.
        self._user.close()
        self._io_nursery.start_soon(self._user.wait_interrupted)
        post(self._main_token, self._begin_shutdown)
        with trio.move_on_after(self.settings.shutdown.grace + 1) as waited:
            await self._main_stopped.wait()
        if waited.cancelled_caught:
            log.warning("shutdown: user code had not stopped when the reply was due; replying")
        content = {"status": "ok", "restart": restart}
        # Protocol 5.4: the reply is also broadcast, so every client learns of the shutdown.
        self.publish("shutdown_reply", content, parent=request)
        return content

    # -- shutdown ----------------------------------------------------------------------------

    def _begin_shutdown(self) -> None:
        """Main loop: start the orderly stop (idempotent)."""
        if self._shutdown_started:
            return
        self._shutdown_started = True
        self._shutdown_requested.set()

    async def _finish_shutdown(self) -> None:
        """IO loop: once every queued reply (the shutdown_reply too) and all output are sent,
        let the main loop end."""
        with trio.move_on_after(1) as waited:
            for outbox in self._outboxes.values():
                marker = SentMarker()
                outbox.put(marker)
                await marker.event.wait()
            await self._iopub.wait_sent()
        if waited.cancelled_caught:
            log.warning("shutdown: replies or output were still unsent after 1 s; closing")
        post(self._main_token, self._io_finished.set)

    def _watch_pending(self) -> None:
        """Any thread: have the io loop re-send SIGINT until the pending interrupt is taken."""
        post(self._io_token, self._watch_interrupt)

    def _watch_interrupt(self) -> None:
        """IO loop: supervise an interrupt that did not come from the io loop (a SIGINT or
        SIGTERM from outside)."""
        self._io_nursery.start_soon(self._user.resend_while_pending)
        if self._debugger is not None:
            self._io_nursery.start_soon(self._debugger.release)

    async def _serve_parent_watch(self, pid: int) -> None:
        """IO loop: shut down once the process that launched the kernel has exited.

        Killed (a closed terminal, a crashed server, ``kill -9``), a frontend sends no
        shutdown_request and no SIGTERM; without this its kernel would live on, unreachable.
        """
        await wait_process_exit(pid)
        log.warning("the parent process %d exited: shutting down", pid)
        self._stop_unasked()

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM: the orderly exit of a shutdown_request, without a reply to send."""
        log.info("SIGTERM: shutting down")
        self._stop_unasked()

    def _stop_unasked(self) -> None:
        """Any thread: shut down as for a shutdown_request, with no reply to send."""
        post(self._main_token, self._begin_shutdown)
        self._user.close()
        self._user.interrupt()
        if self._user.interrupt_pending:
            # The SIGINT is lost if this signal landed in the kernel's own code, where trio
            # holds KeyboardInterrupt back, and the cell then sleeps on (a missing reply, seen
            # under load in CI). As for a SIGINT from outside, the io loop sends it again until
            # the cell took it. (A cell runs only once the io loop does: its token is set.)
            self._watch_pending()

    # -- stdin (main thread, called by input()) ----------------------------------------------

    def request_input(self, prompt: str, *, password: bool) -> str | None:
        """Ask the frontend for a line of input (``input()``, ``getpass``); None if the request
        does not allow stdin.

        In a cell this awaits the reply on the main loop through the cell's greenback portal,
        so background tasks run meanwhile and an interrupt cancels the wait. Elsewhere (a
        thread) it blocks the calling thread.
        """
        import greenback

        if greenback.has_portal():
            return _await_in_portal(self._ainput_for_sync_code(prompt, password))
        request = self._input_request(prompt, password)
        if request is None:
            return None
        waiter: Future[Message | None] = Future()
        self._pending_input[request.msg_id] = waiter.set_result
        try:
            post(self._io_token, self._io_nursery.start_soon, self._send_input_request, request)
            return _input_value(waiter.result())
        finally:
            self._pending_input.pop(request.msg_id, None)

    async def ainput(self, prompt: str = "", *, password: bool = False) -> str | None:
        """Await a line of input from the frontend on the main loop; None if not allowed.

        Cancellation (an interrupt) abandons the request.
        """
        request = self._input_request(prompt, password)
        if request is None:
            return None
        done = trio.Event()
        replies: list[Message | None] = []

        def resolve(reply: Message | None) -> None:  # io loop; None: could not be sent
            replies.append(reply)
            post(self._main_token, done.set)

        self._pending_input[request.msg_id] = resolve
        try:
            post(self._io_token, self._io_nursery.start_soon, self._send_input_request, request)
            await done.wait()
        finally:
            self._pending_input.pop(request.msg_id, None)
        return _input_value(replies[0])

    async def _ainput_for_sync_code(self, prompt: str, password: bool) -> str | None:
        """:meth:`ainput` for ``input()``: an interrupt raises ``KeyboardInterrupt`` from it
        rather than cancelling the cell (see :meth:`UserCode.input_wait`)."""
        value: str | None = None
        with self._user.input_wait() as wait:
            value = await self.ainput(prompt, password=password)
        if wait.cancelled_caught:  # with the request (shutdown, deadline): its Cancelled
            await trio.lowlevel.checkpoint()
        return value

    async def _send_input_request(self, request: Message) -> None:
        """Send ``input_request`` once the output queued before it is sent (io loop).

        The prompt goes out on stdin, the text printed before it on iopub, each by its own
        task: put straight into stdin's outbox, the prompt was often handed to ZeroMQ first,
        and 34 of 200 prompts reached a client before their text (`jupyter console` then
        prints the text after the prompt). Waiting for iopub's queue: 0 of 400.
        """
        await self._iopub.wait_sent()
        if request.msg_id in self._pending_input:  # not given up meanwhile
            self._outboxes["stdin"].put(request)

    def stdin_allowed(self) -> bool:
        """Whether input may be asked for here: the request this code runs for (a thread's:
        the one that started it) says ``allow_stdin``."""
        request = self.parent()
        return request is not None and bool(request.content.get("allow_stdin", False))

    def _input_request(self, prompt: str, password: bool) -> Message | None:
        # Without allow_stdin, no input_request: a client that does not say it answers them
        # gets StdinNotImplementedError at once rather than a cell that waits for ever.
        if not self.stdin_allowed():
            return None
        request = self.parent()  # a thread's prompt goes where its output goes
        assert request is not None  # stdin_allowed
        self.flush_output()
        return self.session.msg(
            "input_request", {"prompt": prompt, "password": password}, parent=request
        )


def _parse_timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ValueError(f"%%timeout takes a positive number of seconds, got {text!r}")
    return seconds


def _attribute_threads() -> None:
    """Make a thread started in a cell (or by a thread started there) ``started_by`` it, so
    its output goes to that cell while it runs (see :meth:`Kernel.parent`).

    ``threading.Thread`` starts with an empty context (before Python 3.14), so the thread's
    writes would carry no request. Only the kernel's own context variables are carried over,
    not the whole context: a thread must not believe it runs inside trio (sniffio reads a
    context variable too).
    """
    if getattr(threading.Thread.start, "_trikernel", False):
        return
    original_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        request, cell = request_or_origin(), current_cell.get()
        if request is not None:
            context = contextvars.Context()
            context.run(started_by.set, request)
            context.run(current_cell.set, cell)
            # Both C callables: a traceback from the thread shows no frame of the kernel's.
            self.run = functools.partial(context.run, self.run)  # type: ignore[method-assign]
        original_start(self)

    start._trikernel = True  # type: ignore[attr-defined]
    threading.Thread.start = start  # type: ignore[method-assign]


def _python_signals_in_forked_child() -> None:
    """A process forked from the kernel (a ``multiprocessing`` worker) is not the kernel: it
    gets a fresh interpreter's signal handling back. Otherwise the SIGTERM that ends a pool's
    workers ran the kernel's shutdown in each (a KeyboardInterrupt traceback per worker), and
    every signal a worker took woke the kernel's loop through the descriptor they share."""
    with contextlib.suppress(ValueError, OSError):  # ValueError: not the main thread
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGVTALRM, signal.SIG_DFL)


@contextlib.contextmanager
def _startup_messages_in_log() -> Iterator[None]:
    """While the shell starts, Python's warnings go to the kernel's log, and IPython's log
    from then on: both would otherwise reach no one.

    Before any request, what is printed has no cell to go to: an unwritable HOME that IPython
    warned about, a config option nothing reads. And IPython's parts log through traitlets'
    logger, which outside an IPython application has no handler ("Failed to open SQLite
    history ... moved to history-corrupt.sqlite" was lost).
    """
    for handler in logging.getLogger("trikernel").handlers:
        logging.getLogger("traitlets").addHandler(handler)

    def to_log(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = warnings.formatwarning(message, category, filename, lineno, line)
        log.warning("%s", text.rstrip())

    shown_before = warnings.showwarning
    warnings.showwarning = to_log
    try:
        yield
    finally:
        # After startup a warning goes to the cell that caused it, as in ipykernel (unless
        # the profile's startup code put in a handler of its own: that one stays).
        if warnings.showwarning is to_log:
            warnings.showwarning = shown_before


def _end_child_processes() -> None:
    """Send SIGTERM to processes user code started, if the kernel leads its process group.

    jupyter_client starts a kernel as the leader of a new session, so its process group is
    the kernel and what it started (bar processes that made sessions of their own): a
    subprocess left running by a cell ends with the kernel instead of outliving it.
    """
    if os.getpgrp() != os.getpid():
        return
    # multiprocessing's exit handler first, which stops open pools' workers itself: signalled
    # while one held its pool's lock, the pool's handler (at exit) waited for it for ever, and
    # the kernel never exited. (Not at exit instead: Python joins a cell's threads before
    # that, and one waiting on a subprocess would wait for ever too.)
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        try:
            util._exit_function()
        except Exception:
            log.exception("shutdown: multiprocessing's exit handler failed")
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.killpg(os.getpgrp(), signal.SIGTERM)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``'s (nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


@trio.lowlevel.enable_ki_protection
def _await_in_portal(aw: Awaitable[str | None]) -> str | None:
    """``greenback.await_(aw)``, KI-protected: an interrupt cancels the wait, never raises in it.

    The cell that called ``input()`` is user code, so without this a SIGINT could raise
    ``KeyboardInterrupt`` inside greenback's ``await_`` between two of its steps: the trap
    ``ainput`` yielded would never reach trio, or trio's answer to it would be dropped, and
    ``ainput`` would be left suspended with its input request still pending (its reply would
    then wake the task wherever it waits next). Protected, the interrupt cancels the request's
    scope instead, and the cancellation unwinds ``ainput`` at its await like any other.
    """
    import greenback

    value: str | None = greenback.await_(aw)
    return value


def _input_value(reply: Message | None) -> str:
    if reply is None:  # the input_request could not be sent
        raise EOFError("no frontend is connected to the kernel's stdin channel")
    value = reply.content.get("value", "")
    if value == "\x04":  # Ctrl-D, as jupyter console and jupyter_client send it: end of input
        raise EOFError
    return value if isinstance(value, str) else str(value)


async def ainput(prompt: str = "", *, password: bool = False) -> str:
    """``await trikernel.ainput(prompt)``: ``input()`` for async code in a cell.

    Raises:
        RuntimeError: no trikernel kernel runs in this process.
        StdinNotImplementedError: the request does not allow stdin.
    """
    tasks = background.tasks
    if tasks is None:
        raise RuntimeError("no trikernel kernel runs in this process")
    value = await tasks.kernel.ainput(prompt, password=password)
    if value is None:
        from .shell import stdin_not_allowed

        raise stdin_not_allowed()
    return value


@functools.cache
def _has_debugpy() -> bool:
    """Whether the debugger can start (looked up once; debugpy is imported only when used)."""
    import importlib.util

    return importlib.util.find_spec("debugpy") is not None


def _error_content(ename: str, evalue: str, tb: str | None = None) -> dict[str, Any]:
    return {
        "status": "error",
        "ename": ename,
        "evalue": evalue,
        "traceback": tb.splitlines() if tb else [f"{ename}: {evalue}"],
    }


def _code_and_cursor(content: Mapping[str, Any]) -> tuple[str, int]:
    code = content.get("code", "")
    if not isinstance(code, str):
        raise RequestError("'code' must be a string")
    cursor = content.get("cursor_pos", len(code))
    if cursor is None:
        cursor = len(code)
    if isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0:
        raise RequestError("'cursor_pos' must be a non-negative integer")
    return code, min(cursor, len(code))
