"""The figures: each is one repetition's measurement on one running kernel.

A repetition function takes the kernel (and the run's parameters) and returns its samples. It
raises :class:`NotApplicable` when the kernel cannot do what the figure needs (the table shows
"n/a (...)"), and any other exception when the kernel fails (the table shows "error: ...").
"""

from __future__ import annotations

import collections
import dataclasses
import os
import select
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import psutil
from kernels import Kernel
from wire import Msg, execute_content

START_DELAY = 0.1
"""Seconds between a cell's ``execute_input`` and the interrupt (or control probe) sent to it,
so the cell has surely entered its blocking call."""

IOPUB_READY_TIMEOUT = 10.0
"""Seconds a kernel that answers on shell gets to deliver a status message on iopub."""

STALL = 15.0
"""Seconds without progress after which a pipelined run counts as stalled."""

RSS_SETTLE = 0.5
"""Seconds after the first cell's idle before the kernel's RSS is read."""

COMM_SETUP = """\
import comm as _bench_comm

def _bench_echo_target(c, open_msg):
    c.on_msg(lambda msg: c.send(msg["content"]["data"]))

_bench_comm.get_comm_manager().register_target("echo", _bench_echo_target)
"""

PRINT_100K = "for i in range(100000):\n    print(i)"
PRINT_100K_EXPECTED = "".join(f"{i}\n" for i in range(100000))
WRITE_10MB = "sys.stdout.write('x'*10_000_000)"
WRITE_10MB_SIZE = 10_000_000

INTERRUPT_CELLS = {
    "sleep": "time.sleep(30)",
    "busy": "while True: pass",
    "trio": "await trio.sleep(30)",
}


class NotApplicable(Exception):  # noqa: N818 - it is a verdict, not an error
    """The kernel cannot do what this figure measures; the message says why."""


class IopubSilentError(Exception):
    """The kernel answered kernel_info on shell, but published nothing on iopub after that."""

    def __init__(self, startup_ms: float) -> None:
        super().__init__(f"iopub silent {IOPUB_READY_TIMEOUT:g} s after the kernel_info reply")
        self.startup_ms = startup_ms


class OutputMismatchError(AssertionError):
    """The kernel delivered output that differs from what the cell printed."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Params:
    """How many repetitions of what; ``QUICK`` is the smoke-run variant."""

    startup_reps: int = 10
    execute_batches: int = 10
    execute_batch: int = 50
    error_batches: int = 5
    error_batch: int = 10
    pipelined_reps: int = 10
    pipelined_cells: int = 1000
    stream_reps: int = 10
    """Pipelined and 100k prints: with 5 repetitions, the 95% interval of trikernel's ratio
    to ipykernel spanned 4.9x-6.4x and 0.44x-0.56x on 2 cores, both goals inside."""
    write_reps: int = 30
    """The 10 MB write takes ~20 ms, and with 5 repetitions its median moved between 0.49x and
    0.80x of ipykernel's in runs of one build on 2 cores; 30 cost under 3 s per kernel."""
    comm_reps: int = 5
    comm_msgs: int = 100
    interrupt_reps: int = 10
    control_reps: int = 5
    control_probes: int = 5
    warmup_cells: int = 20
    interrupt_timeout: float = 10.0
    """Seconds an interrupted cell gets to reply before the interrupt counts as failed."""


FULL = Params()
QUICK = Params(
    startup_reps=2,
    execute_batches=2,
    execute_batch=30,
    error_batches=1,
    error_batch=3,
    pipelined_reps=1,
    pipelined_cells=200,
    stream_reps=1,
    write_reps=1,
    comm_reps=1,
    comm_msgs=20,
    interrupt_reps=1,
    control_reps=1,
    control_probes=5,
    warmup_cells=5,
    interrupt_timeout=3.0,
)


def _ok(reply: Msg | None, what: str) -> dict[str, Any]:
    if reply is None:
        raise AssertionError(f"{what}: no reply")
    content = reply.content
    if content.get("status") != "ok":
        raise AssertionError(
            f"{what}: reply status {content.get('status')} "
            f"({content.get('ename', '')}: {content.get('evalue', '')})"
        )
    return content


# -- session setup (once per running kernel) ----------------------------------------------------


def setup_session(k: Kernel, p: Params) -> None:
    """Imports the cells use, the trio-await probe, and warm-up cells (not timed)."""
    content = k.run("import sys, time")
    if content.get("status") != "ok":
        raise AssertionError(f"setup cell failed: {content.get('ename')}: {content.get('evalue')}")
    probe = k.run("import trio\nawait trio.sleep(0)")
    k.can_await_trio = probe.get("status") == "ok"
    for _ in range(p.warmup_cells):
        k.run("pass")


# -- 1, 2: startup and idle RSS (fresh kernel each) ---------------------------------------------


def startup_once(k: Kernel) -> tuple[float, float]:
    """Start ``k`` afresh: ms from start_kernel to the kernel_info reply, then MiB of RSS
    ``RSS_SETTLE`` s after one ``pass`` cell went idle. The caller stops the kernel (after
    :func:`shutdown_once`, if it measures that)."""
    k.launch()
    msg_id = k.w.send("shell", "kernel_info_request")
    reply = k.w.reply(msg_id, "shell", timeout=60)
    startup_ms = (reply.received - k.launched_at) * 1000
    try:
        k.w.wait_ready(IOPUB_READY_TIMEOUT)
    except TimeoutError:
        raise IopubSilentError(startup_ms) from None
    _ok(k.w.until(k.w.execute("pass")).reply, "first cell")
    time.sleep(RSS_SETTLE)
    rss = psutil.Process(k.pid).memory_info().rss / 2**20
    return startup_ms, rss


def shutdown_once(k: Kernel, timeout: float = 10.0) -> float:
    """ms from sending ``shutdown_request`` on control until the kernel process has exited.

    The exit is watched through a pidfd, which becomes readable the moment the process ends
    (``Popen.wait`` with a timeout polls, at up to 50 ms intervals).
    """
    assert k.km is not None
    process = k.km.provisioner.process  # type: ignore[union-attr]
    pidfd = os.pidfd_open(process.pid)
    try:
        sent = time.perf_counter()
        k.w.send("control", "shutdown_request", {"restart": False})
        if not select.select([pidfd], [], [], timeout)[0]:
            raise AssertionError(f"the kernel was still running {timeout} s after shutdown")
        exited = time.perf_counter()
    finally:
        os.close(pidfd)
    process.wait()
    return (exited - sent) * 1000


# -- 3: sequential execute round trip ----------------------------------------------------------


def _round_trips(
    k: Kernel, code: str, cells: int, check: Callable[[Msg | None], object]
) -> list[float]:
    """ms from sending ``code`` until both its reply and its idle arrived, for ``cells`` cells
    one after another; ``check`` sees each reply."""
    w, out = k.w, []
    shell = w.sockets["shell"]
    for _ in range(cells):
        msg_id, frames = w.prepare("execute_request", execute_content(code))
        t0 = time.perf_counter()
        shell.send_multipart(frames)
        done = w.until(msg_id, timeout=10)
        out.append((done.end - t0) * 1000)
        check(done.reply)
    return out


def execute_rt(k: Kernel, p: Params) -> list[float]:
    """ms from sending ``pass`` until both its execute_reply and its idle arrived, per cell."""
    return _round_trips(k, "pass", p.execute_batch, lambda reply: _ok(reply, "pass"))


ERROR_CELL = "1/0"


def _is_the_error(reply: Msg | None) -> None:
    content = reply.content if reply is not None else {}
    if content.get("ename") != "ZeroDivisionError":
        raise AssertionError(f"{ERROR_CELL}: reply {content.get('status')}, not the error")


def error_rt(k: Kernel, p: Params) -> list[float]:
    """ms from sending ``1/0`` until both its error reply and its idle arrived, per cell.

    Not one of issue 6's figures: a failing cell is a notebook's most common round trip after
    a passing one.
    """
    return _round_trips(k, ERROR_CELL, p.error_batch, _is_the_error)


# -- 4: pipelined throughput -------------------------------------------------------------------


def pipelined(k: Kernel, p: Params) -> list[float]:
    """cells/s: ``pipelined_cells`` ``pass`` requests sent back to back, until the last reply
    and the last idle arrived."""
    w, n = k.w, p.pipelined_cells
    prepared = [w.prepare("execute_request", execute_content("pass")) for _ in range(n)]
    ids = {msg_id for msg_id, _ in prepared}
    shell = w.sockets["shell"]
    replies = idles = failed = 0
    last = 0.0
    t0 = time.perf_counter()
    for _, frames in prepared:
        shell.send_multipart(frames)
    while replies < n or idles < n:
        # Fails after STALL seconds without progress, not after a fixed total.
        try:
            msg = next(w.messages(STALL, "progress"))
        except TimeoutError:
            raise AssertionError(
                f"stalled: {replies} of {n} replies and {idles} of {n} idles arrived, "
                f"then nothing for {STALL:g} s"
            ) from None
        if msg.parent_id not in ids:
            continue
        if msg.channel == "shell" and msg.msg_type == "execute_reply":
            replies += 1
            failed += msg.content.get("status") != "ok"
            last = max(last, msg.received)
        elif msg.channel == "iopub" and msg.is_idle():
            idles += 1
            last = max(last, msg.received)
    if failed:
        raise AssertionError(f"{failed} of {n} pipelined cells did not reply ok")
    return [n / (last - t0)]


# -- 5: stream throughput ----------------------------------------------------------------------


def _stream_cell(k: Kernel, code: str, timeout: float) -> tuple[float, dict[str, list[str]]]:
    """Run ``code``; seconds until reply and idle, and its stream texts by stream name.

    Stream contents are parsed only after the idle arrived: parsing 10 MB of JSON takes the
    client longer than the kernel takes to send it, and would delay the idle's timestamp.
    """
    w = k.w
    streams: list[Msg] = []

    def on_iopub(msg: Msg) -> None:
        if msg.msg_type == "stream":
            streams.append(msg)

    msg_id, frames = w.prepare("execute_request", execute_content(code))
    t0 = time.perf_counter()
    w.send_frames("shell", frames)
    done = w.until(msg_id, on_iopub=on_iopub, timeout=timeout)
    seconds = done.end - t0
    _ok(done.reply, code.splitlines()[0])
    texts: dict[str, list[str]] = {}
    for msg in streams:
        texts.setdefault(msg.content["name"], []).append(msg.content["text"])
    return seconds, texts


def print_100k(k: Kernel, p: Params) -> list[float]:
    """s until idle for 100,000 prints; every line must arrive once, in order."""
    seconds, texts = _stream_cell(k, PRINT_100K, timeout=120)
    got = "".join(texts.get("stdout", []))
    if got != PRINT_100K_EXPECTED:
        raise OutputMismatchError(f"{_describe_mismatch(got)} (in {seconds:.2f} s)")
    if texts.get("stderr"):
        raise OutputMismatchError(f"unexpected stderr: {''.join(texts['stderr'])[:200]!r}")
    return [seconds]


def write_10mb(k: Kernel, p: Params) -> list[float]:
    """s until idle for one 10 MB write; all of it must arrive."""
    seconds, texts = _stream_cell(k, WRITE_10MB, timeout=60)
    got = "".join(texts.get("stdout", []))
    if len(got) != WRITE_10MB_SIZE or got.strip("x"):
        raise OutputMismatchError(
            f"10 MB write: {len(got):,} characters arrived "
            f"({len(got.strip('x')):,} of them not 'x'), expected {WRITE_10MB_SIZE:,} "
            f"(in {seconds:.2f} s)"
        )
    return [seconds]


def _describe_mismatch(got: str) -> str:
    lines = got.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    expected = [str(i) for i in range(100000)]
    first = next(
        (i for i, (a, b) in enumerate(zip(lines, expected, strict=False)) if a != b),
        min(len(lines), len(expected)),
    )
    dupes = sum(n - 1 for n in collections.Counter(lines).values())
    missing = len(set(expected) - set(lines))
    return (
        f"100k prints: {len(lines):,} lines arrived, {missing:,} missing, {dupes:,} duplicated; "
        f"first difference at line {first:,}"
    )


# -- 6: comm round trip ------------------------------------------------------------------------


def _comm_open(k: Kernel) -> str:
    """Register the echo target with the standard comm API and open a comm to it."""
    content = k.run(COMM_SETUP)
    if content.get("status") != "ok":
        raise NotApplicable(
            f"kernel has no comm support: setup failed, {content.get('ename')}: "
            f"{content.get('evalue')}"
        )
    comm_id = uuid.uuid4().hex
    k.w.send("shell", "comm_open", {"comm_id": comm_id, "target_name": "echo", "data": {}})
    try:
        _comm_echo(k, comm_id, -1, timeout=3.0)
    except TimeoutError:
        raise NotApplicable("kernel has no comm support: no echo within 3 s") from None
    return comm_id


def _comm_echo(k: Kernel, comm_id: str, i: int, timeout: float) -> float:
    """Send ``{"i": i}`` on the comm; ms until the kernel's echo of it arrived on iopub."""
    w = k.w
    t0 = time.perf_counter()
    w.send("shell", "comm_msg", {"comm_id": comm_id, "data": {"i": i}})
    for msg in w.messages(timeout, "comm echo"):
        if (
            msg.channel == "iopub"
            and msg.msg_type == "comm_msg"
            and msg.content.get("comm_id") == comm_id
            and msg.content.get("data", {}).get("i") == i
        ):
            return (msg.received - t0) * 1000
    raise AssertionError("unreachable")


def comm_rt(k: Kernel, p: Params) -> list[float]:
    """ms from sending a comm_msg until the kernel's echo arrived on iopub, per message."""
    if k.comm_error is not None:
        raise NotApplicable(k.comm_error)
    if k.comm_id is None:
        try:
            k.comm_id = _comm_open(k)
        except NotApplicable as exc:
            k.comm_error = str(exc)
            raise
    return [_comm_echo(k, k.comm_id, i, timeout=10) for i in range(p.comm_msgs)]


# -- 7: interrupt latency ----------------------------------------------------------------------


def wait_started(k: Kernel, msg_id: str) -> None:
    """Until the cell's execute_input arrived, then ``START_DELAY`` more."""
    k.w.until(
        msg_id, reply=None, idle=False, stop=lambda m: m.msg_type == "execute_input", timeout=10
    )
    time.sleep(START_DELAY)


def interrupt_once(k: Kernel, cell: str, mode: str, timeout: float) -> float:
    """ms from the interrupt (message or signal) until the interrupted cell's execute_reply."""
    if cell == "trio" and not k.can_await_trio:
        raise NotApplicable("cannot await trio")
    w = k.w
    msg_id = w.execute(INTERRUPT_CELLS[cell])
    wait_started(k, msg_id)
    t0 = time.perf_counter()
    if mode == "message":
        w.send("control", "interrupt_request")
    else:
        assert k.km is not None
        k.km.signal_kernel(signal.SIGINT)
    reply, idle = _wait_reply_watching(k, msg_id, mode, timeout)
    latency = (reply.received - t0) * 1000
    if reply.content.get("status") == "ok":
        raise AssertionError("the cell was not interrupted (reply status ok)")
    if not idle:
        w.until(msg_id, reply=None, idle=True, timeout=10)
    return latency


def _wait_reply_watching(k: Kernel, msg_id: str, mode: str, timeout: float) -> tuple[Msg, bool]:
    """The execute_reply of ``msg_id`` and whether its idle came first; checks every 0.25 s
    that the kernel is alive, so a kernel killed by the interrupt fails at once."""
    deadline = time.perf_counter() + timeout
    idle = False
    while time.perf_counter() < deadline:
        msg = k.w.next(0.25)
        if msg is None:
            if not k.alive():
                raise AssertionError(f"the kernel died from the {mode} interrupt")
            continue
        if msg.parent_id != msg_id:
            continue
        if msg.channel == "shell" and msg.msg_type == "execute_reply":
            return msg, idle
        idle = idle or (msg.channel == "iopub" and msg.is_idle())
    raise AssertionError(f"no execute_reply {timeout:g} s after the interrupt")


def interrupt_figure(cell: str, mode: str) -> Callable[[Kernel, Params], list[float]]:
    def rep(k: Kernel, p: Params) -> list[float]:
        return [interrupt_once(k, cell, mode, p.interrupt_timeout)]

    rep.__doc__ = f"ms from a {mode} interrupt to the execute_reply of `{INTERRUPT_CELLS[cell]}`"
    return rep


# -- 8: control while blocked ------------------------------------------------------------------


def control_blocked(k: Kernel, p: Params) -> list[float]:
    """ms for kernel_info_request on control while ``time.sleep(30)`` runs, per probe."""
    w = k.w
    msg_id = w.execute("time.sleep(30)")
    wait_started(k, msg_id)
    out: list[float] = []
    ended = False
    try:
        for _ in range(p.control_probes):
            t0 = time.perf_counter()
            probe = w.send("control", "kernel_info_request")
            try:
                for msg in w.messages(5, "kernel_info_reply on control"):
                    if msg.parent_id == msg_id and msg.channel == "shell":
                        ended = True
                        raise AssertionError(
                            f"the cell ended while probing ({msg.content.get('status')}, "
                            f"{msg.content.get('ename', '')})"
                        )
                    if msg.parent_id == probe and msg.channel == "control":
                        out.append((msg.received - t0) * 1000)
                        break
            except TimeoutError:
                raise AssertionError("no kernel_info_reply on control within 5 s") from None
            time.sleep(0.01)
    finally:
        if not ended:
            w.send("control", "interrupt_request")
            w.until(msg_id, timeout=40)
    return out
