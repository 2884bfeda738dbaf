"""Comms (and so ipywidgets) through the ``comm`` package, which libraries use to find kernels.

At start the kernel points ``comm.create_comm`` and ``comm.get_comm_manager`` at its own
:class:`Comm` and manager, so ipywidgets 8 (and any library built on ``comm``) works without a
patch from the user.

Rules:
- Comm messages from the frontend are handled as soon as they arrive, even while a cell awaits
  (see ``_INLINE_SHELL`` in :mod:`trikernel.kernel`): a cell may ``await`` a widget's change.
- Comm callbacks are user code: they run under :meth:`UserCode.running` (an interrupt stops a
  busy callback like a cell), and an exception in one is shown as an ``error`` output of the
  comm message's request, not only logged.
- Binary buffers travel both ways as message buffers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import comm
from comm.base_comm import BaseComm, CommManager

from .protocol import Message

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["Comm", "install_comms", "message_dict"]

log = logging.getLogger("trikernel")


class Comm(BaseComm):
    """A comm whose messages go out on the kernel's iopub channel."""

    def __init__(self, *args: Any, kernel: Kernel, **kwargs: Any) -> None:
        self.kernel = kernel
        super().__init__(*args, **kwargs)

    def publish_msg(
        self,
        msg_type: str,
        data: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        buffers: Sequence[Any] | None = None,
        **keys: Any,
    ) -> None:
        content = {"data": dict(data or {}), "comm_id": self.comm_id, **keys}
        self.kernel.publish(
            msg_type,
            content,
            metadata=dict(metadata or {}),
            buffers=[bytes(b) for b in buffers or ()],
        )

    def handle_msg(self, msg: dict[str, Any]) -> None:
        self._run_callback(super().handle_msg, msg)

    def handle_close(self, msg: dict[str, Any]) -> None:
        self._run_callback(super().handle_close, msg)

    def _run_callback(self, handle: Any, msg: dict[str, Any]) -> None:
        try:
            handle(msg)
        except Exception:  # noqa: BLE001 - shown to the user, like an error in a cell
            # comm's manager would only log this; a notebook user should see it.
            self.kernel.shell.show_exception()


def install_comms(kernel: Kernel) -> CommManager:
    """Make ``comm.create_comm`` / ``comm.get_comm_manager`` serve this kernel."""
    manager = CommManager()

    def create_comm(*args: Any, **kwargs: Any) -> BaseComm:
        return Comm(*args, kernel=kernel, **kwargs)

    comm.create_comm = create_comm
    comm.get_comm_manager = lambda: manager
    return manager


def message_dict(msg: Message) -> dict[str, Any]:
    """A message in the dict shape ``comm`` and ipywidgets expect (jupyter_client's)."""
    return {
        "header": msg.header.to_dict(),
        "msg_id": msg.msg_id,
        "msg_type": msg.msg_type,
        "parent_header": dict(msg.parent_header),
        "metadata": dict(msg.metadata),
        "content": dict(msg.content),
        "buffers": [memoryview(b) for b in msg.buffers],
    }
