"""When frontends read slowly: memory stays bounded, and output and replies wait instead of
being lost.

The limits and what happens at them are in ``docs/architecture.md`` ("When frontends read
slowly"). Each test starts the kernel with small limits (``--iopub.hwm=4``, 4 MiB of pending
text) and prints far more than fits, in 1 MiB numbered lines, so the checks are cheap: every
line must arrive once, in order, whole.

A subscriber is "paused" by not reading a SUB socket whose own queue holds two messages. That
the kernel then waits is proved by a second subscriber that reads everything: it stops getting
messages long before the cell's end (and the RSS of the kernel process stays low), then gets the
rest once the paused one reads again.

The last tests do the same for replies: a control client sends thousands of requests and reads
none until the kernel says its queue for that client is full.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import zmq

from tests.kernel.conftest import RunKernel
from tests.kernel.hostile_helpers import (
    TIMEOUT,
    Msg,
    Subscriber,
    Wire,
    is_idle_of,
    json_parts,
    new_header,
    parent_id,
    rss_mib,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc"),
]

Context = zmq.Context[zmq.Socket[bytes]]
LINE = 1 << 20  # characters per printed line, newline included
LIMITS = ("--iopub.hwm=4", f"--streams.max_pending_bytes={4 * LINE}")
QUIET = 1.0  # seconds without a message that show the kernel is waiting for a subscriber


def printing_cell(lines: int | None) -> str:
    """Code that prints ``lines`` numbered lines of 1 MiB each (None: until interrupted)."""
    loop = (
        "import itertools\nfor i in itertools.count():\n"
        if lines is None
        else (f"for i in range({lines}):\n")
    )
    return f"import sys\n{loop}    sys.stdout.write(f'{{i:08d}}'.ljust({LINE - 1}, '.') + '\\n')\n"


class Lines:
    """Checks, as stream text arrives, that it is numbered lines 0, 1, 2... each whole."""

    def __init__(self) -> None:
        self.count = 0
        self._partial = ""

    def feed(self, text: str) -> None:
        *complete, self._partial = (self._partial + text).split("\n")
        for line in complete:
            assert len(line) == LINE - 1, f"line {self.count} has {len(line)} characters"
            assert line[:8] == f"{self.count:08d}", f"expected line {self.count}, got {line[:8]}"
            self.count += 1

    def check_whole(self) -> None:
        assert self._partial == "", "the last line was cut"


class Reader:
    """A subscriber and what it has seen of one cell."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.lines = Lines()
        self.idle_of: set[str] = set()
        self.errors: list[Msg] = []

    def take(self, cell: str, timeout: float = TIMEOUT) -> bool:
        """Read one message; False if none came within ``timeout``."""
        if not self.sub.sock.poll(timeout * 1000):
            return False
        msg = self.sub.recv()
        if msg["msg_type"] == "stream" and parent_id(msg) == cell:
            self.lines.feed(msg["content"]["text"])
        elif msg["msg_type"] == "error" and parent_id(msg) == cell:
            self.errors.append(msg)
        elif is_idle_of(cell)(msg):
            self.idle_of.add(cell)
        return True

    def until_quiet(self, cell: str) -> None:
        """Read until nothing arrives for ``QUIET`` seconds."""
        deadline = time.monotonic() + TIMEOUT
        while self.take(cell, QUIET):
            assert time.monotonic() < deadline, f"iopub never went quiet in {TIMEOUT} s"


def read_both_until_idle(readers: list[Reader], cell: str) -> None:
    """Read every subscriber as messages come (each may be what the kernel waits for)."""
    poller = zmq.Poller()
    for r in readers:
        poller.register(r.sub.sock, zmq.POLLIN)
    last = time.monotonic()
    while not all(cell in r.idle_of for r in readers):
        ready = dict(poller.poll(1000))
        for r in readers:
            if r.sub.sock in ready:
                r.take(cell)
                last = time.monotonic()
        assert time.monotonic() - last < TIMEOUT, f"no iopub message for {TIMEOUT} s"


class Client:
    """Raw sockets on one kernel, closed after the test (or ZeroMQ's context cannot end)."""

    def __init__(self, ctx: Context, info: dict[str, Any]) -> None:
        self.ctx, self.info = ctx, info
        self.socks: list[zmq.Socket[bytes]] = []
        self.pid = 0

    def reader(self, rcvhwm: int = 0) -> Reader:
        sub = Subscriber.connect(self.ctx, self.info, rcvhwm=rcvhwm)
        self.socks.append(sub.sock)
        return Reader(sub)

    def wire(self, channel: str, **options: int) -> Wire:
        wire = Wire.connect(self.ctx, self.info, channel, options=options)
        self.socks.append(wire.sock)
        return wire


@pytest.fixture
def client(run_kernel: RunKernel, tmp_path: Path) -> Iterator[Callable[..., tuple[Client, Any]]]:
    """``client(*kernel_args)``: start a kernel with small limits; (its client, its stderr)."""
    ctx: Context = zmq.Context()
    clients: list[Client] = []

    def start(*args: str) -> tuple[Client, Any]:
        path = tmp_path / f"kernel-{len(clients)}.json"
        proc, stderr = run_kernel(path, *LIMITS, "--log_level=INFO", *args)
        stderr.wait_for("wrote connection file")
        c = Client(ctx, json.loads(path.read_text()))
        c.pid = proc.pid
        clients.append(c)
        return c, stderr

    yield start
    for c in clients:
        for sock in c.socks:
            sock.close(linger=0)
    ctx.destroy(linger=0)


def warm_up(shell: Wire, readers: list[Reader]) -> None:
    """Run one cell, so IPython is loaded and every subscriber has seen a whole request."""
    cell = shell.request("execute_request", {"code": "1+1"})
    read_both_until_idle(readers, cell)
    assert shell.reply(cell)["content"]["status"] == "ok"


class Setup(NamedTuple):
    kernel: Client
    stderr: Any
    reader: Reader
    slow: Reader
    shell: Wire
    control: Wire


def set_up(client: Callable[..., tuple[Client, Any]], stall_timeout: float) -> Setup:
    """A kernel with small limits, a subscriber that reads everything and one whose queue
    holds two messages (read only when a test says), shell and control, warmed up."""
    kernel, stderr = client(f"--iopub.stall_timeout={stall_timeout}")
    reader, slow = kernel.reader(), kernel.reader(rcvhwm=2)
    shell, control = kernel.wire("shell"), kernel.wire("control")
    warm_up(shell, [reader, slow])
    return Setup(kernel, stderr, reader, slow, shell, control)


def test_a_paused_subscriber_delays_output_loses_none_and_bounds_memory(
    client: Callable[..., tuple[Client, Any]],
) -> None:
    lines = 160
    kernel, _, reader, paused, shell, control = set_up(client, stall_timeout=600)
    before = rss_mib(kernel.pid)

    cell = shell.request("execute_request", {"code": printing_cell(lines)})
    reader.until_quiet(cell)
    grown = rss_mib(kernel.pid) - before
    held_back = lines - reader.lines.count
    print(f"paused: {reader.lines.count} of {lines} MiB delivered, kernel RSS +{grown:.0f} MiB")
    assert held_back > lines // 2, "the kernel did not wait for the paused subscriber"
    assert grown < 64, f"kernel RSS grew {grown:.0f} MiB while output waited"
    # The kernel answers while output waits, and the cell has not finished.
    control.reply(control.request("kernel_info_request"), timeout=1.0)
    assert not shell.sock.poll(0), "the cell finished although its output could not be sent"

    read_both_until_idle([reader, paused], cell)
    for r in (reader, paused):
        assert r.lines.count == lines
        r.lines.check_whole()
    assert shell.reply(cell)["content"]["status"] == "ok"


def test_control_answers_while_shell_requests_wait_for_a_paused_subscriber(
    client: Callable[..., tuple[Client, Any]],
) -> None:
    """Each shell request publishes two statuses; behind a paused subscriber they fill the
    queue to the threads' mark, and the shell waits there. Control reads requests up to a
    higher mark, so it still answers at once (at the same mark it waited for the stall
    timeout: ten minutes here)."""
    _, _, reader, paused, shell, control = set_up(client, stall_timeout=600)
    requests = 2500  # 5,000 statuses: far past the 2,000 messages the queue holds
    sent = []
    for _ in range(requests):
        # Statuses echo the request's header: padded, a few hundred fill the sockets' buffers.
        header = new_header("is_complete_request", pad="x" * (32 << 10))
        shell.send(shell.signed(json_parts(header, {"code": "x"})))
        sent.append(header["msg_id"])
    # Read the replies and what the reader gets until both stop: the shell waits for iopub.
    early = 0
    poller = zmq.Poller()
    poller.register(shell.sock, zmq.POLLIN)
    poller.register(reader.sub.sock, zmq.POLLIN)
    deadline = time.monotonic() + TIMEOUT
    while ready := dict(poller.poll(QUIET * 1000)):
        assert time.monotonic() < deadline, f"the kernel never went quiet in {TIMEOUT} s"
        if shell.sock in ready:
            shell.recv()
            early += 1
        if reader.sub.sock in ready:
            reader.take("")
    assert early < requests, "the shell did not wait for the paused subscriber"

    # Control looks at the queue before each read: the first request may be read at once
    # whatever the mark (the read was already waiting), so several are sent.
    for _ in range(3):
        control.reply(control.request("kernel_info_request"), timeout=1.0)

    # Once the paused subscriber reads, the shell goes on and every request is answered.
    cell = shell.request("execute_request", {"code": "1+1"})
    read_both_until_idle([reader, paused], cell)
    *answered, executed = shell.until(cell)
    assert executed["content"]["status"] == "ok"
    assert early + len(answered) == requests
    assert {parent_id(m) for m in answered} <= set(sent)


def test_an_interrupt_ends_a_print_that_waits_for_a_paused_subscriber(
    client: Callable[..., tuple[Client, Any]],
) -> None:
    _, _, reader, paused, shell, control = set_up(client, stall_timeout=600)

    cell = shell.request("execute_request", {"code": printing_cell(None)})
    reader.until_quiet(cell)
    reply = control.reply(control.request("interrupt_request"), timeout=1.0)
    assert reply["content"]["status"] == "ok"

    read_both_until_idle([reader, paused], cell)
    executed = shell.reply(cell)["content"]
    assert executed["status"] == "error"
    assert executed["ename"] == "KeyboardInterrupt"
    # Both saw the same lines, none lost or repeated.
    assert reader.lines.count == paused.lines.count > 0
    assert [e["content"]["ename"] for e in reader.errors] == ["KeyboardInterrupt"]
    warm_up(shell, [reader, paused])


def test_a_subscriber_that_stops_reading_is_left_behind_after_the_stall_timeout(
    client: Callable[..., tuple[Client, Any]],
) -> None:
    lines = 40
    _, stderr, reader, stuck, shell, control = set_up(client, stall_timeout=1)

    cell = shell.request("execute_request", {"code": printing_cell(lines)})
    started = time.monotonic()
    read_both_until_idle([reader], cell)
    took = time.monotonic() - started
    print(f"{lines} MiB to the reader in {took:.1f} s with a subscriber that never reads")
    assert reader.lines.count == lines
    reader.lines.check_whole()
    assert shell.reply(cell)["content"]["status"] == "ok"
    assert "WARNING" in stderr.wait_for("has read nothing for")

    # Once the stuck one is gone, every subscriber has room again, and the kernel says so.
    stuck.sub.sock.close(linger=0)
    for _ in range(100):
        control.reply(control.request("kernel_info_request"))
        if any("every subscriber has room again" in line for line in stderr.lines):
            break
    stderr.wait_for("every subscriber has room again", timeout=1.0)
    warm_up(shell, [reader])


# -- replies: a client that reads its replies slowly ------------------------------------------

#: Requests sent without reading: more replies than fit between the kernel and the client (the
#: kernel's queue for it, 1000; the client's, 2; the TCP buffers, small on the client's side).
#: Before replies were routed mandatorily, ZeroMQ dropped about half of them.
FLOOD = 5000
SLOW_READER = {"rcvhwm": 2, "rcvbuf": 4096, "sndhwm": 0}


def test_a_client_that_reads_its_replies_late_gets_every_one(
    client: Callable[..., tuple[Client, Any]],
) -> None:
    kernel, stderr = client()
    control = kernel.wire("control", **SLOW_READER)
    sent = [control.request("kernel_info_request") for _ in range(FLOOD)]
    # The kernel says when its queue for the client is full: from then on it waits.
    assert "INFO" in stderr.wait_for("control: a client's queue is full")

    replies = Counter(parent_id(control.recv()) for _ in range(FLOOD))
    assert set(replies) == set(sent)
    assert max(replies.values()) == 1
    control.reply(control.request("kernel_info_request"))  # and nothing came after the flood's
    assert not [line for line in stderr.lines if "dropped" in line]


def test_a_client_that_reads_no_replies_is_left_behind_after_the_stall_timeout(
    client: Callable[..., tuple[Client, Any]],
) -> None:
    kernel, stderr = client("--replies.stall_timeout=1")
    stuck = kernel.wire("control", **SLOW_READER)
    other = kernel.wire("control")
    for _ in range(FLOOD):
        stuck.request("kernel_info_request")
    stderr.wait_for("control: a client's queue is full")

    # The channel waits for the stuck client one stall timeout, then serves the others.
    started = time.monotonic()
    other.reply(other.request("kernel_info_request"))
    print(f"another client's reply after {time.monotonic() - started:.1f} s")
    assert "WARNING" in stderr.wait_for("control: a client's queue has been full for 1.0 s")

    # Once the stuck client reads, it gets replies again, and the kernel says how many it lost.
    received = 0
    while stuck.sock.poll(0):
        stuck.recv()
        received += 1
    stuck.until(stuck.request("kernel_info_request"))
    line = stderr.wait_for("a client left behind reads again")
    dropped = int(line.split("; ")[1].split()[0])
    print(f"stuck client: {received} replies read late, {dropped} dropped")
    assert dropped > 0
