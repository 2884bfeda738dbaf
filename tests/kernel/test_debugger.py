"""The debugger (``debug_request`` on control): what JupyterLab's debugger panel does, over the
wire, against debugpy in the real kernel."""

from __future__ import annotations

import itertools
import os
import select
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.conftest import TIMEOUT, Kernel, stream_text
from trikernel.debugger import murmur2

CODE = "def f(a):\n    b = a + 1\n    return b\n"

_seq = itertools.count(1)


def dap(kernel: Kernel, command: str, **arguments: Any) -> dict[str, Any]:
    """Send one DAP request as a debug_request; its debug_reply's content."""
    content = {"seq": next(_seq), "type": "request", "command": command, "arguments": arguments}
    reply = kernel.reply(kernel.control("debug_request", content), "control")
    assert reply["msg_type"] == "debug_reply"
    assert reply["content"]["request_seq"] == content["seq"]
    return dict(reply["content"])


def ok(response: dict[str, Any]) -> dict[str, Any]:
    assert response["success"], response.get("message")
    return dict(response.get("body") or {})


def debug_event(kernel: Kernel, name: str) -> dict[str, Any]:
    """The next ``debug_event`` named ``name`` on iopub (any request's)."""
    seen = kernel.collect(
        lambda msgs: any(
            m["msg_type"] == "debug_event" and m["content"].get("event") == name for m in msgs
        )
    )
    return dict(seen[-1]["content"])


def start_debugging(kernel: Kernel) -> None:
    """What JupyterLab sends when its debugger is switched on."""
    body = ok(dap(kernel, "initialize", clientID="test", adapterID="python", linesStartAt1=True))
    assert body.get("supportsConfigurationDoneRequest")
    ok(dap(kernel, "attach"))


def test_kernel_info_announces_the_debugger(kernel: Kernel) -> None:
    info = kernel.reply(kernel.control("kernel_info_request"), "control")["content"]
    assert info["debugger"] is True


def test_cells_are_named_as_frontends_name_them(kernel: Kernel) -> None:
    info = ok(dap(kernel, "debugInfo"))
    assert info["hashMethod"] == "Murmur2"
    expected = (
        f"{info['tmpFilePrefix']}{murmur2(CODE.encode(), info['hashSeed'])}{info['tmpFileSuffix']}"
    )
    path = ok(dap(kernel, "dumpCell", code=CODE))["sourcePath"]
    assert path == expected
    assert Path(path).read_text() == CODE
    assert ok(dap(kernel, "source", source={"path": path}))["content"] == CODE
    # A traceback still names the cell the way the notebook shows it.
    reply, msgs = kernel.execute("1/0")
    error = next(m for m in msgs if m["msg_type"] == "error")
    assert f"In[{reply['content']['execution_count']}]" in "".join(error["content"]["traceback"])


def test_bad_debug_requests_get_error_responses(kernel: Kernel) -> None:
    for (command, arguments), error in {
        ("stackTrace", (("threadId", 1),)): "not started",
        ("dumpCell", (("code", 42),)): "'code' must be a string",
        ("richInspectVariables", (("variableName", "nope"),)): "no variable named",
    }.items():
        response = dap(kernel, command, **dict(arguments))
        assert response["success"] is False
        assert error in response["message"]
    reply = kernel.reply(kernel.control("debug_request", {"type": "event"}), "control")
    assert reply["content"]["success"] is False
    # The kernel goes on.
    reply, msgs = kernel.execute("print('still here')")
    assert stream_text(msgs) == "still here\n"


def test_variable_explorer_lists_the_users_globals(kernel: Kernel) -> None:
    kernel.execute("answer = 42\nimport json")
    variables = {v["name"]: v for v in ok(dap(kernel, "inspectVariables"))["variables"]}
    assert variables["answer"]["value"] == "42"
    assert variables["answer"]["type"] == "int"
    assert "json" not in variables  # modules and IPython's own names are left out
    assert "In" not in variables
    rich = ok(dap(kernel, "richInspectVariables", variableName="answer"))
    assert rich["data"]["text/plain"] == "42"


def test_a_breakpoint_in_a_cell_stops_there(fresh_kernel: Kernel) -> None:
    kernel = fresh_kernel
    start_debugging(kernel)
    path = ok(dap(kernel, "dumpCell", code=CODE))["sourcePath"]
    marks = ok(dap(kernel, "setBreakpoints", source={"path": path}, breakpoints=[{"line": 2}]))
    assert marks["breakpoints"][0]["verified"]
    ok(dap(kernel, "configurationDone"))
    kernel.execute(CODE)

    msg_id = kernel.kc.execute("print(f(41))")
    stopped = debug_event(kernel, "stopped")["body"]
    assert stopped["reason"] == "breakpoint"
    thread = stopped["threadId"]

    # The kernel answers while user code is held at the breakpoint.
    info = kernel.reply(kernel.control("kernel_info_request"), "control")
    assert info["content"]["status"] == "ok"
    assert ok(dap(kernel, "debugInfo"))["stoppedThreads"] == [thread]

    frame = ok(dap(kernel, "stackTrace", threadId=thread))["stackFrames"][0]
    assert (frame["source"]["path"], frame["line"], frame["name"]) == (path, 2, "f")
    scopes = ok(dap(kernel, "scopes", frameId=frame["id"]))["scopes"]
    local = ok(dap(kernel, "variables", variablesReference=scopes[0]["variablesReference"]))
    assert {v["name"]: v["value"] for v in local["variables"]} == {"a": "41"}
    rich = ok(dap(kernel, "richInspectVariables", variableName="a", frameId=frame["id"]))
    assert rich["data"]["text/plain"] == "41"

    ok(dap(kernel, "next", threadId=thread))
    stopped = debug_event(kernel, "stopped")["body"]
    frame = ok(dap(kernel, "stackTrace", threadId=stopped["threadId"]))["stackFrames"][0]
    assert frame["line"] == 3

    ok(dap(kernel, "continue", threadId=thread))
    assert kernel.reply(msg_id)["content"]["status"] == "ok"
    assert stream_text(kernel.until_idle(msg_id)) == "42\n"
    info = ok(dap(kernel, "debugInfo"))
    assert info["isStarted"] is True
    assert info["breakpoints"] == [{"source": path, "breakpoints": [{"line": 2}]}]

    # Switched off, the debugger stops nothing, and the kernel runs on.
    ok(dap(kernel, "disconnect", restart=False, terminateDebuggee=False))
    reply, msgs = kernel.execute("print(f(1))")
    assert reply["content"]["status"] == "ok"
    assert stream_text(msgs) == "2\n"


BLANK_FIRST = "\n\nclass Shown:\n    def _repr_html_(self):\n        return '<b>shown</b>'\nitem = Shown()\nlast = 1\n"


def test_what_the_panel_shows_at_a_breakpoint(fresh_kernel: Kernel) -> None:
    """JupyterLab's panel: lines as the cell numbers them, rich values, the variables without
    IPython's own, Copy to Globals, and breakpoints as debugpy placed them."""
    kernel = fresh_kernel
    start_debugging(kernel)
    info = ok(dap(kernel, "debugInfo"))
    assert info["copyToGlobals"] is True  # else JupyterLab hides "Copy to Globals"
    path = ok(dap(kernel, "dumpCell", code=BLANK_FIRST))["sourcePath"]
    # Line 2 is blank: debugpy may move the mark (on Python 3.11 and later it does), and
    # debugInfo (which a frontend reloads its marks from) says where it is.
    marks = ok(dap(kernel, "setBreakpoints", source={"path": path}, breakpoints=[{"line": 2}]))
    placed = marks["breakpoints"][0]["line"]
    ok(dap(kernel, "configurationDone"))
    assert ok(dap(kernel, "debugInfo"))["breakpoints"] == [
        {"source": path, "breakpoints": [{"line": placed}]}
    ]
    # A cell that starts with blank lines stops where the frontend shows the mark, with
    # nothing of the cell run yet (its lines used to be numbered without the blank ones).
    ok(dap(kernel, "setBreakpoints", source={"path": path}, breakpoints=[{"line": 7}]))
    msg_id = kernel.kc.execute(BLANK_FIRST)
    thread = debug_event(kernel, "stopped")["body"]["threadId"]
    frame = ok(dap(kernel, "stackTrace", threadId=thread))["stackFrames"][0]
    assert (frame["source"]["path"], frame["line"]) == (path, 7)
    scopes = ok(dap(kernel, "scopes", frameId=frame["id"]))["scopes"]
    names = {
        v["name"]
        for v in ok(dap(kernel, "variables", variablesReference=scopes[0]["variablesReference"]))[
            "variables"
        ]
    }
    assert "item" in names  # (classes and functions are in groups of their own)
    assert "last" not in names
    assert not names & {"In", "Out", "exit", "quit", "_ih", "_oh", "_dh", "_i", "_"}
    rich = ok(dap(kernel, "richInspectVariables", variableName="item", frameId=frame["id"]))
    assert rich["data"]["text/html"] == "<b>shown</b>"
    copied = ok(
        dap(
            kernel,
            "copyToGlobals",
            srcVariableName="item",
            dstVariableName="copied",
            srcFrameId=frame["id"],
        )
    )
    assert copied["type"] == "Shown"
    ok(dap(kernel, "continue", threadId=thread))
    assert kernel.reply(msg_id)["content"]["status"] == "ok"
    kernel.until_idle(msg_id)
    assert (
        ok(dap(kernel, "richInspectVariables", variableName="copied"))["data"]["text/html"]
        == "<b>shown</b>"
    )
    # With nothing stopped, the explorer's containers and objects still open up.
    kernel.execute("nested = {'a': [1, 2]}")
    assert ok(dap(kernel, "debugInfo"))["stoppedThreads"] == []
    found = {v["name"]: v for v in ok(dap(kernel, "inspectVariables"))["variables"]}
    inside = ok(dap(kernel, "variables", variablesReference=found["nested"]["variablesReference"]))
    [entry] = inside["variables"]
    assert (entry["name"], entry["value"], entry["evaluateName"]) == (
        "'a'",
        "[1, 2]",
        "nested['a']",
    )
    items = ok(dap(kernel, "variables", variablesReference=entry["variablesReference"]))
    assert [v["value"] for v in items["variables"]] == ["1", "2"]
    assert found["item"]["variablesReference"] == 0  # no attributes of its own
    # Switched off and on, it starts with no breakpoints: the frontend sends the ones it wants.
    ok(dap(kernel, "disconnect", restart=False, terminateDebuggee=False))
    start_debugging(kernel)
    assert ok(dap(kernel, "debugInfo"))["breakpoints"] == []


def test_starting_the_debugger_writes_nothing_into_a_cell(fresh_kernel: Kernel) -> None:
    # debugpy warns about frozen modules (Python 3.11+) on stderr when it starts, unless told
    # not to: that text went into the output of the cell run last.
    kernel = fresh_kernel
    kernel.execute("x = 1")
    start_debugging(kernel)
    msg_id = kernel.kc.execute("pass")
    seen = kernel.all_until_idle(msg_id)
    assert [m["content"]["text"] for m in seen if m["msg_type"] == "stream"] == []


@pytest.mark.parametrize("mode", ["message", "signal"])
def test_an_interrupt_at_a_breakpoint_ends_the_cell(fresh_kernel: Kernel, mode: str) -> None:
    kernel = fresh_kernel
    start_debugging(kernel)
    path = ok(dap(kernel, "dumpCell", code=CODE))["sourcePath"]
    ok(dap(kernel, "setBreakpoints", source={"path": path}, breakpoints=[{"line": 2}]))
    ok(dap(kernel, "configurationDone"))
    kernel.execute(CODE)
    msg_id = kernel.kc.execute("f(1)")
    debug_event(kernel, "stopped")
    if mode == "message":
        kernel.reply(kernel.control("interrupt_request"), "control")
    else:
        kernel.km.signal_kernel(signal.SIGINT)
    reply = kernel.reply(msg_id)["content"]
    assert (reply["status"], reply["ename"]) == ("error", "KeyboardInterrupt")
    reply, msgs = kernel.execute("print('alive')")
    assert stream_text(msgs) == "alive\n"
    # The debugger is whole: raised in debugpy's wait at the breakpoint, the KeyboardInterrupt
    # left every later request unanswered (30 s each) until the kernel restarted.
    assert ok(dap(kernel, "debugInfo"))["stoppedThreads"] == []
    assert ok(dap(kernel, "threads"))["threads"]
    msg_id = kernel.kc.execute("f(2)")
    thread = debug_event(kernel, "stopped")["body"]["threadId"]
    frame = ok(dap(kernel, "stackTrace", threadId=thread))["stackFrames"][0]
    assert (frame["name"], frame["line"]) == ("f", 2)
    ok(dap(kernel, "continue", threadId=thread))
    assert kernel.reply(msg_id)["content"]["status"] == "ok"


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs /proc and pidfd (Linux)")
def test_nothing_of_the_debugger_outlives_the_kernel(fresh_kernel: Kernel) -> None:
    kernel = fresh_kernel
    before = _adapters()
    start_debugging(kernel)
    # debugpy's adapter detaches from the kernel (its parent is init): found by its command.
    children = _adapters() - before
    assert children, "debugpy's adapter should be running"
    prefix = ok(dap(kernel, "debugInfo"))["tmpFilePrefix"]
    ok(dap(kernel, "dumpCell", code=CODE))
    kernel.reply(kernel.control("shutdown_request", {"restart": False}), "control")
    kernel.wait_exit()
    deadline = time.monotonic() + TIMEOUT
    for child in children:
        # A pidfd turns readable when its process exits (Linux 5.3+).
        try:
            fd = os.pidfd_open(child)
        except ProcessLookupError:
            continue
        try:
            ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
        finally:
            os.close(fd)
        assert ready, f"process {child} still runs {TIMEOUT} s after the kernel exited"
    assert not Path(prefix).exists(), "the dumped cells should be removed"


def _adapters() -> set[int]:
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:  # not a process, or gone
            continue
        if b"debugpy" in cmdline and b"adapter" in cmdline:
            found.add(int(proc.name))
    return found
