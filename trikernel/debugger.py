"""The Jupyter debugger: ``debug_request`` on control, spoken to debugpy in DAP.

How it fits together:

- Every cell's code is named after a hash of its source (:func:`cell_path`), the same name a
  frontend computes from the cell's text (JupyterLab: MurmurHash2 of the UTF-8, with the seed,
  prefix and suffix ``debugInfo`` gives). A breakpoint the frontend sets on that path hits when
  the cell's code runs, whenever the cell was run.
- The first ``initialize`` starts debugpy in this process, on the main thread, where cells run
  (its adapter is a child process), and connects to the adapter over TCP. From then on DAP
  requests are forwarded and their responses become ``debug_reply``; DAP events become
  ``debug_event`` messages on iopub.
- The Jupyter-only requests are answered here: ``debugInfo``, ``dumpCell``, ``source``,
  ``inspectVariables``, ``richInspectVariables``, ``copyToGlobals``, ``modules``.

Threads: all of this runs in the io loop, which keeps running while a breakpoint holds the
main thread. The kernel's own threads are hidden from debugpy: it would pause them at every
stop, and the kernel would stop answering with them.
"""

from __future__ import annotations

import ast
import itertools
import json
import logging
import os
import re
import reprlib
import shutil
import sys
import tempfile
import threading
from array import array
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import trio

__all__ = ["CELL_PREFIX", "HASH_SEED", "Debugger", "cell_path", "murmur2"]

log = logging.getLogger("trikernel")

#: The seed of the cell-name hash (any 32-bit value; frontends read it from debugInfo).
HASH_SEED = 0x7472696B  # "trik"
_MASK = 0xFFFFFFFF
_M = 0x5BD1E995
_TIMEOUT = 30.0
"""Seconds a DAP request may take before its debug_reply says it failed."""


def murmur2(data: bytes, seed: int) -> int:
    """MurmurHash2, 32-bit (Austin Appleby's), the hash JupyterLab names cells with."""
    length = len(data)
    h = (seed ^ length) & _MASK
    whole = length - length % 4
    words = array("I", data[:whole])  # "I" is 4 bytes on every platform CPython runs on
    if sys.byteorder == "big":
        words.byteswap()
    for k in words:
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    if whole < length:
        # The last 1-3 bytes, little-endian: the reference's fall-through switch.
        h = ((h ^ int.from_bytes(data[whole:], "little")) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


_CELL_DIR = Path(tempfile.gettempdir()).resolve() / f"trikernel_{os.getpid()}"
CELL_PREFIX = f"{_CELL_DIR}{os.sep}"
"""Where every cell's code says it comes from (its file name starts so)."""
_SUFFIX = ".py"


def cell_path(code: str) -> str:
    """The file name a cell with this source runs under (nothing is written: see dumpCell)."""
    return f"{CELL_PREFIX}{murmur2(code.encode('utf-8', 'surrogatepass'), HASH_SEED)}{_SUFFIX}"


def remove_cell_files() -> None:
    """Remove the files ``dumpCell`` wrote (at exit)."""
    shutil.rmtree(_CELL_DIR, ignore_errors=True)


class DebugError(Exception):
    """A debug_request that cannot be answered; its message goes in the error response."""


@attrs.define(eq=False)
class Debugger:
    """One kernel's debugger session with debugpy (io loop only).

    Args:
        nursery: the io loop's nursery, which runs the adapter reader.
        on_main: runs a function on the main thread (where debugpy must start) and returns
            its result.
        publish_event: puts a DAP event on iopub as ``debug_event``.
        namespace: the user's namespace (for the variable explorer while nothing is stopped).
        kernel_threads: the names of the threads debugpy must leave alone.
        interrupt_pending: whether an interrupt waits to reach the cell's code (then no
            breakpoint may hold it: see :meth:`release`).
    """

    nursery: trio.Nursery
    on_main: Callable[[Callable[[], Any]], Awaitable[Any]]
    publish_event: Callable[[Mapping[str, Any]], None]
    namespace: Callable[[], dict[str, Any]]
    kernel_threads: frozenset[str]
    interrupt_pending: Callable[[], bool]
    rich_format: Callable[[object], tuple[dict[str, Any], dict[str, Any]]]
    """A value's mime bundle and metadata, as ``display()`` would show it."""
    keep_blank_lines: Callable[[bool], None]
    """Called with True when a session starts, False when it ends: while debugging, a cell's
    code keeps its leading blank lines, so its line numbers are those the frontend shows."""
    protect: Callable[[tuple[str, ...]], None]
    """Told debugpy's folders once it is imported: no KeyboardInterrupt may be raised there."""
    _endpoint: tuple[str, int] | None = None
    """Where debugpy's adapter listens, once started (it stays for the process's life)."""
    _stream: trio.SocketStream | None = None
    _send_lock: trio.Lock = attrs.Factory(trio.Lock)
    _seq: int = 0
    _pending: dict[int, _Pending] = attrs.Factory(dict)
    _initialized: trio.Event = attrs.Factory(trio.Event)
    _configured: bool = False
    _breakpoints: dict[str, list[Any]] = attrs.Factory(dict)
    _stopped: set[int] = attrs.Factory(set)
    _expandable: dict[int, tuple[object, str | None]] = attrs.Factory(dict)
    """What the last inspectVariables' references stand for: a value, and an expression for it
    in the user's namespace (None where there is none)."""

    # -- the frontend's side -------------------------------------------------------------------

    async def handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The DAP response to one ``debug_request``'s content (a DAP request)."""
        try:
            return await self._handle(request)
        except DebugError as exc:
            return _response(request, None, error=str(exc))

    async def _handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        if not isinstance(command, str) or request.get("type", "request") != "request":
            raise DebugError("a debug_request's content must be a DAP request with a command")
        arguments = request.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise DebugError("'arguments' must be an object")
        local = self._LOCAL.get(command)
        if local is not None:
            return _response(request, await local(self, arguments))
        if command == "initialize":
            await self._connect()
        elif self._stream is None:
            raise DebugError(f"{command}: the debugger is not started (send initialize)")
        if command == "attach":
            return _as_reply(request, await self._attach(arguments))
        if command == "variables" and not self._stopped:
            expanded = self._expand(arguments)
            if expanded is not None:  # a value of the user's globals, while nothing stops
                return _response(request, expanded)
        if command == "configurationDone" and self._configured:
            return _response(request, None)  # sent already, during attach
        response = await self._request(command, arguments)
        if command == "setBreakpoints" and response.get("success"):
            path = (arguments.get("source") or {}).get("path")
            if isinstance(path, str):
                # Where debugpy put them (a mark on a blank line moves to code), which is
                # what a frontend shows again when it reloads them from debugInfo.
                placed = (response.get("body") or {}).get("breakpoints") or []
                self._breakpoints[path] = [
                    {"line": mark["line"]}
                    for mark in placed
                    if isinstance(mark, dict) and isinstance(mark.get("line"), int)
                ]
        elif command == "variables" and response.get("success"):
            _hide_ipython_names(response)

        if command == "disconnect":
            await self._disconnect()
        return _as_reply(request, response)

    async def _debug_info(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return {
            "isStarted": self._stream is not None,
            "hashMethod": "Murmur2",
            "hashSeed": HASH_SEED,
            "tmpFilePrefix": CELL_PREFIX,
            "tmpFileSuffix": _SUFFIX,
            "breakpoints": [
                {"source": path, "breakpoints": marks} for path, marks in self._breakpoints.items()
            ],
            "stoppedThreads": sorted(self._stopped),
            "richRendering": True,
            "copyToGlobals": True,
            "exceptionPaths": [],
        }

    async def _dump_cell(self, arguments: dict[str, Any]) -> dict[str, Any]:
        code = arguments.get("code")
        if not isinstance(code, str):
            raise DebugError("dumpCell: 'code' must be a string")
        path = cell_path(code)
        try:
            _write_file(path, code)
        except OSError as exc:
            raise DebugError(f"dumpCell: cannot write {path}: {exc}") from None
        return {"sourcePath": path}

    async def _source(self, arguments: dict[str, Any]) -> dict[str, Any]:
        path = (arguments.get("source") or {}).get("path")
        if not isinstance(path, str):
            raise DebugError("source: 'source.path' must be a string")
        try:
            content = _read_file(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise DebugError(f"source: cannot read {path}: {exc}") from None
        return {"content": content}

    async def _inspect_variables(self, arguments: dict[str, Any]) -> dict[str, Any]:
        # The user's globals while nothing is stopped (a stopped frame's variables go through
        # DAP's scopes/variables). Read from this thread: the values may change meanwhile, as
        # they may in any variable explorer of a running kernel. Containers and objects get a
        # reference that a `variables` request expands (see _expand); each inspection starts
        # the references afresh.
        self._expandable.clear()
        variables = [
            self._variable(name, value, name)
            for name, value in list(self.namespace().items())
            if not name.startswith("_") and not _is_plumbing(name, value)
        ]
        return {"variables": variables}

    def _variable(self, name: str, value: object, evaluate_name: str | None) -> dict[str, Any]:
        reference = 0
        if _children(value, limit=1):  # has any: the list is made when it is opened
            reference = len(self._expandable) + 1
            self._expandable[reference] = (value, evaluate_name)
        variable = {
            "name": name,
            "value": _short_repr(value),
            "type": type(value).__name__,
            "variablesReference": reference,
        }
        if evaluate_name is not None:
            variable["evaluateName"] = evaluate_name
        return variable

    def _expand(self, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """A ``variables`` body for a reference :meth:`_inspect_variables` gave (None for any
        other: debugpy's, of a stopped frame)."""
        found = self._expandable.get(arguments.get("variablesReference", 0))
        if found is None:
            return None
        value, evaluate_name = found
        start = arguments.get("start") or 0
        count = arguments.get("count") or _MAX_CHILDREN
        children = _children(value, limit=min(start + count, _LIMIT))[start:]
        return {
            "variables": [
                self._variable(
                    label,
                    child,
                    None if evaluate_name is None or access is None else evaluate_name + access,
                )
                for label, access, child in children
            ]
        }

    async def _rich_inspect_variables(self, arguments: dict[str, Any]) -> dict[str, Any]:
        name = arguments.get("variableName")
        if not isinstance(name, str) or not name.isidentifier():
            raise DebugError("richInspectVariables: 'variableName' must be an identifier")
        frame_id = arguments.get("frameId")
        if frame_id is not None and self._stopped:
            # Formatted in the stopped frame, by the shell's display formatter (HTML for a
            # DataFrame, PNG for a figure), and read back from its repr.
            response = await self._request(
                "evaluate",
                {
                    "expression": f"__import__('IPython').get_ipython().display_formatter"
                    f".format({name})",
                    "frameId": frame_id,
                    "context": "clipboard",  # debugpy shortens what it returns for "watch"
                },
            )
            if not response.get("success"):
                raise DebugError(f"richInspectVariables: {response.get('message', 'failed')}")
            try:
                data, metadata = ast.literal_eval((response.get("body") or {}).get("result", ""))
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                raise DebugError(
                    "richInspectVariables: its representation did not come back"
                ) from None
        else:
            namespace = self.namespace()
            if name not in namespace:
                raise DebugError(f"richInspectVariables: no variable named {name!r}")
            data, metadata = self.rich_format(namespace[name])
        return {"data": data, "metadata": metadata}

    async def _copy_to_globals(self, arguments: dict[str, Any]) -> dict[str, Any]:
        src, dst = arguments.get("srcVariableName"), arguments.get("dstVariableName")
        frame_id = arguments.get("srcFrameId")
        if not (isinstance(src, str) and src.isidentifier()):
            raise DebugError("copyToGlobals: 'srcVariableName' must be an identifier")
        if not (isinstance(dst, str) and dst.isidentifier()):
            raise DebugError("copyToGlobals: 'dstVariableName' must be an identifier")
        if self._stream is None or frame_id is None:
            raise DebugError("copyToGlobals: needs a stopped frame ('srcFrameId')")
        response = await self._request(
            "evaluate",
            {"expression": f"globals()[{dst!r}] = {src}", "frameId": frame_id, "context": "repl"},
        )
        if not response.get("success"):
            raise DebugError(f"copyToGlobals: {response.get('message', 'failed')}")
        # What was copied, as an evaluate of it answers (value, type, variablesReference).
        response = await self._request(
            "evaluate", {"expression": src, "frameId": frame_id, "context": "watch"}
        )
        body = response.get("body") or {}
        return {
            "value": body.get("result", ""),
            "type": body.get("type", ""),
            "variablesReference": body.get("variablesReference", 0),
        }

    async def _modules(self, arguments: dict[str, Any]) -> dict[str, Any]:
        start = int(arguments.get("startModule") or 0)
        count = int(arguments.get("moduleCount") or 0)
        found = [
            {"id": name, "name": name, "path": path}
            for name, module in list(sys.modules.items())
            if isinstance(path := getattr(module, "__file__", None), str)
        ]
        chosen = found[start : start + count] if count else found[start:]
        return {"modules": chosen, "totalModules": len(found)}

    _LOCAL: ClassVar[dict[str, Callable[[Debugger, dict[str, Any]], Awaitable[dict[str, Any]]]]] = {
        "debugInfo": _debug_info,
        "dumpCell": _dump_cell,
        "source": _source,
        "inspectVariables": _inspect_variables,
        "richInspectVariables": _rich_inspect_variables,
        "copyToGlobals": _copy_to_globals,
        "modules": _modules,
    }

    # -- debugpy's side ------------------------------------------------------------------------

    async def _connect(self) -> None:
        if self._stream is not None:
            return
        if self._endpoint is None:
            with trio.move_on_after(_TIMEOUT) as waited:
                self._endpoint = await self.on_main(self._start_debugpy)
            if waited.cancelled_caught or self._endpoint is None:
                raise DebugError("debugpy did not start (is the main thread blocked by a cell?)")
        host, port = self._endpoint
        try:
            self._stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise DebugError(f"cannot reach debugpy's adapter at {host}:{port}: {exc}") from None
        self._initialized = trio.Event()
        self._configured = False
        self.keep_blank_lines(True)
        self.nursery.start_soon(self._read, self._stream)

    def _start_debugpy(self) -> tuple[str, int]:
        # Main thread. Threads that exist now and belong to the kernel are hidden from debugpy
        # (these attributes are pydevd's: not traced, not paused at a stop).
        for thread in threading.enumerate():
            if thread.name in self.kernel_threads:
                thread.pydev_do_not_trace = True  # type: ignore[attr-defined]
                thread.is_pydev_daemon_thread = True  # type: ignore[attr-defined]
        # Not "frozen modules are being used" on stderr (the adapter's), in the user's last cell.
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        import debugpy  # noqa: T100 - the debugger's engine, imported when first used

        self.protect(tuple(str(Path(f)) + os.sep for f in debugpy.__path__))
        host, port = debugpy.listen(("127.0.0.1", 0))  # noqa: T100
        return str(host), int(port)

    async def _attach(self, arguments: dict[str, Any]) -> dict[str, Any]:
        # debugpy answers attach only after configurationDone, but a frontend sends that after
        # the attach reply (one request at a time): so the kernel sends configurationDone itself
        # once debugpy says it is initialized, and later answers the frontend's own.
        arguments = {"justMyCode": True, **arguments}
        rules = list(arguments.get("rules") or [])
        rules.append({"path": str(Path(__file__).parent), "include": False})
        arguments["rules"] = rules
        seq = await self._send("attach", arguments)
        with trio.move_on_after(_TIMEOUT):
            await self._initialized.wait()
            done = await self._request("configurationDone", {})
            self._configured = bool(done.get("success"))
        return await self._wait(seq)

    async def _disconnect(self) -> None:
        stream, self._stream = self._stream, None
        self._stopped.clear()
        # Switched off, the debugger keeps no breakpoint: a frontend that switches it on again
        # sends the ones it wants (JupyterLab clears its own when it switches off).
        self._breakpoints.clear()
        self.keep_blank_lines(False)
        if stream is not None:
            await stream.aclose()

    async def release(self) -> None:
        """Let every thread a breakpoint holds run on: an interrupt must end the cell, and while
        debugpy holds a thread (on Python 3.12 and later) no signal reaches its code."""
        for thread in sorted(self._stopped):
            if self._stream is None:
                return
            try:
                await self._request("continue", {"threadId": thread})
            except DebugError:
                return

    async def _request(self, command: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        return await self._wait(await self._send(command, arguments))

    async def _send(self, command: str, arguments: Mapping[str, Any]) -> int:
        stream = self._stream
        if stream is None:
            raise DebugError(f"{command}: the debugger is not connected")
        self._seq += 1
        seq = self._seq
        thread = arguments.get("threadId")
        self._pending[seq] = _Pending(command, thread if isinstance(thread, int) else None)
        body = json.dumps(
            {"seq": seq, "type": "request", "command": command, "arguments": arguments}
        ).encode()
        async with self._send_lock:
            try:
                await stream.send_all(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._pending.pop(seq, None)
                raise DebugError(f"{command}: the connection to debugpy is gone ({exc})") from None
        return seq

    async def _wait(self, seq: int) -> dict[str, Any]:
        pending = self._pending[seq]
        try:
            with trio.move_on_after(_TIMEOUT):
                await pending.done.wait()
        finally:
            del self._pending[seq]
        if pending.response is None:
            reason = "lost the connection" if self._stream is None else f"{_TIMEOUT:g} s passed"
            raise DebugError(f"no answer from debugpy ({reason})")
        return pending.response

    async def _read(self, stream: trio.SocketStream) -> None:
        """Route what the adapter sends: responses to their requests, events to iopub."""
        buffer = b""
        try:
            while True:
                message, buffer = _take_message(buffer)
                if message is None:
                    data = await stream.receive_some()
                    if not data:
                        break
                    buffer += data
                    continue
                self._route(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except ValueError as exc:
            # Not DAP: nothing after it can be framed. The connection ends here; requests
            # waiting for an answer say so, and the frontend's next `initialize` connects again.
            log.warning("debugger: dropped the connection to debugpy: %s", exc)
        finally:
            # Also when the io loop is cancelled (shutdown): the connection ends with its reader.
            stream.socket.close()
            if self._stream is stream:
                self._stream = None
                self._stopped.clear()
                self.keep_blank_lines(False)
            for pending in self._pending.values():
                pending.done.set()  # no response: the waiter reports the lost connection

    def _route(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "response":
            pending = self._pending.get(message.get("request_seq", -1))
            if pending is not None:
                if pending.command in _RESUMING and message.get("success"):
                    self._resumed(pending.thread, message.get("body") or {})
                pending.response = message
                pending.done.set()
        elif kind == "event":
            event, body = message.get("event"), message.get("body") or {}
            if event == "initialized":
                self._initialized.set()
            elif event == "stopped" and isinstance(body.get("threadId"), int):
                self._stopped.add(body["threadId"])
                if self.interrupt_pending():
                    # Stopped again before the interrupt landed (a breakpoint in a loop).
                    self.nursery.start_soon(self.release)
            elif event == "continued":
                if body.get("allThreadsContinued", True):
                    self._stopped.clear()
                else:
                    self._stopped.discard(body.get("threadId", -1))
            self.publish_event(message)

    def _resumed(self, thread: int | None, body: dict[str, Any]) -> None:
        # The thread runs on. debugpy sends no `continued` event for what the frontend asked
        # for itself (DAP leaves that out), so a thread continued this way stayed "stopped"
        # in debugInfo. Done as the response is read, in order with the events: the
        # `stopped` of a step comes after its response.
        if thread is None or body.get("allThreadsContinued", False):
            self._stopped.clear()
        else:
            self._stopped.discard(thread)


@attrs.define(eq=False)
class _Pending:
    command: str
    thread: int | None
    """The request's threadId, if it names one."""
    done: trio.Event = attrs.Factory(trio.Event)
    response: dict[str, Any] | None = None


def _take_message(buffer: bytes) -> tuple[dict[str, Any] | None, bytes]:
    """One DAP message off the front of ``buffer`` (``Content-Length`` framing), if whole."""
    head, sep, rest = buffer.partition(b"\r\n\r\n")
    if not sep:
        return None, buffer
    length = None
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise ValueError(f"a DAP header with a bad Content-Length: {value!r}") from None
    if length is None:
        raise ValueError("a DAP message without Content-Length")
    if len(rest) < length:
        return None, buffer
    try:
        message = json.loads(rest[:length])
    except ValueError as exc:
        raise ValueError(f"a DAP message that is not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise ValueError("a DAP message that is not an object")
    return message, rest[length:]


def _response(
    request: Mapping[str, Any], body: dict[str, Any] | None, *, error: str | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "type": "response",
        "request_seq": request.get("seq", 0),
        "seq": 0,
        "command": request.get("command"),
        "success": error is None,
    }
    if error is not None:
        response["message"] = error
    if body is not None:
        response["body"] = body
    return response


def _as_reply(request: Mapping[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """debugpy's response to our copy of ``request``, renumbered as the answer to the frontend's."""
    return {**response, "request_seq": request.get("seq", 0)}


def _write_file(path: str, text: str) -> None:
    # A cell's worth, in the temporary folder: not worth a thread.
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


def _read_file(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 200


def _short_repr(value: object, *, full: bool = False) -> str:
    try:
        return repr(value) if full else _repr.repr(value)
    except Exception as exc:  # noqa: BLE001 - a user's broken __repr__ must not fail the request
        return f"<repr failed: {type(exc).__name__}: {exc}>"


# IPython's own entries in the user namespace: the input and output history and its
# shortcuts, and the exit helpers.
_IPYTHON_NAME = re.compile(r"In|Out|exit|quit|get_ipython|_{1,3}|_i{1,3}|_i\d+|_\d+|_[iod]h")


def _hide_ipython_names(response: dict[str, Any]) -> None:
    """Leave IPython's own names out of a ``variables`` response (in place)."""
    body = response.get("body")
    if not isinstance(body, dict):
        return
    variables = body.get("variables")
    if isinstance(variables, list):
        body["variables"] = [
            v
            for v in variables
            if not (isinstance(v, dict) and _IPYTHON_NAME.fullmatch(str(v.get("name", ""))))
        ]


_RESUMING = frozenset({"continue", "next", "stepIn", "stepOut", "stepBack", "reverseContinue"})
"""DAP requests that let a stopped thread run (until it stops again)."""

_MAX_CHILDREN = 300
"""Children a variables request lists unless it asks for a page (start, count)."""
_LIMIT = 10_000
"""Children listed at most for one value (pages come out of these)."""


def _children(value: object, limit: int = _LIMIT) -> list[tuple[str, str | None, object]]:
    """What a variable explorer shows inside ``value``, the first ``limit`` of it: (label,
    Python access from the value, or None where there is none, child).

    Items of dicts, lists, tuples and sets; an object's own attributes (its ``__dict__``, not
    properties: reading one may run code). Strings, numbers and the like have none.
    """
    found: Iterable[tuple[str, str | None, object]]
    try:
        if isinstance(value, dict):
            found = ((repr(k), f"[{k!r}]", v) for k, v in list(value.items()))
        elif isinstance(value, (list, tuple)):
            found = ((str(i), f"[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, (set, frozenset)):
            found = ((str(i), None, v) for i, v in enumerate(list(value)))
        elif isinstance(value, (str, bytes, bytearray, int, float, complex, bool, type)) or (
            value is None or _is_module(value)
        ):
            return []
        else:
            found = (
                (name, f".{name}", child)
                for name, child in list(vars(value).items())
                if not name.startswith("_")
            )
        return list(itertools.islice(found, limit))
    except (TypeError, RuntimeError):  # no __dict__; changed size while listed
        return []


def _is_module(value: object) -> bool:
    return type(value).__name__ == "module"


def _is_plumbing(name: str, value: object) -> bool:
    # IPython's own entries in the user namespace, and modules (what ipykernel hides too).
    return name in {"In", "Out", "get_ipython", "exit", "quit", "open"} or _is_module(value)
