"""The five sockets, each served by one ``serve_<channel>`` task in the io loop.

Each ``serve_*`` binds its socket, reports what the kernel needs through ``task_status`` (port,
and the queue to send through) and then runs until cancelled. The kernel starts them with
``nursery.start`` so that it is ready only once every socket is bound.
"""

from __future__ import annotations

from .heartbeat import HEARTBEAT_THREAD as HEARTBEAT_THREAD
from .heartbeat import serve_heartbeat as serve_heartbeat
from .iopub import MAX_PENDING_MESSAGES as MAX_PENDING_MESSAGES
from .iopub import IOPubQueue as IOPubQueue
from .iopub import serve_iopub as serve_iopub
from .router import Outbox as Outbox
from .router import serve_control as serve_control
from .router import serve_shell as serve_shell
from .router import serve_stdin as serve_stdin
from .transport import SentMarker as SentMarker
