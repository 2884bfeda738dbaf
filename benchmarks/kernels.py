"""Which kernels run, how each is started and stopped, and the check that none is left over."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import zmq
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import KernelManager
from jupyter_client.session import Session
from wire import Wire

ASYNC_KERNEL_SPEC = "bench-async-kernel-trio"
"""The kernelspec this suite writes for async-kernel on its trio backend."""


class Kernel:
    """One kernel under test: its label, its kernelspec, and (while running) its process.

    Args:
        label: the name shown in the table (``trikernel``, ``ipykernel``, ...).
        spec: the kernelspec name jupyter_client starts it by.
        ctx: the ZeroMQ context for the measuring client's sockets.
        log_dir: where the kernel's stdout and stderr go.
    """

    def __init__(self, label: str, spec: str, ctx: zmq.Context[Any], log_dir: Path) -> None:
        self.label = label
        self.spec = spec
        self.ctx = ctx
        self.log_path = log_dir / f"{label}.log"
        self.km: KernelManager | None = None
        self.wire: Wire | None = None
        self.info: dict[str, Any] = {}
        self.pids: list[int] = []
        self.launched_at = 0.0
        self.can_await_trio: bool | None = None
        self.comm_id: str | None = None
        self.comm_error: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def launch(self) -> KernelManager:
        """Start the process and connect the client; does not wait (the startup figure does).

        ``launched_at`` is ``time.perf_counter()`` just before ``KernelManager.start_kernel``.
        """
        km = KernelManager(kernel_name=self.spec)
        log = self.log_path.open("ab")
        try:
            self.launched_at = time.perf_counter()
            # From the log folder, not the suite's: `python -m` puts the working directory
            # first on sys.path, and from a checkout every trikernel kernelspec would run the
            # checkout's code rather than its own.
            km.start_kernel(stdout=log, stderr=subprocess.STDOUT, cwd=str(self.log_path.parent))
        finally:
            log.close()
        self.km = km
        self.pids.append(self.pid)
        session = Session(key=km.session.key, signature_scheme=km.session.signature_scheme)
        self.wire = Wire(self.ctx, km.get_connection_info(), session)
        self.wire.alive = km.is_alive
        return km

    def start(self, timeout: float = 60.0, attempts: int = 3) -> None:
        """Start the kernel and wait until shell and iopub both work.

        A kernel whose iopub stays silent (async-kernel 0.23 does that in about one start of
        six) is stopped and started again, up to ``attempts`` times.
        """
        for attempt in range(1, attempts + 1):
            self.launch()
            try:
                self.info = self.w.wait_ready(timeout)
            except TimeoutError:
                self.stop()
                if attempt == attempts:
                    raise
                continue
            break
        self.comm_id = None
        self.comm_error = None

    def stop(self) -> None:
        """Shut down gracefully (shutdown_request, up to 5 s), else kill; close everything."""
        km, self.km = self.km, None
        if self.wire is not None:
            self.wire.close()
            self.wire = None
        if km is None:
            return
        try:
            if km.is_alive():
                km.shutdown_kernel(now=False)
            else:
                km.cleanup_resources()
        except Exception:  # noqa: BLE001 - a kernel that fails to stop is killed below
            with contextlib.suppress(Exception):
                km.shutdown_kernel(now=True)
        if km.context is not zmq.Context.instance():
            km.context.destroy(linger=0)

    def restart(self) -> None:
        """A fresh process (after a kernel was wedged or died)."""
        self.stop()
        self.start(timeout=20)

    @property
    def w(self) -> Wire:
        if self.wire is None:
            raise RuntimeError(f"{self.label} is not running")
        return self.wire

    @property
    def pid(self) -> int:
        assert self.km is not None
        provisioner = self.km.provisioner
        pid = getattr(provisioner, "pid", None) or provisioner.process.pid  # type: ignore[union-attr]
        return int(pid)

    def alive(self) -> bool:
        return self.km is not None and self.km.is_alive()

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    # -- simple requests ------------------------------------------------------------------------

    def run(self, code: str, timeout: float = 30.0) -> dict[str, Any]:
        """Execute ``code``, wait for reply and idle; the reply content."""
        msg_id = self.w.execute(code)
        done = self.w.until(msg_id, timeout=timeout)
        assert done.reply is not None
        return done.reply.content


# -- choosing and preparing kernels ------------------------------------------------------------


def spec_exists(name: str) -> bool:
    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return False
    return True


def find_async_kernel_python(explicit: str | None) -> tuple[str | None, str]:
    """An interpreter that can import async_kernel, and a note on what was found."""
    candidates = [explicit] if explicit else [sys.executable]
    for python in candidates:
        assert python is not None
        try:
            out = subprocess.run(
                [python, "-c", "import async_kernel, trio; print(async_kernel.__version__)"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"async-kernel: {python} does not run ({exc})"
        if out.returncode == 0:
            return python, f"async-kernel {out.stdout.strip()} (trio backend) from {python}"
    return None, (
        "async-kernel skipped: not importable here (it is installable from PyPI: "
        "`pip install async-kernel`, or pass --async-kernel-python PATH)"
    )


def write_async_kernel_spec(python: str) -> Path:
    """A kernelspec for async-kernel on trio, in a fresh folder put first on JUPYTER_PATH.

    async-kernel's own spec starts it on asyncio; ``--backend=trio`` selects trio (its
    ``Interface.backend`` option).
    """
    root = Path(tempfile.mkdtemp(prefix="trikernel-bench-specs-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    spec_dir = root / "kernels" / ASYNC_KERNEL_SPEC
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [
            python,
            "-m",
            "async_kernel",
            "start",
            "--connection_file={connection_file}",
            f"--name={ASYNC_KERNEL_SPEC}",
            "--backend=trio",
        ],
        "display_name": "async-kernel (trio), benchmark",
        "language": "python",
        "interrupt_mode": "message",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        p for p in (str(root), os.environ.get("JUPYTER_PATH", "")) if p
    )
    return root


# -- leftovers ---------------------------------------------------------------------------------


def leftover_processes(kernels: list[Kernel], wait: float = 5.0) -> list[psutil.Process]:
    """Kernel processes (or children of this process) still alive ``wait`` s after shutdown."""
    deadline = time.monotonic() + wait
    while True:
        alive: dict[int, psutil.Process] = {}
        for k in kernels:
            for pid in k.pids:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p = psutil.Process(pid)
                    if p.status() != psutil.STATUS_ZOMBIE:
                        alive[pid] = p
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive[child.pid] = child
        if not alive or time.monotonic() > deadline:
            return list(alive.values())
        time.sleep(0.1)
