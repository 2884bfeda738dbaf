"""Trio-native notebooks: one loop for every cell, background tasks, cancellation, deadlines."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from tests.kernel.conftest import Kernel, outputs, stream_text


def result_text(msgs: list[dict]) -> str:
    [result] = outputs(msgs, "execute_result")
    return str(result["content"]["data"]["text/plain"])


def ok(kernel: Kernel, code: str, **kwargs: object) -> list[dict]:
    reply, msgs = kernel.execute(code, **kwargs)
    assert reply["content"]["status"] == "ok", reply["content"]
    return msgs


def test_await_on_the_kernels_own_loop(kernel: Kernel) -> None:
    ok(kernel, "import trio, sniffio, anyio\nloop_token = trio.lowlevel.current_trio_token()")
    msgs = ok(
        kernel, "await trio.sleep(0.01)\nawait anyio.sleep(0)\nsniffio.current_async_library()"
    )
    assert result_text(msgs) == "'trio'"
    # The same loop in a later cell: per-cell trio.run would give a new token every time.
    assert result_text(ok(kernel, "trio.lowlevel.current_trio_token() is loop_token")) == "True"


def test_memory_channel_lives_across_cells(kernel: Kernel) -> None:
    ok(kernel, "send, receive = trio.open_memory_channel(0)")
    # An unbuffered channel: the send only completes when another task receives.
    ok(
        kernel,
        "import trikernel\nreceived = []\n"
        "async def collect():\n    async for item in receive:\n        received.append(item)\n"
        "trikernel.background.start_soon(collect)",
    )
    msgs = ok(kernel, "await send.send('across cells')\nawait trio.sleep(0)\nreceived")
    assert result_text(msgs) == "['across cells']"
    ok(kernel, "trikernel.background.cancel('collect')")


def test_tcp_stream_to_a_local_server_across_cells(kernel: Kernel) -> None:
    ok(
        kernel,
        "import functools, trikernel\n"
        "async def serve_echo(stream):\n"
        "    async for data in stream:\n"
        "        await stream.send_all(data.upper())\n"
        "listeners = await trio.open_tcp_listeners(0, host='127.0.0.1')\n"
        "port = listeners[0].socket.getsockname()[1]\n"
        "trikernel.background.start_soon(functools.partial(trio.serve_listeners, serve_echo, listeners), name='echo-server')",
    )
    ok(kernel, "client = await trio.open_tcp_stream('127.0.0.1', port)")
    msgs = ok(kernel, "await client.send_all(b'hello')\nawait client.receive_some(5)")
    assert result_text(msgs) == "b'HELLO'"
    ok(kernel, "await client.aclose()\ntrikernel.background.cancel('echo-server')")


def test_event_set_from_a_later_cell_releases_a_task_of_an_earlier_one(kernel: Kernel) -> None:
    first = kernel.kc.execute(
        "import trikernel\n"
        "gate = trio.Event()\n"
        "async def waiter():\n"
        "    await gate.wait()\n"
        "    print('released')\n"
        "trikernel.background.start_soon(waiter)"
    )
    kernel.reply(first)
    kernel.until_idle(first)
    kernel.kc.execute("gate.set()")
    # The waiter's output belongs to the cell that started it, not to the one that set the event.
    msgs = kernel.collect(
        lambda ms: (
            stream_text([m for m in ms if m["parent_header"].get("msg_id") == first])
            == "released\n"
        )
    )
    assert "released" not in stream_text(
        [m for m in msgs if m["parent_header"].get("msg_id") != first]
    )


def test_nursery_inside_a_cell(kernel: Kernel) -> None:
    code = (
        "order = []\n"
        "async def child(name, delay):\n"
        "    await trio.sleep(delay)\n"
        "    order.append(name)\n"
        "async with trio.open_nursery() as n:\n"
        "    n.start_soon(child, 'slow', 0.05)\n"
        "    n.start_soon(child, 'fast', 0.0)\n"
        "order"
    )
    assert result_text(ok(kernel, code)) == "['fast', 'slow']"


def test_background_task_ticks_while_idle_and_its_output_goes_where_a_threads_does(
    kernel: Kernel,
) -> None:
    start = kernel.kc.execute(
        "import trikernel, trio\n"
        "ticks = 0\n"
        "async def ticker():\n"
        "    global ticks\n"
        "    while True:\n"
        "        ticks += 1\n"
        "        print('tick', ticks)\n"
        "        await trio.sleep(0.01)\n"
        "trikernel.background.start_soon(ticker)"
    )
    kernel.reply(start)
    kernel.until_idle(start)
    # While the kernel is idle, the ticks go to the cell that started the task.
    kernel.iopub_until(
        start, lambda m: m["msg_type"] == "stream" and "tick" in m["content"]["text"]
    )
    # A later cell observes the count growing (waiting on state), and the ticks printed while
    # it runs go to it, as a thread's do (see the thread test below).
    reply, later = kernel.execute(
        "seen = ticks\nwith trio.fail_after(10):\n    while ticks < seen + 5:\n        await trio.sleep(0.005)\n'ticking'"
    )
    assert reply["content"]["status"] == "ok"
    assert result_text(later) == "'ticking'"
    assert "tick" in stream_text(later)
    msgs = ok(kernel, "%tasks")
    assert "ticker" in stream_text(msgs)
    assert "running" in stream_text(msgs)
    msgs = ok(kernel, "%cancel ticker")
    assert "cancelled background task 'ticker'" in stream_text(msgs)
    msgs = ok(
        kernel, "await trio.sleep(0)\n[t.state for t in trikernel.background if t.name == 'ticker']"
    )
    assert result_text(msgs) == "['cancelled']"


def test_failing_background_task_is_reported_and_harms_nothing(kernel: Kernel) -> None:
    ok(
        kernel,
        "import trikernel\n"
        "beats = 0\n"
        "async def heart():\n"
        "    global beats\n"
        "    while True:\n"
        "        beats += 1\n"
        "        await trio.sleep(0.005)\n"
        "trikernel.background.start_soon(heart)",
    )
    fail = kernel.kc.execute(
        "failed = trio.Event()\n"
        "async def broken():\n"
        "    try:\n"
        "        raise ValueError('background boom')\n"
        "    finally:\n"
        "        failed.set()\n"
        "trikernel.background.start_soon(broken)"
    )
    assert kernel.reply(fail)["content"]["status"] == "ok"
    error = kernel.iopub_until(fail, lambda m: m["msg_type"] == "error")[-1]
    assert error["content"]["ename"] == "ValueError"
    assert error["content"]["evalue"] == "background boom"
    # The sibling still beats, a running cell is unaffected, and the kernel answers.
    msgs = ok(
        kernel,
        "await failed.wait()\nb = beats\nwith trio.fail_after(10):\n    while beats < b + 3:\n        await trio.sleep(0.005)\n'alive'",
    )
    assert result_text(msgs) == "'alive'"
    ok(kernel, "trikernel.background.cancel('heart')")


def test_interrupt_cancels_nested_nursery_but_not_background_tasks(kernel: Kernel) -> None:
    ok(
        kernel,
        "import trikernel\n"
        "pulse = 0\n"
        "async def pulser():\n"
        "    global pulse\n"
        "    while True:\n"
        "        pulse += 1\n"
        "        await trio.sleep(0.005)\n"
        "trikernel.background.start_soon(pulser)",
    )
    cell = kernel.kc.execute(
        "cleaned = []\n"
        "children_started = trio.Event()\n"
        "async def child(name):\n"
        "    try:\n"
        "        children_started.set()\n"
        "        await trio.sleep(60)\n"
        "    finally:\n"
        "        cleaned.append(name)\n"
        "async with trio.open_nursery() as n:\n"
        "    n.start_soon(child, 'a')\n"
        "    n.start_soon(child, 'b')\n"
        "    await children_started.wait()\n"
        "    print('children running', flush=True)\n"
        "    await trio.sleep(60)"
    )
    kernel.iopub_until(cell, lambda m: m["msg_type"] == "stream")
    kernel.reply(kernel.control("interrupt_request"), "control")
    reply = kernel.reply(cell)
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    kernel.until_idle(cell)
    assert result_text(ok(kernel, "sorted(cleaned)")) == "['a', 'b']"
    msgs = ok(
        kernel,
        "p = pulse\nwith trio.fail_after(10):\n    while pulse < p + 3:\n        await trio.sleep(0.005)\n'pulsing'",
    )
    assert result_text(msgs) == "'pulsing'"
    ok(kernel, "trikernel.background.cancel('pulser')")


def test_shielded_cell_replies_only_when_it_stopped(kernel: Kernel) -> None:
    cell = kernel.kc.execute(
        "shield_done = False\n"
        "with trio.CancelScope(shield=True):\n"
        "    print('shielded', flush=True)\n"
        "    await trio.sleep(0.3)\n"
        "    shield_done = True\n"
        "await trio.sleep(60)"
    )
    kernel.iopub_until(cell, lambda m: m["msg_type"] == "stream")
    kernel.reply(kernel.control("interrupt_request"), "control")
    assert kernel.reply(cell)["content"]["ename"] == "KeyboardInterrupt"
    kernel.until_idle(cell)
    assert result_text(ok(kernel, "shield_done")) == "True"


def test_timeout_magic_for_awaiting_and_blocking_cells(kernel: Kernel) -> None:
    reply, msgs = kernel.execute("%%timeout 0.2\nawait trio.sleep(30)")
    assert reply["content"]["ename"] == "TimeoutError"
    assert "0.2 s deadline" in reply["content"]["evalue"]
    assert outputs(msgs, "error")
    reply, _ = kernel.execute("%%timeout 0.2\nimport time\ntime.sleep(30)")
    assert reply["content"]["ename"] == "TimeoutError"
    assert "0.2 s deadline" in reply["content"]["evalue"]
    reply, msgs = kernel.execute("%%timeout 5\n40 + 2")
    assert result_text(msgs) == "42"
    reply, _ = kernel.execute("%%timeout soon\n1")
    assert reply["content"]["ename"] == "UsageError"


def test_an_error_in_a_thread_shows_the_users_frames_only(kernel: Kernel) -> None:
    reply, msgs = kernel.execute(
        "import threading\n"
        "def boom():\n"
        "    raise ValueError('in the thread')\n"
        "t = threading.Thread(target=boom); t.start(); t.join()"
    )
    assert reply["content"]["status"] == "ok"
    # Without colours: FORCE_COLOR is set (as ipykernel sets it), and Python 3.13 colours it.
    shown = re.sub(r"\x1b\[[0-9;]*m", "", stream_text(msgs, "stderr"))
    assert "ValueError: in the thread" in shown
    assert "/trikernel/" not in shown  # the frame of the kernel's that carried its context


def test_thread_output_goes_to_its_cell_then_to_the_running_one(kernel: Kernel) -> None:
    # A worker thread a cell started writes to that cell while it runs; after, to the cell
    # running now (a pool's worker does the later cell's work; nbclient keeps a cell's output
    # only until its idle); with no cell running, to its own cell (JupyterLab shows it there).
    started = kernel.kc.execute(
        "import threading, queue, comm\n"
        "jobs, done = queue.Queue(), queue.Queue()\n"
        "def worker():\n"
        "    while (job := jobs.get()) is not None:\n"
        "        print(job)\n"
        "        done.put(job)\n"
        "threading.Thread(target=worker, daemon=True).start()\n"
        "def on_open(c, msg):\n"
        "    c.on_msg(lambda msg: jobs.put(msg['content']['data']['job']))\n"
        "comm.get_comm_manager().register_target('jobs', on_open)\n"
        "jobs.put('in its cell'); done.get(timeout=30)"
    )
    assert kernel.reply(started)["content"]["status"] == "ok"
    assert stream_text(kernel.until_idle(started)) == "in its cell\n"
    later = kernel.kc.execute("jobs.put('in a later cell'); done.get(timeout=30)")
    assert kernel.reply(later)["content"]["status"] == "ok"
    assert stream_text(kernel.until_idle(later)) == "in a later cell\n"
    # Now no cell runs: a comm message (from the frontend, as a widget's) hands out the job.
    comm_id = uuid.uuid4().hex
    for msg_type, content in [
        ("comm_open", {"comm_id": comm_id, "target_name": "jobs", "data": {}}),
        ("comm_msg", {"comm_id": comm_id, "data": {"job": "while idle"}}),
    ]:
        kernel.kc.shell_channel.send(kernel.kc.session.msg(msg_type, content))
    [late] = [
        m
        for m in kernel.collect(
            lambda msgs: any(
                m["msg_type"] == "stream" and m["content"]["text"] == "while idle\n" for m in msgs
            )
        )
        if m["msg_type"] == "stream"
    ]
    assert late["parent_header"]["msg_id"] == started
    ok(kernel, "jobs.put(None)")


def test_trio_traps_have_clear_errors(kernel: Kernel) -> None:
    reply, _ = kernel.execute("async def f(): pass\ntrio.run(f)")
    assert "use `await f()` instead of `trio.run(f)`" in reply["content"]["evalue"]
    reply, _ = kernel.execute("import asyncio\nawait asyncio.sleep(0)")
    assert "the kernel's loop is trio, not asyncio" in reply["content"]["evalue"]
    reply, _ = kernel.execute("trio.from_thread.run_sync(print)")
    assert "`await` the function directly" in reply["content"]["evalue"]


def test_autoawait_reports_trio_and_refuses_others(kernel: Kernel) -> None:
    assert "trio" in stream_text(ok(kernel, "%autoawait"))
    reply, _ = kernel.execute("%autoawait asyncio")
    assert reply["content"]["ename"] == "UsageError"


def test_shutdown_cancels_background_tasks_in_order(fresh_kernel: Kernel, tmp_path: Path) -> None:
    marker = tmp_path / "unwound"
    fresh_kernel.execute(
        "import trio, trikernel\n"
        "async def forever():\n"
        "    try:\n"
        "        await trio.sleep_forever()\n"
        "    finally:\n"
        f"        open({str(marker)!r}, 'w').write('unwound')\n"
        "trikernel.background.start_soon(forever)"
    )
    reply = fresh_kernel.reply(fresh_kernel.control("shutdown_request"), "control")
    assert reply["content"]["status"] == "ok"
    fresh_kernel.wait_exit()
    assert marker.read_text() == "unwound"


def test_deadline_does_not_interrupt_cleanup(kernel: Kernel) -> None:
    reply, msgs = kernel.execute(
        "%%timeout 0.2\n"
        "import time\n"
        "try:\n"
        "    await trio.sleep(5)\n"
        "finally:\n"
        "    time.sleep(0.05)\n"
        "    print('cleaned up')"
    )
    assert reply["content"]["ename"] == "TimeoutError"
    assert stream_text(msgs) == "cleaned up\n"


def test_interrupt_does_not_interrupt_cleanup(kernel: Kernel) -> None:
    cell = kernel.kc.execute(
        "import time\n"
        "try:\n"
        "    print('waiting', flush=True)\n"
        "    await trio.sleep(30)\n"
        "finally:\n"
        "    time.sleep(0.1)\n"
        "    print('cleaned up')"
    )
    kernel.iopub_until(cell, lambda m: m["msg_type"] == "stream")
    kernel.reply(kernel.control("interrupt_request"), "control")
    assert kernel.reply(cell)["content"]["ename"] == "KeyboardInterrupt"
    assert stream_text(kernel.until_idle(cell)) == "cleaned up\n"


def test_blocking_cell_cannot_swallow_its_deadline(kernel: Kernel) -> None:
    reply, _ = kernel.execute(
        "%%timeout 0.2\n"
        "import time\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        time.sleep(0.1)\n"
        "    except Exception:\n"
        "        pass"
    )
    assert reply["content"]["ename"] == "TimeoutError"
    assert "0.2 s deadline" in reply["content"]["evalue"]


def test_timeout_magic_without_seconds(kernel: Kernel) -> None:
    reply, _ = kernel.execute("%%timeout\n1")
    assert reply["content"]["ename"] == "UsageError"
    assert "positive number of seconds" in reply["content"]["evalue"]
