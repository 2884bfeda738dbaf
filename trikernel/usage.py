"""The kernel's CPU and memory use, for ``usage_request`` (JupyterLab's "Kernel usage" panel).

The messaging spec does not define ``usage_request``; jupyter-resource-usage does. While its
panel is open, it asks on the control channel every five seconds and shows the reply's
``hostname``, ``pid``, ``kernel_cpu`` (percent), ``kernel_memory`` (bytes), ``cpu_count``,
``host_cpu_percent`` and ``host_virtual_memory`` (psutil's ``virtual_memory()`` fields); a
kernel that does not answer gets "Kernel usage details are not available".

The kernel is its process and the processes it started (a cell's ``subprocess`` is the
kernel's work to whoever watches it): CPU is theirs since the previous request, memory their
resident set now. psutil measures; it is imported on the first request, not at startup.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import psutil

__all__ = ["UsageMeter"]


@attrs.define(eq=False)
class UsageMeter:
    """Measures the kernel's use; each :meth:`measure` reports CPU since the previous one."""

    _processes: dict[int, psutil.Process] = attrs.field(init=False, factory=dict)
    """The processes measured last time, kept: psutil counts a process's CPU percent from the
    previous call on the same object (the first call on a new one says 0.0)."""

    def measure(self) -> dict[str, Any]:
        """The ``usage_reply`` content (without ``status``). Blocking: reads ``/proc``."""
        import psutil

        me = self._processes.get(os.getpid()) or psutil.Process()
        current = {os.getpid(): me}
        try:
            children = me.children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            # The object measured last time, if it is the same process (pids are reused).
            known = self._processes.get(child.pid)
            current[child.pid] = known if known is not None and known == child else child
        self._processes = current
        cpu = 0.0
        memory = 0
        for process in current.values():
            try:
                with process.oneshot():
                    cpu += process.cpu_percent(interval=None)
                    memory += process.memory_info().rss
            except psutil.Error:  # ended since it was listed, or not ours to look at
                continue
        content: dict[str, Any] = {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "kernel_cpu": cpu,
            "kernel_memory": memory,
            "cpu_count": psutil.cpu_count(logical=True),
            "host_virtual_memory": psutil.virtual_memory()._asdict(),
        }
        # Since the previous call; the very first call has nothing to compare with (0.0).
        host_cpu = psutil.cpu_percent(interval=None)
        if host_cpu:
            content["host_cpu_percent"] = host_cpu
        return content
