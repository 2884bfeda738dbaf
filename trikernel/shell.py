"""The IPython shell that runs cells on the kernel's trio loop; it and :mod:`trikernel.magics` are
the only modules importing IPython.

IPython does the Python: transforming cells (magics, ``!cmd``, ``?``), compiling, top-level
``await``, the displayhook, history, completion and inspection. This module adapts it to the
kernel in seven places:

- :meth:`ZMQInteractiveShell.run_cell_trio` replaces ``run_cell``, which cannot be called inside a
  running loop: it transforms the cell, awaits ``run_cell_async`` on the kernel's trio loop,
  and fires the events ``run_cell`` would.
- :meth:`ZMQInteractiveShell.run_code` replaces IPython's, whose bare ``except:`` would swallow
  ``trio.Cancelled``. A cancellation is recorded (the cell stops; the kernel's request handler
  re-raises it at its next checkpoint) and every other exception is shown as IPython shows it.
- Output goes to the kernel: the displayhook sends ``execute_result``, the display publisher
  ``display_data`` / ``update_display_data`` / ``clear_output``, tracebacks ``error``.
- ``set_next_input``, the pager and ``exit`` become reply payloads.
- History is IPython's, stored by IPython's save thread, but written outside the lock a cell
  takes to store its input (:class:`HistoryManager`): no cell waits for SQLite's fsync.
- A cell's code is named after a hash of its source (:class:`_CellCompiler`), the file name a
  debugger frontend gives the cell, so its breakpoints hit (see :mod:`trikernel.debugger`).
- The user's IPython profile is read as ipykernel reads it (:class:`IPythonProfile`): its config
  files configure the shell, its startup files and ``exec_lines`` run before the first cell.
"""

from __future__ import annotations

import bdb
import contextlib
import copy
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import logging
import os
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import CodeType, FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import trio
from IPython.core import history as ipython_history
from IPython.core import page, payloadpage
from IPython.core.application import BaseIPythonApplication, base_aliases, base_flags
from IPython.core.autocall import ZMQExitAutocall
from IPython.core.compilerop import CachingCompiler
from IPython.core.completer import provisionalcompleter, rectify_completions
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import StdinNotImplementedError
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from IPython.core.shellapp import InteractiveShellApp, shell_aliases, shell_flags
from IPython.utils.tokenutil import token_at_cursor
from traitlets import Any as AnyTrait
from traitlets import Instance, TraitError, Type, default
from traitlets.config import Config

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from .debugger import cell_path
from .execution import DeadlineExceeded, exception_text
from .magics import KernelMagics

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["ZMQInteractiveShell"]

log = logging.getLogger("trikernel")


class _DisplayHook(DisplayHook):
    """Sends a cell's last expression as ``execute_result``."""

    def start_displayhook(self) -> None:
        super().start_displayhook()
        self._content: dict[str, Any] = {}

    def write_output_prompt(self) -> None:
        self._content["execution_count"] = self.prompt_count

    def write_format_data(
        self, format_dict: Mapping[str, Any], md_dict: Mapping[str, Any] | None = None
    ) -> None:
        self._content["data"] = format_dict
        self._content["metadata"] = md_dict or {}

    def finish_displayhook(self) -> None:
        kernel = _kernel_of(self.shell)
        kernel.flush_output()  # what the cell wrote goes before its result
        if "data" in self._content:
            kernel.publish("execute_result", self._content)
        super().finish_displayhook()


class _DisplayPublisher(DisplayPublisher):
    """Sends ``display()`` output as ``display_data`` / ``update_display_data``."""

    def publish(
        self,
        data: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
        *,
        transient: Mapping[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        kernel = _kernel_of(self.shell)
        kernel.flush_output()  # text written before the display goes before it
        content: dict[str, Any] = {"data": data, "metadata": metadata or {}}
        content["transient"] = transient or {}
        msg_type = "update_display_data" if update else "display_data"
        kernel.publish(msg_type, content)

    def clear_output(self, wait: bool = False) -> None:
        kernel = _kernel_of(self.shell)
        kernel.flush_output()
        kernel.publish("clear_output", {"wait": bool(wait)})


# IPython's save thread, once woken, writes when no cell was stored for _HISTORY_LINGER
# seconds, or after _HISTORY_MAX_WAIT seconds of cells coming without a pause (see
# HistoryManager).
# 50 ms rather than 10: a transaction (about 1.5 ms of CPU with its fsyncs) 10 ms after a cell
# landed while that cell's output was still going out; a 10 MB write took 5-6% longer.
# A kernel killed outright (SIGKILL, os._exit) loses the entries not written yet: at most the
# last 0.3 s of cells (it was 1 s). Twenty quick cells run just before a SIGKILL are still
# all lost; ipykernel, committing after every cell, keeps them. A commit every 0.25 s during
# a burst costs under 1% of a busy kernel's CPU.
_HISTORY_LINGER = 0.05
_HISTORY_MAX_WAIT = 0.25


class HistoryManager(ipython_history.HistoryManager):
    """IPython's history, written to SQLite without making cells wait for the disk.

    Named as IPython's class, so that ``%config HistoryManager`` finds it.

    What is stored, and where, is IPython's; two things differ in how it gets there:

    - IPython's ``writeout_cache`` holds the lock that ``store_inputs`` takes as each cell
      starts for the whole SQLite transaction, whose commit waits for fsync (about 1 ms). The
      next cell waited for the previous cell's commit: 14% of the kernel's time in a sequential
      ``pass`` benchmark. Here entries are taken under those locks and written outside them.
      Writers take turns on a lock of their own, so a lookup that writes out first
      (``get_tail``, ``search``) still finds every entry in the database.
    - IPython wakes its save thread after every cell, for a transaction and its fsyncs each:
      a fifth to a quarter of the kernel process's CPU time per sequential ``pass`` cell. The
      save thread first waits until no cell was stored for ``_HISTORY_LINGER`` seconds (at
      most ``_HISTORY_MAX_WAIT``), so cells run in quick succession share one transaction. An
      entry reaches the database that much later.
    """

    def __init__(self, **kwargs: Any) -> None:
        # Before IPython's __init__, which starts the save thread.
        self._writeout_lock = threading.Lock()
        super().__init__(**kwargs)

    def writeout_cache(self, conn: sqlite3.Connection | None = None) -> None:
        """Write the entries stored so far to the database (as IPython's, outside its locks)."""
        if not self.enabled:
            return
        if conn is None:
            conn = self.db
        if threading.current_thread() is self.save_thread:
            # IPython wakes its save thread after every cell; waiting for a pause first lets
            # the cells that follow share the transaction, and its fsyncs.
            self._wait_for_pause()
        with self._writeout_lock:
            # Inputs, then outputs, as IPython does; on a clash of session and line numbers
            # (IPython's handling too) inputs move to a new session, outputs are not stored.
            with self.db_input_cache_lock:
                inputs, self.db_input_cache = self.db_input_cache, []
            try:
                self._insert(conn, "INSERT INTO history VALUES (?, ?, ?, ?)", inputs)
            except sqlite3.IntegrityError:
                # To the kernel's log, not print(): this thread's prints would land in a cell.
                self.new_session(conn)
                log.warning(
                    "history: these line numbers are already stored; inputs go to a new "
                    "session, %s",
                    self.session_number,
                )
                try:
                    self._insert(conn, "INSERT INTO history VALUES (?, ?, ?, ?)", inputs)
                except sqlite3.IntegrityError:
                    pass
            with self.db_output_cache_lock:
                outputs, self.db_output_cache = self.db_output_cache, []
            try:
                self._insert(conn, "INSERT INTO output_history VALUES (?, ?, ?)", outputs)
            except sqlite3.IntegrityError:
                log.warning("history: these outputs' line numbers are already stored; not kept")

    def _wait_for_pause(self) -> None:
        deadline = time.monotonic() + _HISTORY_MAX_WAIT
        stored = -1
        while stored != len(self.db_input_cache) and time.monotonic() < deadline:
            stored = len(self.db_input_cache)
            time.sleep(_HISTORY_LINGER)

    def _insert(self, conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with conn:
            conn.executemany(sql, [(self.session_number, *row) for row in rows])


class _CellCompiler(CachingCompiler):
    """Names each cell's code after a hash of its source, as debugger frontends name it (see
    :mod:`trikernel.debugger`); tracebacks still say "Cell In[n]"."""

    def get_code_name(self, raw_code: str, transformed_code: str, number: int) -> str:
        return cell_path(raw_code)


class ZMQInteractiveShell(InteractiveShell):
    """IPython's InteractiveShell, running on the kernel's trio loop.

    Named as ipykernel's shell is, on purpose: libraries tell a Jupyter frontend (which shows
    HTML, widgets, images) from a terminal by that name. rich and many progress bars test
    ``type(get_ipython()).__name__ == "ZMQInteractiveShell"``, pandas looks for "zmq" in the
    type; under any other name they would print for a terminal into the notebook.
    """

    kernel = AnyTrait()  # the Kernel; a traitlet so IPython's constructor accepts it
    compiler_class = Type(_CellCompiler)
    displayhook_class = Type(_DisplayHook)
    # `!cmd` output goes through sys.stdout, so it reaches the cell while the command runs.
    system = InteractiveShell.system_piped
    display_pub_class = Type(_DisplayPublisher)
    exiter = Instance(ZMQExitAutocall)

    @default("exiter")
    def _exiter_default(self) -> ZMQExitAutocall:
        return ZMQExitAutocall(self)

    @property
    def debugger_cls(self) -> type:  # type: ignore[override,unused-ignore]  # IPython 8: a class
        """``%debug``'s and ``%pdb``'s debugger: the one ``pdb.set_trace()`` opens."""
        return kernel_pdb()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cancelled: BaseException | None = None
        self.last_error: dict[str, Any] | None = None
        self._last_error_of: BaseException | None = None
        """The exception ``last_error`` shows: set when it is published, cleared when IPython 9
        stores it in history or when the next cell starts (IPython 8 never stores it)."""
        self.keepkernel_on_exit: bool | None = None
        self._plain_tb: Any = None
        self._profile: IPythonProfile | None = None
        """The profile whose startup code :meth:`run_startup` runs (once)."""
        # `print?` and `%page` page through a payload, not a terminal pager.
        self.set_hook("show_in_pager", page.as_hook(payloadpage.page), 99)
        # Top-level await always means the kernel's trio loop (run_cell_trio awaits it there).
        self.autoawait = True
        KernelMagics(self, kernel_of=lambda: _kernel_of(self)).register()

    def init_history(self) -> None:
        # IPython's, with the history manager above.
        self.history_manager = HistoryManager(shell=self, parent=self)
        configurables: list[Any] = self.configurables
        configurables.append(self.history_manager)

    def init_environment(self) -> None:
        # What `!cmd` and subprocesses see, as in ipykernel. Output goes to a notebook, never
        # to a terminal: a pager would wait for keys that never come (`!git log` and `!man`
        # hung in less), and tools that colour only on a terminal colour here too, since
        # frontends show ANSI colours.
        os.environ.update(
            TERM="xterm-color",
            CLICOLOR="1",
            CLICOLOR_FORCE="1",
            FORCE_COLOR="1",
            PAGER="cat",
            GIT_PAGER="cat",
        )

    def init_io(self) -> None:
        # The kernel installs its own sys.stdout / sys.stderr; IPython must not replace them.
        pass

    def enable_gui(self, gui: str | None = None) -> None:
        # `%matplotlib inline` asks for "inline": figures become display_data, no loop needed.
        if gui in (None, "inline"):
            return
        raise NotImplementedError(
            f"trikernel runs cells on a trio loop; the {gui!r} GUI event loop cannot run beside "
            "it (use %matplotlib inline, or a web-based widget backend)"
        )

    # -- running cells -----------------------------------------------------------------------

    async def run_cell_trio(
        self,
        source: str,
        *,
        store_history: bool,
        silent: bool,
        cell_id: str | None = None,
        raw_cell: str | None = None,
    ) -> tuple[ExecutionResult, BaseException | None]:
        """Run a cell on the current trio loop; the trio twin of ``run_cell``.

        Args:
            source: the code to run.
            store_history: record it in IPython's history.
            silent: no displayhook output, no history, no events a frontend would see.
            cell_id: the notebook cell's id, if the frontend sent one.
            raw_cell: the cell as typed, for history, if it differs from ``source`` (a
                ``%%timeout`` line the kernel handled).

        Returns:
            IPython's result, and the cancellation that stopped the cell, if one did. The
            caller must let that cancellation continue (await a checkpoint) so that the scope
            which cancelled the cell sees it.
        """
        self._cancelled = None
        self.last_error = None
        self._last_error_of = None
        raw_cell = source if raw_cell is None else raw_cell
        preprocessing_exc_tuple = None
        try:
            transformed = self.transform_cell(source)
        except Exception:
            transformed = source
            preprocessing_exc_tuple = sys.exc_info()
        kwargs: dict[str, Any] = {}
        if cell_id is not None:
            kwargs["cell_id"] = cell_id
        result: ExecutionResult | None = None
        try:
            result = await self.run_cell_async(
                raw_cell,
                store_history=store_history,
                silent=silent,
                transformed_cell=transformed,
                preprocessing_exc_tuple=preprocessing_exc_tuple,
                **kwargs,
            )
        finally:
            self.events.trigger("post_execute")
            if not silent:
                self.events.trigger("post_run_cell", result)
        return result, self._cancelled

    @trio.lowlevel.disable_ki_protection
    async def run_code(
        self, code_obj: CodeType, result: ExecutionResult | None = None, *, async_: bool = False
    ) -> bool:
        """Execute one compiled node of a cell; return True if it raised.

        User code is the only code a SIGINT may raise ``KeyboardInterrupt`` in (see
        :mod:`trikernel.execution`), hence the explicit lack of KI protection here.
        """
        __tracebackhide__ = "__ipython_bottom__"
        old_excepthook, sys.excepthook = sys.excepthook, self.excepthook
        self.sys_excepthook = old_excepthook
        try:
            try:
                if async_:
                    await eval(code_obj, self.user_global_ns, self.user_ns)
                else:
                    exec(code_obj, self.user_global_ns, self.user_ns)
            finally:
                sys.excepthook = old_excepthook
        except BaseException as exc:
            cancelled, rest = _split_cancelled(exc)
            if cancelled is not None:
                # Not swallowed: run_cell_trio hands it to the request handler, which lets it
                # reach the scope that was cancelled. IPython's own code must not see it: its
                # run_ast_nodes ends in a bare except too.
                self._cancelled = cancelled
            if rest is not None:
                _add_trio_hint(rest)
                if result is not None:
                    result.error_in_exec = rest
                if isinstance(rest, SystemExit):
                    self.showtraceback(exception_only=True)
                    print("To exit: use 'exit', 'quit', or Ctrl-D.", file=sys.stderr)
                elif isinstance(rest, (KeyboardInterrupt, DeadlineExceeded)):
                    self.kernel.flush_output()
                    self.show_interruption(rest)
                else:
                    # Start the traceback below this frame: IPython 9 would otherwise report it
                    # as "[... skipping hidden 1 frame]"; IPython 8 honours tb_offset=0 alike.
                    tb = rest.__traceback__
                    self.showtraceback(
                        (type(rest), rest, tb.tb_next if tb is not None else None),
                        tb_offset=0,
                        running_compiled_code=True,
                    )
            elif result is not None:
                result.error_in_exec = KeyboardInterrupt()
            return True
        return False

    def format_exception(self, exc: BaseException) -> dict[str, Any]:
        """``error`` content for an exception raised outside a cell (a background task)."""
        try:
            stb: list[str] = self.InteractiveTB.structured_traceback(
                type(exc), exc, exc.__traceback__
            )
        except Exception:
            stb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return {"ename": type(exc).__name__, "evalue": exception_text(exc), "traceback": stb}

    def format_interruption(self, exc: BaseException, shown: BaseException) -> list[str]:
        """The traceback of a cell stopped by ``exc`` (a KeyboardInterrupt, a deadline, a
        cancellation), shown as ``shown`` (KeyboardInterrupt or TimeoutError).

        IPython formats it, in the current ``%xmode``, over the frames of the user's code only:
        the frames of trio and the kernel below the cell (where an awaiting cell is cancelled,
        or the SIGINT handler that raised) mean nothing to the user. It becomes the "last"
        exception, as any cell's error does: ``%tb`` and ``%debug`` see it.

        Without colours: IPython highlights each frame's source with pygments, which took
        13 ms per traceback (most of an interrupt's latency) against 2 ms without.
        """
        tb = _user_frames(exc.__traceback__)
        shown = shown.with_traceback(tb)
        formatter = self._plain_traceback()
        formatter.set_mode(self.InteractiveTB.mode)
        try:
            stb: list[str] = formatter.structured_traceback(type(shown), shown, tb, tb_offset=0)
        except Exception:  # the error must be shown whatever the frames hold
            log.exception("IPython could not format an interrupted cell's traceback")
            stb = traceback.format_exception(type(shown), shown, tb)
        sys.last_type, sys.last_value, sys.last_traceback = type(shown), shown, tb
        if sys.version_info >= (3, 12):
            sys.last_exc = shown
        return stb

    def _plain_traceback(self) -> Any:
        """IPython's formatter for tracebacks, without colours (made once)."""
        if self._plain_tb is None:
            from IPython.core import ultratb

            formatter: Any = ultratb.AutoFormattedTB  # its arguments differ in IPython 8 and 9
            try:  # IPython 9 names colour schemes "themes"
                self._plain_tb = formatter(theme_name="nocolor")
            except TypeError:
                self._plain_tb = formatter(color_scheme="NoColor")
        return self._plain_tb

    def _format_exception_for_storage(
        self, exception: BaseException, *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        # IPython 9 formats every error a second time, to keep it in history. The traceback
        # just published for the same exception is that formatting, and formatting again took
        # as long as the first time (pygments over the cell's source: most of an error cell's
        # time). For an interruption, a verbose traceback would cost more than the interrupt
        # itself (see above).
        # Taken once: a later error in the same cell is a different exception.
        shown, self._last_error_of = self._last_error_of, None
        if self.last_error is not None and (
            exception is shown or isinstance(exception, (KeyboardInterrupt, DeadlineExceeded))
        ):
            return dict(self.last_error)
        # Looked up, not called directly: IPython 8 has no such method (and never calls this).
        base = getattr(super(), "_format_exception_for_storage")  # noqa: B009
        try:
            stored: dict[str, Any] = base(exception, *args, **kwargs)
        except Exception:  # an exception whose str() raises, say: the cell's reply must go out
            stored = {
                "ename": type(exception).__name__,
                "evalue": exception_text(exception),
                "traceback": [],
            }
        return stored

    def keep_leading_blank_lines(self, keep: bool) -> None:
        """Whether a cell's leading blank lines stay in its code (while debugging: IPython drops
        them, which shifted every line of such a cell from the frontend's numbering, and a
        breakpoint stopped on the wrong line or not at all). Any thread: the list of
        transforms is replaced, never changed in place."""
        from IPython.core.inputtransformer2 import leading_empty_lines

        manager: Any = self.input_transformer_manager
        transforms = list(manager.cleanup_transforms)
        if keep and leading_empty_lines in transforms:
            transforms.remove(leading_empty_lines)
        elif not keep and leading_empty_lines not in transforms:
            transforms.insert(0, leading_empty_lines)  # first, where IPython has it
        manager.cleanup_transforms = transforms

    def mime_bundle(self, value: object) -> tuple[dict[str, Any], dict[str, Any]]:
        """``value``'s data and metadata by mime type, as ``display(value)`` would send them."""
        assert self.display_formatter is not None  # made in InteractiveShell.__init__
        data, metadata = self.display_formatter.format(value)
        return dict(data), dict(metadata)

    def show_exception(self) -> None:
        """Show the exception being handled as a cell's error would be (for callbacks), from
        the user's frames on: the kernel's that called the callback are left out."""
        exc = sys.exc_info()[1]
        if exc is None:
            return
        self.showtraceback((type(exc), exc, _user_frames(exc.__traceback__)), tb_offset=0)

    def show_interruption(self, exc: BaseException) -> None:
        """Publish the error for a KeyboardInterrupt / deadline raised in blocking code."""
        shown = TimeoutError(str(exc)) if isinstance(exc, DeadlineExceeded) else exc
        self.last_error = {
            "ename": type(shown).__name__,
            "evalue": exception_text(shown),
            "traceback": self.format_interruption(exc, shown),
        }
        self._last_error_of = exc
        self.kernel.publish("error", self.last_error)

    # -- output ------------------------------------------------------------------------------

    def _showtraceback(self, etype: type[BaseException], evalue: BaseException, stb: Any) -> None:
        self.kernel.flush_output()
        self.last_error = {
            "ename": etype.__name__,
            "evalue": exception_text(evalue),
            "traceback": stb,
        }
        self._last_error_of = evalue
        self.kernel.publish("error", self.last_error)
        if self.kernel.parent() is None:
            # Before the first request (the profile's startup code): no frontend shows an error
            # that answers no request, so the kernel's log must.
            log.warning(
                "error in the IPython profile's startup code:\n%s",
                "".join(traceback.format_exception(etype, evalue, evalue.__traceback__)),
            )

    def run_startup(self) -> None:
        """Run the profile's startup code (see :class:`IPythonProfile`), as ipykernel does
        before its first cell. Errors are shown and logged; the kernel starts regardless."""
        profile, self._profile = self._profile, None
        if profile is None:
            return
        profile.shell = self
        try:
            profile.init_gui_pylab()
            profile.init_extensions()
            profile.init_code()
        except (Exception, KeyboardInterrupt, SystemExit) as exc:
            # IPython shows most errors itself, but lets these through (and any, with
            # `reraise_ipython_extension_failures`); in the kernel's main task they would end
            # the kernel.
            self.showtraceback((type(exc), exc, exc.__traceback__), exception_only=True)

    @property
    def _payloads(self) -> Any:
        assert self.payload_manager is not None  # made in InteractiveShell.__init__
        return self.payload_manager

    def evaluate(self, expressions: Mapping[str, str]) -> dict[str, Any]:
        """``user_expressions`` of an execute reply: each evaluated, errors included."""
        result: dict[str, Any] = self.user_expressions(expressions)
        return result

    def set_next_input(self, text: str, replace: bool = False) -> None:
        self._payloads.write_payload({"source": "set_next_input", "text": text, "replace": replace})

    def ask_exit(self) -> None:
        self.exit_now = True
        self._payloads.write_payload(
            {"source": "ask_exit", "keepkernel": bool(self.keepkernel_on_exit)}
        )

    # -- requests that IPython answers ------------------------------------------------------

    def complete_at(self, code: str, cursor: int) -> dict[str, Any]:
        """``complete_reply`` content (without status) for the cursor position."""
        with provisionalcompleter():
            completions = list(rectify_completions(code, self.Completer.completions(code, cursor)))
        if completions:
            start, end = completions[0].start, completions[0].end
        else:
            start = end = cursor
        return {
            "matches": [c.text for c in completions],
            "cursor_start": start,
            "cursor_end": end,
            "metadata": {
                "_jupyter_types_experimental": [
                    {
                        "start": c.start,
                        "end": c.end,
                        "text": c.text,
                        "type": c.type,
                        "signature": c.signature,
                    }
                    for c in completions
                ]
            },
        }

    def inspect_at(self, code: str, cursor: int, detail_level: int) -> dict[str, Any]:
        """``inspect_reply`` content (without status) for the name at the cursor."""
        name = token_at_cursor(code, cursor)
        try:
            bundle = self.object_inspect_mime(name, detail_level=detail_level)
        except Exception:
            return {"found": False, "data": {}, "metadata": {}}
        if not self.enable_html_pager:
            # IPython makes HTML help too; frontends prefer it to the text, so it is sent only
            # where the profile asks for it, as in ipykernel.
            bundle.pop("text/html", None)
        return {"found": True, "data": bundle, "metadata": {}}

    def history_for(self, content: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The ``history`` list of a ``history_reply`` for a request's content."""
        hm = self.history_manager
        assert hm is not None  # made in InteractiveShell.__init__
        raw = bool(content.get("raw", True))
        output = bool(content.get("output", False))
        access = content.get("hist_access_type", "tail")
        n = content.get("n")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValueError("'n' must be a non-negative integer")
        if access == "tail":
            entries = hm.get_tail(
                n if n is not None else 10, raw=raw, output=output, include_latest=True
            )
        elif access == "range":
            session = int(content.get("session", 0))
            start = int(content.get("start", 0))
            stop = content.get("stop")
            entries = hm.get_range(
                session, start, int(stop) if stop is not None else None, raw=raw, output=output
            )
        elif access == "search":
            pattern = content.get("pattern", "*")
            if not isinstance(pattern, str):
                raise ValueError("'pattern' must be a string")
            entries = hm.search(
                pattern, raw=raw, output=output, n=n, unique=bool(content.get("unique", False))
            )
        else:
            raise ValueError(f"unknown hist_access_type {access!r}")
        # IPython numbers the current session 0 in some answers and by its number in others;
        # a reply names it one way, by number, so a client can ask for the same range again.
        current = hm.session_number
        return [(current if e[0] == 0 else e[0], *e[1:]) for e in entries]

    def completeness(self, code: str) -> dict[str, Any]:
        """``is_complete_reply`` content: complete, incomplete (with indent) or invalid."""
        status, indent = self.input_transformer_manager.check_complete(code)
        reply: dict[str, Any] = {"status": status}
        if status == "incomplete":
            reply["indent"] = " " * (indent or 0)
        return reply

    def take_payloads(self) -> list[dict[str, Any]]:
        """The reply payloads of the last cell; ``set_next_input`` only once (the last)."""
        payloads: list[dict[str, Any]] = list(self._payloads.read_payload())
        if payloads:  # clearing sets a validated trait: not worth it for nothing, every cell
            self._payloads.clear_payload()
        last_next_input = None
        for p in payloads:
            if p.get("source") == "set_next_input":
                last_next_input = p
        return [p for p in payloads if p.get("source") != "set_next_input" or p is last_next_input]


# Errors that mean "this code assumes another loop than the kernel's trio loop".
_TRIO_HINTS = (
    (
        "Attempted to call run() from inside a run()",
        (
            "trikernel: this cell already runs on the kernel's trio loop; "
            "use `await f()` instead of `trio.run(f)`."
        ),
    ),
    (
        "no running event loop",
        (
            "trikernel: the kernel's loop is trio, not asyncio; use trio or anyio APIs "
            "(asyncio-only libraries need a bridge such as trio-asyncio)."
        ),
    ),
    (
        "received unrecognized yield message",
        (
            "trikernel: the kernel's loop is trio, not asyncio; use trio or anyio APIs "
            "(asyncio-only libraries need a bridge such as trio-asyncio)."
        ),
    ),
    (
        "this thread wasn't created by Trio",
        (
            "trikernel: trio.from_thread.* is for other threads; this cell runs on the trio "
            "loop's thread, so `await` the function directly."
        ),
    ),
)


@functools.cache
def _not_user_code() -> tuple[str, ...]:
    """The folders of the packages whose frames are not the user's (see format_interruption);
    found without importing them."""
    folders: list[str] = []
    for name in ("trikernel", "trio", "outcome", "greenback"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            folders.extend(str(Path(f)) + os.sep for f in spec.submodule_search_locations)
    return tuple(folders)


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without the frames of trio and the kernel (a new chain; ``tb`` is unchanged)."""
    kept: list[TracebackType] = []
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_not_user_code()):
            kept.append(tb)
        tb = tb.tb_next
    chain = None
    for t in reversed(kept):
        # tb_lineno is None where the instruction has no line (a signal handler's frame can
        # be caught there); -1 asks Python to work it out from tb_lasti, as it did.
        lineno: int | None = t.tb_lineno  # typeshed says int
        chain = TracebackType(chain, t.tb_frame, t.tb_lasti, -1 if lineno is None else lineno)
    return chain


def _add_trio_hint(exc: BaseException) -> None:
    """Append what to do instead to the message of a known trio trap (in place)."""
    if not exc.args or not isinstance(exc.args[0], str):
        return
    for needle, hint in _TRIO_HINTS:
        if needle in exc.args[0] and hint not in exc.args[0]:
            exc.args = (f"{exc.args[0]}\n{hint}", *exc.args[1:])
            return


def _kernel_of(shell: Any) -> Kernel:
    kernel: Kernel = shell.kernel
    return kernel


def _split_cancelled(
    exc: BaseException,
) -> tuple[BaseException | None, BaseException | None]:
    """Split ``exc`` into (the trio cancellation in it, everything else)."""
    if isinstance(exc, trio.Cancelled):
        return exc, None
    if isinstance(exc, BaseExceptionGroup):
        cancelled, rest = exc.split(trio.Cancelled)
        return cancelled, rest
    return None, exc


class IPythonProfile(BaseIPythonApplication, InteractiveShellApp):
    """The user's IPython profile, read as ipykernel reads it.

    Config: ``ipython_config.py``, then ``ipython_kernel_config.py`` (and their ``.json``
    twins), from the profile's folder and IPython's system folders. The ``IPKernelApp``
    section of those files, ipykernel's name for this job, counts as ``InteractiveShellApp``'s
    (``exec_lines``, ``extensions``, ``matplotlib``...). Startup, before the first cell:
    ``matplotlib`` / ``pylab``, ``extensions``, then the ``startup/`` files, ``PYTHONSTARTUP``,
    ``exec_lines`` and ``exec_files``.

    IPython's own application classes do all of it; this one leaves out only what belongs to a
    terminal program: the command line, and the crash handler that would take over
    ``sys.excepthook``.
    """

    # (Not named with a leading underscore: traitlets takes no config section for such names.)

    name = "ipython-kernel"  # whose config file is ipython_kernel_config.py, as ipykernel's
    # The command-line options IPython's terminal application and ipykernel's share
    # (ipykernel's own are mapped in trikernel.__main__). Class attributes, as traitlets wants.
    aliases = {**base_aliases, **shell_aliases}  # noqa: RUF012
    flags = {**base_flags, **shell_flags}  # noqa: RUF012

    def init_crash_handler(self) -> None:
        pass


def ipython_config(args: Sequence[str]) -> Config:
    """The config IPython's command-line parser makes of ``args`` (``--Class.trait=value``,
    ``--matplotlib=inline``, ``--pdb``...), as ipykernel's would.

    Raises:
        ValueError: IPython's parser refused ``args`` (its message went to stderr), or some are
            not options.
    """
    profile = IPythonProfile(log=log)
    try:
        profile.parse_command_line(list(args))
    except SystemExit:  # argparse's way to refuse
        raise ValueError(f"IPython's command line refused {list(args)}") from None
    if profile.extra_args:
        raise ValueError(f"unrecognised arguments {profile.extra_args}; options are --name=value")
    return profile.config


def _load_profile(name: str, args: Sequence[str] = ()) -> IPythonProfile | None:
    """The profile ``name`` with its config loaded, and IPython's command-line options ``args``
    on top (as IPython's applications order them); None, logged, if it cannot be used."""
    profile = IPythonProfile(profile=name, auto_create=True, log=log)
    try:
        profile.parse_command_line(list(args))  # checked by ipython_config already
        command_line = copy.deepcopy(profile.config)
        profile.init_profile_dir()
        profile.init_config_files()
        profile.load_config_file()
        profile.update_config(command_line)
        kernel_app = profile.config.IPKernelApp
        ours = {
            key: kernel_app[key]
            for key in InteractiveShellApp.class_trait_names(config=True)
            if key in kernel_app
        }
        profile.update_config(Config({type(profile).__name__: ours}))
    except (Exception, SystemExit):  # IPython's application exits on a bad profile
        log.exception("IPython profile %r could not be loaded; the kernel starts without it", name)
        return None
    return profile


def make_shell(
    kernel: Kernel, *, history: bool, profile: str = "default", args: Sequence[str] = ()
) -> ZMQInteractiveShell:
    """Create the process's shell (IPython keeps one instance per process).

    Args:
        kernel: where the shell's output goes.
        history: keep IPython's SQLite history; False keeps it in memory for this run only.
        profile: the IPython profile whose config and startup code to use (see
            :class:`IPythonProfile`); :meth:`ZMQInteractiveShell.run_startup` runs the code.
        args: IPython's command-line options (see :func:`ipython_config`), over the profile's.
    """
    loaded = _load_profile(profile, args)
    ours = Config()
    # history_request can ask for outputs; keep them in the database so they outlive a restart.
    ours.HistoryManager.db_log_output = True
    if not history:
        ours.HistoryManager.hist_file = ":memory:"
    if kernel.connection_file is not None:
        # Where ipykernel's command line puts it: libraries test
        # `"IPKernelApp" in get_ipython().config` to know they run in a Jupyter kernel.
        ours.IPKernelApp.connection_file = str(kernel.connection_file)
    shell: ZMQInteractiveShell | None = None
    if loaded is not None:
        config = copy.deepcopy(loaded.config)
        config.merge(ours)
        try:
            shell = ZMQInteractiveShell.instance(
                kernel=kernel, config=config, profile_dir=loaded.profile_dir
            )
        except TraitError as exc:
            # A value of the wrong type for the shell or one of its parts (history, completer,
            # formatters): IPython checks those only now.
            # (No traceback: the message names the setting and the value; IPython's frames
            # would only bury it.)
            message = "IPython profile %r: %s; the kernel starts without it"
            log.error(message, profile, exc)  # noqa: TRY400
            loaded = None
    if shell is None:
        shell = ZMQInteractiveShell.instance(kernel=kernel, config=ours)
    # The working directory on sys.path, after the standard library (unless the profile says
    # ignore_cwd), as IPython's applications put it.
    (loaded or IPythonProfile(log=log)).init_path()
    shell._profile = loaded
    _install_input(kernel)
    _use_ipythons_debugger()
    return shell


def stdin_not_allowed() -> StdinNotImplementedError:
    """The error for input requested where the frontend allows none (as ipykernel's)."""
    return StdinNotImplementedError(
        "input was requested, but this frontend does not support input requests "
        "(allow_stdin is false)"
    )


# Frames of the kernel's own code: its signal handlers run between a cell's lines, and a
# debugger stepping through the cell stopped in them ("--Call--" in _on_cpu_tick).
_KERNEL_MODULES = ("trikernel", "trikernel.*", "trio", "trio.*", "greenback", "greenback.*")


def _use_ipythons_debugger() -> None:
    """``pdb.set_trace()`` and ``breakpoint()`` open IPython's debugger, as ``%debug`` does (and
    as in ipykernel): ``ipdb>`` with the source around each line, and Ctrl-C at its prompt
    leaves it rather than taking the cell with it. Stepping never stops in the kernel's code.

    ``pdb`` is made so when it is first imported (IPython defers it too: importing it and
    IPython's debugger at startup took 4 ms and 0.5 MiB that most sessions never use).
    """
    if "pdb" in sys.modules:
        _make_pdb_ipythons(sys.modules["pdb"])
    else:
        sys.meta_path.insert(0, _PdbFinder())


@functools.cache
def kernel_pdb() -> type:
    """IPython's interruptible debugger, skipping the kernel's modules (made on first use)."""
    from IPython.core.debugger import InterruptiblePdb

    class KernelPdb(InterruptiblePdb):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("skip", list(_KERNEL_MODULES))
            super().__init__(*args, **kwargs)

        def set_trace(self, frame: Any = None, **kwargs: Any) -> Any:
            # breakpoint() and pdb.set_trace() left in a notebook that papermill or nbconvert
            # runs (which answer no input) failed the run with StdinNotImplementedError; with
            # ipykernel breakpoint() passes. Skipped, with a line saying so.
            kernel = getattr(InteractiveShell._instance, "kernel", None)
            if kernel is not None and not kernel.stdin_allowed():
                sys.stderr.write(
                    "breakpoint skipped: this frontend does not answer input "
                    "(allow_stdin is false)\n"
                )
                return None
            return super().set_trace(frame or sys._getframe().f_back, **kwargs)

        def stop_here(self, frame: FrameType) -> bool:
            # bdb's own rule first (it also skips the skipped modules). IPython's checks can
            # only add reasons not to stop, but they have side effects where bdb would not
            # stop anyway: IPython 9 prints "[... skipped 1 ignored module(s)]" at every call
            # into a skipped module (a dozen lines per print() under `next`), and it caches
            # every frame it looks at (IPython 9 until its next stop, up to 1,024; IPython 8
            # for the process's life). A breakpoint left in bdb's class-level list (`%run -d`
            # leaves one) keeps the tracer on after `continue`, so every call a later cell
            # made was cached, with its locals: objects the cell dropped were not freed and
            # their finalizers did not run.
            if not bdb.Bdb.stop_here(self, frame) or _in_output_path(frame):
                return False
            stop: bool = super().stop_here(frame)
            return stop

    return KernelPdb


@functools.cache
def _output_entry_codes() -> frozenset[CodeType]:
    from .channels import IOPubQueue
    from .streams import OutStream

    entries = (
        OutStream.write,
        OutStream.writelines,
        OutStream.flush,
        IOPubQueue.publish,
        IOPubQueue.write,
        IOPubQueue.flush,
    )
    return frozenset(inspect.unwrap(entry).__code__ for entry in entries)


def _in_output_path(frame: FrameType | None, depth: int = 16) -> bool:
    """Whether ``frame`` runs for the kernel's output (a print(), a display()), within
    ``depth`` calls of where it entered the kernel.

    The skipped modules do not cover that code: attrs' generated ``__init__`` and the standard
    library it calls have modules of their own, or none. Stopped there, the debugger held the
    output queue's lock, or trio's wake-up lock, and its own prompt could not go out: stepping
    into a print() hung the kernel.
    """
    codes = _output_entry_codes()
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def _make_pdb_ipythons(pdb: Any) -> None:
    from IPython.core import debugger

    pdb.Pdb = kernel_pdb()
    debugger.Pdb = kernel_pdb()  # type: ignore[misc,assignment]  # what IPython's set_trace makes
    pdb.set_trace = debugger.set_trace


class _PdbFinder(importlib.abc.MetaPathFinder):
    """Makes ``pdb`` IPython's once it is loaded, the first time it is imported.

    IPython's debugger, which the patch needs, imports ``pdb`` itself: imported first (by
    ``%debug``, ``%pdb``), it is only half loaded when ``pdb`` is, and patching then failed
    with a circular import. So this finder watches both, and patches once neither is loading.
    """

    _WATCHED = ("pdb", "IPython.core.debugger")

    def __init__(self) -> None:
        self._finding = False
        self._loading_debugger = False

    def find_spec(
        self, fullname: str, path: Any, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._WATCHED or self._finding:
            return None
        self._finding = True  # the real spec, found by the finders after this one
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None:
            return spec
        loader, finder = spec.loader, self

        class Loader(importlib.abc.Loader):
            def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                if fullname == "pdb":
                    loader.exec_module(module)
                    if not finder._loading_debugger:
                        finder._patch(module)
                    return
                finder._loading_debugger = True
                try:
                    loader.exec_module(module)
                finally:
                    finder._loading_debugger = False
                pdb = sys.modules.get("pdb")
                if pdb is not None:  # (IPython's debugger has always imported it so far)
                    finder._patch(pdb)

        spec.loader = Loader()
        return spec

    def _patch(self, pdb: Any) -> None:
        with contextlib.suppress(ValueError):  # taken out already
            sys.meta_path.remove(self)
        _make_pdb_ipythons(pdb)


def _install_input(kernel: Kernel) -> None:
    """Make ``input()`` and ``getpass.getpass()`` ask the frontend over the stdin channel."""
    import builtins
    import getpass

    def ask(prompt: object = "", *, password: bool) -> str:
        try:
            value = kernel.request_input(str(prompt), password=password)
        except (KeyboardInterrupt, EOFError) as exc:
            # Raised anew: its traceback ends at input(), not in the kernel's wait for the reply.
            raise type(exc)(*exc.args) from None
        if value is None:
            raise stdin_not_allowed()
        return value

    def input(prompt: object = "") -> str:  # noqa: A001 - replaces the builtin on purpose
        return ask(prompt, password=False)

    def getpass_(prompt: str = "Password: ", stream: object = None, **options: object) -> str:
        # options: Python 3.14's echo_char, which the frontend's own masking stands for.
        return ask(prompt, password=True)

    builtins.input = input
    getpass.getpass = getpass_
