"""The heartbeat channel: an echo that answers even while Python cannot run.

Invariants:
- The echo is ZeroMQ's C-level proxy on a thread of its own: it needs neither the GIL nor a
  trio loop, so a cell that holds the GIL in a long C call never makes jupyter_client's
  restarter think the kernel died (and restart it, losing the user's state).
- The proxy thread owns the heartbeat socket; :func:`serve_heartbeat` owns the thread. Cancel
  the task and the proxy is told to terminate over an inproc socket, then joined.
"""

from __future__ import annotations

import itertools
from typing import NoReturn

import trio
import zmq

from ..handoff import run_sync_in_thread
from ..protocol import ConnectionInfo
from .transport import bind

__all__ = ["HEARTBEAT_THREAD", "serve_heartbeat"]

#: The name of the thread that echoes heartbeats (the debugger leaves it alone by it).
HEARTBEAT_THREAD = "trikernel-heartbeat"
_ids = itertools.count()


async def serve_heartbeat(
    ctx: zmq.Context[zmq.Socket[bytes]],
    conn: ConnectionInfo,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Bind the heartbeat socket, report its port, and echo until cancelled."""
    echo = ctx.socket(zmq.ROUTER)
    echo.linger = 0
    steer_url = f"inproc://trikernel-heartbeat-{next(_ids)}"
    steer_in = ctx.socket(zmq.PAIR)
    steer_in.bind(steer_url)
    steer_out = ctx.socket(zmq.PAIR)
    steer_out.connect(steer_url)
    try:
        port = bind(echo, conn, "hb")
    except BaseException:
        for s in (echo, steer_in, steer_out):
            s.close(linger=0)
        raise

    def proxy() -> None:
        try:
            # A ROUTER proxied onto itself sends every [identity, ping] back to its sender.
            zmq.proxy_steerable(echo, echo, None, steer_in)
        finally:
            echo.close(linger=0)
            steer_in.close(linger=0)

    task_status.started(port)
    try:
        await run_sync_in_thread(proxy, HEARTBEAT_THREAD, stop=lambda: steer_out.send(b"TERMINATE"))
    finally:
        steer_out.close(linger=0)
    raise RuntimeError("the heartbeat proxy stopped on its own")
