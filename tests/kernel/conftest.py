"""Fixtures for tests against the real kernel process, over real ZeroMQ sockets.

Helpers wait on the message that proves a state (a reply, an ``execute_input``, an ``idle``)
with a timeout that fails the test loudly; none sleeps a guessed time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from jupyter_client import BlockingKernelClient, KernelManager

from tests.conftest import TEST_KERNEL

TIMEOUT = 20.0
Msg = dict[str, Any]


class Kernel:
    """A running kernel and a client, with the waits tests need."""

    def __init__(self, km: KernelManager, kc: BlockingKernelClient, log: Path) -> None:
        self.km = km
        self.kc = kc
        self.log = log
        """The kernel process's stderr (its log), copied to the test's stderr at its end."""

    # -- waiting on messages ------------------------------------------------------------------

    def reply(self, msg_id: str, channel: str = "shell", timeout: float = TIMEOUT) -> Msg:
        """The reply to ``msg_id`` on ``channel``; other replies there are dropped."""
        get = self.kc.get_shell_msg if channel == "shell" else self.kc.get_control_msg
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {channel} reply to {msg_id} within {timeout} s")
            msg = get(timeout=remaining)
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    def replies(self, *msg_ids: str, timeout: float = TIMEOUT) -> dict[str, Msg]:
        """The shell replies to all of ``msg_ids``, in whatever order they come."""
        deadline = time.monotonic() + timeout
        found: dict[str, Msg] = {}
        while len(found) < len(msg_ids):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no reply to {set(msg_ids) - set(found)} within {timeout} s")
            msg = self.kc.get_shell_msg(timeout=remaining)
            parent = msg["parent_header"].get("msg_id")
            if parent in msg_ids:
                found[parent] = msg
        return found

    def iopub_until(self, msg_id: str, predicate: Any, timeout: float = TIMEOUT) -> list[Msg]:
        """iopub messages of request ``msg_id`` up to and including the first matching one."""
        deadline = time.monotonic() + timeout
        seen: list[Msg] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                types = [m["msg_type"] for m in seen]
                raise AssertionError(f"iopub for {msg_id}: condition not met; saw {types}")
            msg = self.kc.get_iopub_msg(timeout=remaining)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            seen.append(msg)
            if predicate(msg):
                return seen

    def collect(self, done: Any, timeout: float = TIMEOUT) -> list[Msg]:
        """Every iopub message, of any request, until ``done(messages so far)`` is true."""
        deadline = time.monotonic() + timeout
        seen: list[Msg] = []
        while not done(seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                types = [m["msg_type"] for m in seen]
                raise AssertionError(f"iopub: condition not met within {timeout} s; saw {types}")
            seen.append(self.kc.get_iopub_msg(timeout=remaining))
        return seen

    def all_until_idle(self, *msg_ids: str, timeout: float = TIMEOUT) -> list[Msg]:
        """Every iopub message, of any request, until each of ``msg_ids`` has had its idle."""

        def idle_of_each(msgs: list[Msg]) -> bool:
            idle = {
                m["parent_header"].get("msg_id")
                for m in msgs
                if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
            }
            return set(msg_ids) <= idle

        return self.collect(idle_of_each, timeout)

    def until_idle(self, msg_id: str, timeout: float = TIMEOUT) -> list[Msg]:
        """iopub messages of ``msg_id`` through its ``idle`` status."""
        return self.iopub_until(
            msg_id,
            lambda m: m["msg_type"] == "status" and m["content"]["execution_state"] == "idle",
            timeout,
        )

    def started(self, msg_id: str, timeout: float = TIMEOUT) -> None:
        """Wait until the cell of ``msg_id`` has begun (its ``execute_input``)."""
        self.iopub_until(msg_id, lambda m: m["msg_type"] == "execute_input", timeout)

    # -- requests ----------------------------------------------------------------------------

    def execute(self, code: str, timeout: float = TIMEOUT, **kwargs: Any) -> tuple[Msg, list[Msg]]:
        """Run ``code``; return its reply and its iopub messages through idle."""
        msg_id = self.kc.execute(code, **kwargs)
        reply = self.reply(msg_id, timeout=timeout)
        return reply, self.until_idle(msg_id, timeout)

    def execute_answering(self, code: str, *answers: str) -> tuple[Msg, list[Msg]]:
        """Run ``code``, answering its input prompts with ``answers`` in turn; return its reply
        and its iopub messages through idle."""
        msg_id = self.kc.execute(code, allow_stdin=True)
        for answer in answers:
            self.kc.get_stdin_msg(timeout=TIMEOUT)
            self.kc.input(answer)
        return self.reply(msg_id), self.until_idle(msg_id)

    def control(self, msg_type: str, content: dict[str, Any] | None = None) -> str:
        msg = self.kc.session.msg(msg_type, content or {})
        self.kc.control_channel.send(msg)
        return str(msg["header"]["msg_id"])

    def shell_send(self, msg_type: str, content: dict[str, Any] | None = None) -> str:
        msg = self.kc.session.msg(msg_type, content or {})
        self.kc.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])

    def wait_exit(self, timeout: float = TIMEOUT) -> None:
        """Wait until the kernel process exits on its own, in order: status 0, and none of its
        shutdown's waits gave up (each logs a ``shutdown:`` warning when it does).

        How fast it exits is for the benchmarks to measure: here the timeout only catches a
        kernel that does not exit. (The history's SQLite commit at exit waits for the disk; in
        CI a kernel once took over 1.5 s to exit.)
        """
        process = self.km.provisioner.process  # type: ignore[union-attr]
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"kernel process still alive {timeout} s later") from exc
        log = self.log.read_text(errors="replace")
        assert status == 0, f"the kernel exited with status {status}; its log:\n{log}"
        gave_up = [line for line in log.splitlines() if "shutdown:" in line]
        assert not gave_up, f"the kernel's shutdown gave up waiting: {gave_up}"


def start_kernel(start: dict[str, Any] | None = None, **manager_options: Any) -> Kernel:
    """Start the test kernel; ``manager_options`` go to the ``KernelManager``, ``start`` to its
    ``start_kernel`` (``env=``, ``extra_arguments=``)."""
    km = KernelManager(kernel_name=TEST_KERNEL, **manager_options)
    fd, name = tempfile.mkstemp(prefix="trikernel-test-", suffix=".log")
    try:
        km.start_kernel(**{"stderr": fd, **(start or {})})
    except BaseException:
        _show_log(Path(name))
        raise
    finally:
        os.close(fd)
    kc = km.client()
    k = Kernel(km, kc, Path(name))
    try:
        # The tests read iopub when they need it, sometimes after tens of thousands of
        # messages: with no limit on this client's queue, the kernel never waits for it (a
        # frontend that lets messages pile up past its limit is left behind, see
        # docs/architecture.md).
        kc.context.setsockopt(zmq.RCVHWM, 0)
        kc.start_channels()
        kc.wait_for_ready(timeout=TIMEOUT)
    except BaseException:
        stop_kernel(k)
        raise
    return k


def stop_kernel(k: Kernel) -> None:
    """Shut the kernel down as a frontend does: a ``shutdown_request``, and a kill only if it
    has not exited after the manager's wait. (Killed at once, a kernel cannot remove what it
    keeps in the temporary folder, such as the debugger's cell files.)"""
    try:
        k.kc.stop_channels()
        if k.km.is_alive():
            k.km.shutdown_kernel(now=False)
        else:
            k.km.cleanup_resources()
        # The manager's context outlives it otherwise, and is reported when collected.
        k.km.context.destroy(linger=0)
    finally:
        _show_log(k.log)


def _show_log(log: Path) -> None:
    """Copy a kernel's log into the test's captured stderr (pytest shows it with a failure),
    and remove it."""
    sys.stderr.write(log.read_text(errors="replace"))
    log.unlink()


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    """One kernel shared by a module's tests (they must leave it idle and usable)."""
    k = start_kernel()
    yield k
    stop_kernel(k)


@pytest.fixture
def fresh_kernel() -> Iterator[Kernel]:
    """A kernel of the test's own, for tests that shut it down or break its state."""
    k = start_kernel()
    yield k
    stop_kernel(k)


def outputs(msgs: list[Msg], *types: str) -> list[Msg]:
    return [m for m in msgs if m["msg_type"] in types]


def stream_text(msgs: list[Msg], name: str = "stdout") -> str:
    return "".join(
        m["content"]["text"] for m in outputs(msgs, "stream") if m["content"]["name"] == name
    )


def merge_streams(msgs: list[Msg]) -> list[Msg]:
    """Messages with adjacent text of one stream joined, as a frontend shows them (a printed
    line may come in two pieces, either side of a flush)."""
    merged: list[Msg] = []
    for m in msgs:
        last = merged[-1] if merged else None
        if (
            last is not None
            and m["msg_type"] == last["msg_type"] == "stream"
            and m["content"]["name"] == last["content"]["name"]
        ):
            text = last["content"]["text"] + m["content"]["text"]
            merged[-1] = {**last, "content": {**last["content"], "text": text}}
        else:
            merged.append(m)
    return merged


class StderrWatcher:
    """Reads a process's stderr on a thread; lets a test wait for a line (no polling)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> str:
        with self._cond:
            found = self._cond.wait_for(
                lambda: any(text in line for line in self.lines), timeout=timeout
            )
            assert found, f"{text!r} not on stderr within {timeout} s: {self.lines}"
            return next(line for line in self.lines if text in line)

    def join(self) -> None:
        self._thread.join(timeout=TIMEOUT)


RunKernel = Callable[..., tuple[subprocess.Popen[str], StderrWatcher]]


@pytest.fixture
def run_kernel() -> Iterator[RunKernel]:
    """``run_kernel(connection_file, *args)``: ``python -m trikernel``, killed after the test.

    For tests that need the kernel's command line or its stderr; the connection file is
    written by the kernel when it does not exist."""
    procs: list[tuple[subprocess.Popen[str], StderrWatcher]] = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def start(path: Path, *args: str) -> tuple[subprocess.Popen[str], StderrWatcher]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trikernel", "-f", str(path), *args],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        watcher = StderrWatcher(proc)
        procs.append((proc, watcher))
        return proc, watcher

    yield start
    for proc, watcher in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        watcher.join()
        assert proc.stderr is not None
        proc.stderr.close()
        # Shown with a failing test's report: why the kernel died, if it did.
        sys.stderr.write(f"kernel {proc.pid} exited {proc.returncode}; its stderr:\n")
        sys.stderr.write("".join(watcher.lines))
