"""What a notebook user touches: widgets and comms, plots, fd-level output, magics, stdin."""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from pathlib import Path

from tests.kernel.conftest import (
    TIMEOUT,
    Kernel,
    merge_streams,
    outputs,
    start_kernel,
    stop_kernel,
    stream_text,
)


def ok(kernel: Kernel, code: str, **kwargs: object) -> list[dict]:
    reply, msgs = kernel.execute(code, **kwargs)
    assert reply["content"]["status"] == "ok", reply["content"]
    return msgs


def result_text(msgs: list[dict]) -> str:
    [result] = outputs(msgs, "execute_result")
    return str(result["content"]["data"]["text/plain"])


def send_comm(
    kernel: Kernel, msg_type: str, content: dict, buffers: list[bytes] | None = None
) -> str:
    msg = kernel.kc.session.msg(msg_type, content)
    kernel.kc.shell_channel.send(msg) if not buffers else kernel.kc.session.send(
        kernel.kc.shell_channel.socket, msg, buffers=buffers
    )
    return str(msg["header"]["msg_id"])


# -- comms and widgets -------------------------------------------------------------------------


def test_comm_round_trip_with_buffers_both_ways(kernel: Kernel) -> None:
    ok(
        kernel,
        "import comm\n"
        "received = []\n"
        "def on_open(c, msg):\n"
        "    received.append(('open', msg['content']['data']))\n"
        "    def on_msg(msg):\n"
        "        received.append(('msg', msg['content']['data'], [bytes(b) for b in msg['buffers']]))\n"
        "        c.send({'echo': msg['content']['data']}, buffers=[b'\\x00kernel'])\n"
        "    c.on_msg(on_msg)\n"
        "comm.get_comm_manager().register_target('echo', on_open)",
    )
    comm_id = uuid.uuid4().hex
    send_comm(kernel, "comm_open", {"comm_id": comm_id, "target_name": "echo", "data": {"hi": 1}})
    msg_id = send_comm(
        kernel, "comm_msg", {"comm_id": comm_id, "data": {"n": 2}}, buffers=[b"\x01frontend"]
    )
    echo = kernel.iopub_until(msg_id, lambda m: m["msg_type"] == "comm_msg")[-1]
    assert echo["content"] == {"data": {"echo": {"n": 2}}, "comm_id": comm_id}
    assert [bytes(b) for b in echo["buffers"]] == [b"\x00kernel"]
    msgs = ok(kernel, "received")
    assert result_text(msgs) == "[('open', {'hi': 1}), ('msg', {'n': 2}, [b'\\x01frontend'])]"
    reply = kernel.reply(kernel.shell_send("comm_info_request", {"target_name": "echo"}))
    assert reply["content"]["comms"] == {comm_id: {"target_name": "echo"}}


def test_comm_callback_error_is_shown_not_swallowed(kernel: Kernel) -> None:
    ok(
        kernel,
        "import comm\n"
        "def on_open(c, msg):\n"
        "    c.on_msg(lambda msg: 1 / 0)\n"
        "comm.get_comm_manager().register_target('broken', on_open)",
    )
    comm_id = uuid.uuid4().hex
    send_comm(kernel, "comm_open", {"comm_id": comm_id, "target_name": "broken", "data": {}})
    msg_id = send_comm(kernel, "comm_msg", {"comm_id": comm_id, "data": {}})
    error = kernel.iopub_until(msg_id, lambda m: m["msg_type"] == "error")[-1]
    assert error["content"]["ename"] == "ZeroDivisionError"
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["content"]["traceback"]))
    assert "/trikernel/" not in shown  # the kernel's frame that called the callback
    assert "lambda msg: 1 / 0" in shown
    assert kernel.execute("1+1")[0]["content"]["status"] == "ok"


def test_a_comm_message_during_a_cell_is_idle_at_once(kernel: Kernel) -> None:
    # The widget case: a cell awaits while the frontend sends comm messages. ipywidgets sends
    # a widget's next change only once the idle of the one before has come (its message
    # throttle): each must be idle while the cell still awaits, or the second never comes.
    ok(
        kernel,
        "import comm, trio\n"
        "changes, enough = [], trio.Event()\n"
        "def on_open(c, msg):\n"
        "    def on_msg(msg):\n"
        "        changes.append(msg['content']['data']['n'])\n"
        "        if len(changes) == 2:\n"
        "            enough.set()\n"
        "    c.on_msg(on_msg)\n"
        "comm.get_comm_manager().register_target('poke', on_open)",
    )
    cell = kernel.kc.execute("await enough.wait()\nchanges")
    kernel.started(cell)
    comm_id = uuid.uuid4().hex
    send_comm(kernel, "comm_open", {"comm_id": comm_id, "target_name": "poke", "data": {}})
    first = send_comm(kernel, "comm_msg", {"comm_id": comm_id, "data": {"n": 1}})
    kernel.until_idle(first)  # the cell still awaits the second
    send_comm(kernel, "comm_msg", {"comm_id": comm_id, "data": {"n": 2}})
    assert kernel.reply(cell)["content"]["status"] == "ok"
    [result] = outputs(kernel.until_idle(cell), "execute_result")
    assert result["content"]["data"]["text/plain"] == "[1, 2]"


def _widget_comm_id(msgs: list[dict], model: str) -> str:
    for m in outputs(msgs, "comm_open"):
        if m["content"]["data"]["state"].get("_model_name") == model:
            return str(m["content"]["comm_id"])
    raise AssertionError(f"no comm_open for {model}")


def _set_value_from_frontend(kernel: Kernel, comm_id: str, value: int) -> str:
    return send_comm(
        kernel,
        "comm_msg",
        {
            "comm_id": comm_id,
            "data": {"method": "update", "state": {"value": value}, "buffer_paths": []},
        },
    )


def test_ipywidgets_slider_both_ways(kernel: Kernel) -> None:
    msgs = ok(kernel, "import ipywidgets\nslider = ipywidgets.IntSlider(value=1)")
    comm_id = _widget_comm_id(msgs, "IntSliderModel")
    update = _set_value_from_frontend(kernel, comm_id, 7)
    kernel.until_idle(update)
    assert result_text(ok(kernel, "slider.value")) == "7"
    msgs = ok(kernel, "slider.value = 42")
    [change] = [m for m in outputs(msgs, "comm_msg") if m["content"]["comm_id"] == comm_id]
    assert change["content"]["data"]["method"] == "update"
    assert change["content"]["data"]["state"] == {"value": 42}


def test_cell_awaiting_a_widget_change_completes(kernel: Kernel) -> None:
    """ipykernel issue 646: a cell that awaits a widget deadlocks there; here it completes."""
    cell = kernel.kc.execute(
        "import ipywidgets, trio\n"
        "knob = ipywidgets.IntSlider(value=0)\n"
        "changed = trio.Event()\n"
        "knob.observe(lambda change: changed.set(), names='value')\n"
        "await changed.wait()\n"
        "print('knob is now', knob.value)"
    )
    opened = kernel.iopub_until(
        cell,
        lambda m: (
            m["msg_type"] == "comm_open"
            and m["content"]["data"]["state"].get("_model_name") == "IntSliderModel"
        ),
    )
    comm_id = _widget_comm_id(opened, "IntSliderModel")
    _set_value_from_frontend(kernel, comm_id, 5)
    reply = kernel.reply(cell)
    assert reply["content"]["status"] == "ok"
    assert stream_text(kernel.until_idle(cell)) == "knob is now 5\n"


def _output_widget_events(msgs: list[dict], comm_id: str) -> list[str]:
    """What an Output widget's frontend sees: its capture switched on (for a request's msg_id)
    and off, and the text around it."""
    events = []
    for m in merge_streams(msgs):
        if m["msg_type"] == "stream":
            events.append(m["content"]["text"])
        elif m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id:
            state = m["content"]["data"].get("state", {})
            if "msg_id" in state:
                events.append(f"capture {state['msg_id'] or 'off'}")
    return events


def test_output_widget_captures_a_cell_and_a_callback(kernel: Kernel) -> None:
    # The frontend puts output whose parent is the widget's msg_id into the widget; the
    # widget takes that id from the kernel's current request (ipykernel's get_parent).
    msg_id = kernel.kc.execute(
        "import comm, ipywidgets\n"
        "out = ipywidgets.Output()\n"
        "with out:\n"
        "    print('inside')\n"
        "print('outside')\n"
        "def on_open(c, msg):\n"
        "    @c.on_msg\n"
        "    @out.capture()\n"
        "    def on_msg(msg):\n"
        "        print('in the callback')\n"
        "comm.get_comm_manager().register_target('capture', on_open)"
    )
    assert kernel.reply(msg_id)["content"]["status"] == "ok"
    msgs = kernel.until_idle(msg_id)
    comm_id = _widget_comm_id(msgs, "OutputModel")
    assert _output_widget_events(msgs, comm_id) == [
        f"capture {msg_id}",
        "inside\n",
        "capture off",
        "outside\n",
    ]
    target = uuid.uuid4().hex
    send_comm(kernel, "comm_open", {"comm_id": target, "target_name": "capture", "data": {}})
    callback = send_comm(kernel, "comm_msg", {"comm_id": target, "data": {}})
    assert _output_widget_events(kernel.until_idle(callback), comm_id) == [
        f"capture {callback}",
        "in the callback\n",
        "capture off",
    ]


# -- display and plots ---------------------------------------------------------------------


def test_libraries_publish_as_on_ipykernel(kernel: Kernel) -> None:
    # The call some libraries make to show something: ipykernel's send_response on iopub.
    msgs = ok(
        kernel,
        "k = get_ipython().kernel\n"
        "print('before')\n"
        "k.send_response(k.iopub_socket, 'display_data',\n"
        "                {'data': {'text/plain': 'sent'}, 'metadata': {}})",
    )
    shown = [m["msg_type"] for m in msgs if m["msg_type"] in ("stream", "display_data")]
    assert shown == ["stream", "display_data"]
    [display] = outputs(msgs, "display_data")
    assert display["content"]["data"] == {"text/plain": "sent"}
    reply, _ = kernel.execute("k.send_response(object(), 'stream', {})")
    assert reply["content"]["ename"] == "ValueError"


def test_matplotlib_inline_by_default(kernel: Kernel) -> None:
    msgs = ok(kernel, "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nNone")
    [figure] = outputs(msgs, "display_data")
    png = base64.b64decode(figure["content"]["data"]["image/png"])
    assert png.startswith(b"\x89PNG")


def test_figures_shown_in_a_loop_appear_in_order(kernel: Kernel) -> None:
    msgs = ok(
        kernel,
        "%matplotlib inline\n"
        "import matplotlib.pyplot as plt\n"
        "for i in range(3):\n"
        "    plt.figure(figsize=(1 + i, 1))\n"
        "    print('figure', i)\n"
        "    plt.show()",
    )
    kinds = [
        (m["msg_type"], m["content"].get("text"))
        for m in merge_streams(outputs(msgs, "stream", "display_data"))
    ]
    assert kinds == [
        ("stream", "figure 0\n"),
        ("display_data", None),
        ("stream", "figure 1\n"),
        ("display_data", None),
        ("stream", "figure 2\n"),
        ("display_data", None),
    ]


def test_rich_reprs_and_metadata(kernel: Kernel) -> None:
    msgs = ok(
        kernel,
        "class Rich:\n"
        "    def _repr_html_(self): return '<b>rich</b>'\n"
        "    def _repr_markdown_(self): return '**rich**'\n"
        "    def _repr_latex_(self): return r'$\\rho$'\n"
        "class Bundle:\n"
        "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
        "        return {'text/plain': 'bundle', 'application/json': {'a': 1}}, {'application/json': {'expanded': True}}\n"
        "display(Rich(), Bundle())",
    )
    rich, bundle = outputs(msgs, "display_data")
    assert rich["content"]["data"]["text/html"] == "<b>rich</b>"
    assert rich["content"]["data"]["text/markdown"] == "**rich**"
    assert rich["content"]["data"]["text/latex"] == "$\\rho$"
    assert bundle["content"]["data"]["application/json"] == {"a": 1}
    assert bundle["content"]["metadata"] == {"application/json": {"expanded": True}}


# -- output at the file-descriptor level --------------------------------------------------


def test_fd_level_output_reaches_the_cell_in_order(kernel: Kernel) -> None:
    msgs = ok(
        kernel,
        "import os, subprocess, sys, ctypes\n"
        "print('python first', flush=True)\n"
        "os.write(1, b'fd second\\n')\n"
        "subprocess.run(['echo', 'child third'], check=True)\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.printf(b'C fourth\\n'); libc.fflush(None)\n"
        "os.write(2, b'fd stderr\\n')",
    )
    assert stream_text(msgs) == "python first\nfd second\nchild third\nC fourth\n"
    assert stream_text(msgs, "stderr") == "fd stderr\n"


def test_fd_level_output_comes_before_what_the_cell_shows_next(kernel: Kernel) -> None:
    # Text written to a descriptor is read from a pipe, not queued as it is written: the
    # display, result and error right after it must not overtake it.
    msgs = ok(
        kernel,
        "import os\n"
        "os.write(1, b'before the display\\n')\n"
        "display('shown')\n"
        "os.write(1, b'before the result\\n')",
    )
    shown = [
        m["content"].get("text") or m["content"]["data"]["text/plain"]
        for m in merge_streams(msgs)
        if m["msg_type"] in ("stream", "display_data", "execute_result")
    ]
    assert shown == ["before the display\n", "'shown'", "before the result\n", "18"]
    reply, msgs = kernel.execute("os.write(2, b'before the error\\n'); 1 / 0")
    assert reply["content"]["ename"] == "ZeroDivisionError"
    assert [m["msg_type"] for m in msgs if m["msg_type"] in ("stream", "error")] == [
        "stream",
        "error",
    ]


def test_a_cell_alternating_stdout_and_stderr_sends_few_messages(kernel: Kernel) -> None:
    # One message per write (20,000 here) left frontends seconds behind, and papermill and
    # nbconvert timed out waiting for the cell's output; ipykernel sent 2 to 4.
    msgs = ok(
        kernel,
        "import sys\nfor i in range(10_000):\n"
        "    print('out', i)\n    print('err', i, file=sys.stderr)",
    )
    streams = outputs(msgs, "stream")
    assert len(streams) < 500, f"{len(streams)} stream messages"
    for name, word in (("stdout", "out"), ("stderr", "err")):
        expected = "".join(f"{word} {i}\n" for i in range(10_000))
        assert stream_text(msgs, name) == expected  # all of it, in order


def test_a_pool_or_a_thread_left_running_does_not_hold_the_kernels_exit(
    fresh_kernel: Kernel,
) -> None:
    # The kernel ends what its cells started with a SIGTERM to its process group. Sent before
    # multiprocessing's exit handler ran, it could end a worker holding the pool's lock, and
    # that handler then waited for ever; sent only at exit, after Python joins the cells'
    # threads, a thread waiting on a subprocess waited for ever. (wait_exit: status 0.)
    ok(
        fresh_kernel,
        "import multiprocessing, subprocess, threading\n"
        "pool = multiprocessing.Pool(2)\npool.map(abs, [-1])\n"
        "threading.Thread(target=subprocess.run, args=(['sleep', '1000'],)).start()",
    )
    reply = fresh_kernel.reply(fresh_kernel.control("shutdown_request"), "control")
    assert reply["content"]["status"] == "ok"
    fresh_kernel.wait_exit()


def test_forked_workers_print_to_the_cell_in_whole_lines(kernel: Kernel) -> None:
    # multiprocessing's "fork" workers (Linux's default before Python 3.14) have a copy of the
    # kernel's streams but no loop to send them: their lines go through the descriptors.
    msgs = ok(
        kernel,
        "import multiprocessing\n"
        "def work(x):\n"
        "    print('worker', x, 'of', 'eight')\n"
        "    print('partial', x, end='', flush=True)\n"
        "    return x\n"
        "with multiprocessing.get_context('fork').Pool(4) as pool:\n"
        "    done = pool.map(work, range(8))",
    )
    text = stream_text(msgs)
    # Every line whole (a worker writes each in one piece), and every flushed partial line.
    assert sorted(re.findall(r"worker \d of eight\n", text)) == [
        f"worker {x} of eight\n" for x in range(8)
    ]
    assert sorted(re.findall(r"partial \d", text)) == [f"partial {x}" for x in range(8)]
    # The SIGTERM that ends the pool's workers ends them as it ends any Python process; it
    # used to run the kernel's own shutdown in each (a KeyboardInterrupt traceback apiece).
    assert "Traceback" not in stream_text(msgs, "stderr")
    # A child that displays (the kernel's socket is not its to use) leaves the kernel working.
    msgs = ok(
        kernel,
        "import os\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    display('from the child'); print('child line', flush=True); os._exit(0)\n"
        "os.waitpid(pid, 0)[1]",
    )
    assert "child line\n" in stream_text(msgs)
    assert not outputs(msgs, "display_data")
    assert result_text(ok(kernel, "40 + 2")) == "42"


# -- magics and shell commands ------------------------------------------------------------


def test_shell_commands_stream_while_they_run(kernel: Kernel) -> None:
    msg_id = kernel.kc.execute("!echo first; sleep 0.5; echo second")
    first = kernel.iopub_until(msg_id, lambda m: m["msg_type"] == "stream")[-1]
    assert first["content"]["text"].strip() == "first"
    assert kernel.reply(msg_id)["content"]["status"] == "ok"
    rest = kernel.until_idle(msg_id)
    if "second" not in stream_text(rest):
        # Seen once in CI, not reproduced in 2,100 runs since: say whether the command ended
        # early (IPython's `system` swallows a KeyboardInterrupt and ends the command with ^C)
        # or its output went missing in the kernel.
        code = result_text(ok(kernel, "_exit_code"))
        raise AssertionError(f"no 'second': exit code {code}; iopub after 'first': {rest}")
    assert stream_text(ok(kernel, "%%bash\necho from bash")) == "from bash\n"


def test_git_log_in_a_shell_command_does_not_wait_in_a_pager(tmp_path: Path) -> None:
    # `!cmd` runs on a pseudo-terminal, so git starts the pager the environment names, which
    # waited for keys that never come (`!git log` hung in less). As in ipykernel, the kernel
    # sets PAGER and GIT_PAGER to cat.
    waits_for_a_key = "sh -c 'cat > /dev/null; read key'"
    env = {**os.environ, "TERM": "xterm", "PAGER": waits_for_a_key, "GIT_PAGER": waits_for_a_key}
    k = start_kernel({"env": env})
    try:
        repo = tmp_path / "repo"
        ok(
            k,
            f"!git init -q {repo} && git -C {repo} -c user.name=t -c user.email=t@t"
            " commit -q --allow-empty -m 'the first commit'",
        )
        assert "the first commit" in stream_text(ok(k, f"!git -C {repo} log"))
    finally:
        stop_kernel(k)


def test_magics(kernel: Kernel, tmp_path: object) -> None:
    assert "Wall time" in stream_text(ok(kernel, "%time sum(range(10))"))
    assert "per loop" in stream_text(ok(kernel, "%timeit -n1 -r1 sum(range(10))"))
    assert stream_text(ok(kernel, "%%capture captured\nprint('hidden')")) == ""
    assert result_text(ok(kernel, "captured.stdout")) == "'hidden\\n'"
    ok(kernel, "who_marker = 1")
    assert "who_marker" in stream_text(ok(kernel, "%who"))
    assert (
        result_text(ok(kernel, "%env TRIKERNEL_T=yes\nimport os; os.environ['TRIKERNEL_T']"))
        == "'yes'"
    )
    cwd = result_text(ok(kernel, f"%cd {tmp_path}\nimport os; os.getcwd()"))
    assert str(tmp_path) in cwd
    # %pip runs pip with the kernel's own interpreter: its version line names that location.
    pip_version = stream_text(ok(kernel, "%pip --version"))
    assert pip_version.startswith("pip ")
    assert "site-packages" in pip_version
    source = tmp_path / "snippet.py"  # type: ignore[operator]
    source.write_text("x_loaded = 1\n")
    reply, _ = kernel.execute(f"%load {source}")
    [payload] = reply["content"]["payload"]
    assert payload["source"] == "set_next_input"
    assert "x_loaded = 1" in payload["text"]
    reply, _ = kernel.execute("len??")
    assert [p["source"] for p in reply["content"]["payload"]] == ["page"]


def usage_error(kernel: Kernel, code: str) -> str:
    """The message of the UsageError ``code`` fails with (printed on stderr, as IPython does)."""
    reply, msgs = kernel.execute(code)
    assert reply["content"]["status"] == "error", reply["content"]
    assert reply["content"]["ename"] == "UsageError", reply["content"]
    text = stream_text(msgs, "stderr")
    assert text.startswith("UsageError: "), msgs
    return text


def test_ipykernel_magics_notebooks_use(kernel: Kernel, tmp_path: Path) -> None:
    # %connect_info: the JSON a frontend needs (the ports and key this client uses), the file.
    text = stream_text(ok(kernel, "%connect_info"))
    info = json.loads(text[: text.index("\n}\n") + 2])
    mine = kernel.kc.get_connection_info()
    for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port", "ip"):
        assert info[name] == mine[name]
    assert info["key"] == mine["key"].decode()
    assert f"--existing {kernel.km.connection_file}" in text
    # %less / %more page a file through a payload; %less of what is not there is a UsageError.
    notes = tmp_path / "notes.txt"
    notes.write_text("line one\nline two\n")
    for magic in ("less", "more"):
        reply, _ = kernel.execute(f"%{magic} {notes}")
        [page] = reply["content"]["payload"]
        assert page["source"] == "page"
        assert page["data"]["text/plain"] == "line one\nline two\n"
    assert "cannot read" in usage_error(kernel, f"%less {tmp_path / 'missing.txt'}")
    assert "needs a file name" in usage_error(kernel, "%less")
    # %man: no topic, or one man does not know (or no man at all), is a UsageError.
    assert "needs a topic" in usage_error(kernel, "%man")
    usage_error(kernel, "%man no_such_topic_trikernel")
    # %edit (and %ed) ask the frontend to open the file; nothing blocks on an editor.
    script = tmp_path / "script.py"
    script.write_text("x = 1\n")
    for magic in ("edit", "ed"):
        reply, _ = kernel.execute(f"%{magic} -n 1 {script}")
        assert reply["content"]["status"] == "ok", reply["content"]
        [edit] = reply["content"]["payload"]
        assert edit == {"source": "edit_magic", "filename": str(script), "line_number": "1"}
    assert "option -z not recognized" in usage_error(kernel, "%edit -z x")
    # %clear clears a terminal frontend's screen.
    assert stream_text(ok(kernel, "%clear")) == "\x1b[H\x1b[2J"
    # %autosave: the classic notebook's call (guarded elsewhere), and what it did.
    msgs = ok(kernel, "%autosave 0")
    [script_out] = outputs(msgs, "display_data")
    assert "set_autosave_interval(0)" in script_out["content"]["data"]["application/javascript"]
    assert stream_text(msgs).startswith("Autosave off in the classic notebook")
    assert "whole number of seconds" in usage_error(kernel, "%autosave soon")
    # %qtconsole: bad arguments are refused before anything starts; here qtconsole is absent.
    assert "No closing quotation" in usage_error(kernel, '%qtconsole --style "monokai')
    assert "qtconsole is not installed" in usage_error(kernel, "%qtconsole")


# -- stdin -----------------------------------------------------------------------------------


def test_getpass_sets_the_password_flag(kernel: Kernel) -> None:
    msg_id = kernel.kc.execute(
        "import getpass\nsecret = getpass.getpass('pin: ')", allow_stdin=True
    )
    request = kernel.kc.get_stdin_msg(timeout=TIMEOUT)
    assert request["content"] == {"prompt": "pin: ", "password": True}
    kernel.kc.input("1234")
    assert kernel.reply(msg_id)["content"]["status"] == "ok"
    assert result_text(ok(kernel, "secret")) == "'1234'"


def test_input_inside_an_async_cell(kernel: Kernel) -> None:
    reply, _ = kernel.execute_answering(
        "import trio\nawait trio.sleep(0)\nanswer = input('? ')", "async ok"
    )
    assert reply["content"]["status"] == "ok"
    assert result_text(ok(kernel, "answer")) == "'async ok'"


def test_interrupt_while_waiting_for_input(kernel: Kernel) -> None:
    msg_id = kernel.kc.execute("input('never answered')", allow_stdin=True)
    kernel.kc.get_stdin_msg(timeout=TIMEOUT)
    kernel.reply(kernel.control("interrupt_request"), "control")
    assert kernel.reply(msg_id)["content"]["ename"] == "KeyboardInterrupt"
    kernel.until_idle(msg_id)
    assert kernel.execute("1+1")[0]["content"]["status"] == "ok"


def test_main_loop_serves_while_a_cell_waits_for_input(kernel: Kernel) -> None:
    ok(
        kernel,
        "import comm\n"
        "def on_open(c, msg):\n"
        "    c.on_msg(lambda msg: c.send({'pong': msg['content']['data']}))\n"
        "comm.get_comm_manager().register_target('ping', on_open)",
    )
    comm_id = uuid.uuid4().hex
    send_comm(kernel, "comm_open", {"comm_id": comm_id, "target_name": "ping", "data": {}})
    cell = kernel.kc.execute("answer = input('go? ')", allow_stdin=True)
    kernel.kc.get_stdin_msg(timeout=TIMEOUT)
    # The sync cell is blocked in input(); the main loop must still handle this comm message.
    ping = send_comm(kernel, "comm_msg", {"comm_id": comm_id, "data": {"n": 1}})
    pong = kernel.iopub_until(ping, lambda m: m["msg_type"] == "comm_msg")[-1]
    assert pong["content"]["data"] == {"pong": {"n": 1}}
    kernel.kc.input("yes")
    assert kernel.reply(cell)["content"]["status"] == "ok"
    kernel.until_idle(cell)
    assert result_text(ok(kernel, "answer")) == "'yes'"


def test_ainput(kernel: Kernel) -> None:
    msg_id = kernel.kc.execute(
        "import trikernel\nreply = await trikernel.ainput('name: ')", allow_stdin=True
    )
    request = kernel.kc.get_stdin_msg(timeout=TIMEOUT)
    assert request["content"] == {"prompt": "name: ", "password": False}
    kernel.kc.input("anyone")
    assert kernel.reply(msg_id)["content"]["status"] == "ok"
    assert result_text(ok(kernel, "reply")) == "'anyone'"
    reply, _ = kernel.execute("await trikernel.ainput('x')", allow_stdin=False)
    assert reply["content"]["ename"] == "StdinNotImplementedError"


def test_history_persists_across_kernel_restarts() -> None:
    from tests.kernel.conftest import start_kernel, stop_kernel

    marker = f"history_marker_{uuid.uuid4().hex[:8]}"
    first = start_kernel()
    try:
        first.execute(f"{marker} = 6 * 7\n{marker}")
        first.reply(first.control("shutdown_request"), "control")
        first.wait_exit()
    finally:
        stop_kernel(first)
    second = start_kernel()
    try:
        msg_id = second.kc.history(
            hist_access_type="search", pattern=f"{marker}*", output=True, raw=True, n=1
        )
        [entry] = second.reply(msg_id)["content"]["history"]
        _session, _line, (source, output) = entry
        assert source == f"{marker} = 6 * 7\n{marker}"
        assert output == "42"
        tail = second.reply(second.kc.history(hist_access_type="tail", n=5, raw=True))
        assert any(marker in e[2] for e in tail["content"]["history"])
    finally:
        stop_kernel(second)
