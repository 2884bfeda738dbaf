"""Subshells (protocol 5.5, JEP 91): queues of their own, run concurrently on the trio loop."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kernel.conftest import Kernel, outputs, stream_text


def control(kernel: Kernel, msg_type: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    return kernel.reply(kernel.control(msg_type, content), "control")["content"]


def execute_in(kernel: Kernel, subshell: object, code: str) -> str:
    msg = kernel.kc.session.msg(
        "execute_request",
        {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
    )
    if subshell is not None:
        msg["header"]["subshell_id"] = subshell
    kernel.kc.shell_channel.send(msg)
    return str(msg["header"]["msg_id"])


def test_kernel_info_announces_subshells(kernel: Kernel) -> None:
    info = control(kernel, "kernel_info_request")
    assert info["protocol_version"] == "5.5"
    assert "kernel subshells" in info["supported_features"]


def test_create_list_delete(kernel: Kernel) -> None:
    created = control(kernel, "create_subshell_request")
    subshell = created["subshell_id"]
    assert subshell in control(kernel, "list_subshell_request")["subshell_id"]
    assert control(kernel, "delete_subshell_request", {"subshell_id": subshell})["status"] == "ok"
    assert subshell not in control(kernel, "list_subshell_request")["subshell_id"]
    gone = control(kernel, "delete_subshell_request", {"subshell_id": subshell})
    assert gone["status"] == "error"


def test_subshell_runs_while_the_parent_cell_awaits(kernel: Kernel) -> None:
    subshell = control(kernel, "create_subshell_request")["subshell_id"]
    kernel.execute("import trio\nreleased = trio.Event()")
    parent = execute_in(
        kernel, None, "print('parent waiting', flush=True)\nawait released.wait()\n'parent done'"
    )
    kernel.iopub_until(parent, lambda m: m["msg_type"] == "stream")
    # The parent shell is busy with a cell; the subshell answers, and releases it.
    child = execute_in(kernel, subshell, "released.set()\n'subshell ran'")
    replies = kernel.replies(child, parent)
    assert replies[child]["content"]["status"] == "ok"
    assert replies[child]["parent_header"]["subshell_id"] == subshell
    assert replies[parent]["content"]["status"] == "ok"
    control(kernel, "delete_subshell_request", {"subshell_id": subshell})


def test_failure_in_a_subshell_aborts_only_its_own_queue(kernel: Kernel) -> None:
    subshell = control(kernel, "create_subshell_request")["subshell_id"]
    failing = execute_in(kernel, subshell, "import time\ntime.sleep(0.2)\n1/0")
    queued_in_subshell = execute_in(kernel, subshell, "'aborted?'")
    parent = execute_in(kernel, None, "'parent unaffected'")
    replies = kernel.replies(failing, queued_in_subshell, parent)
    assert replies[failing]["content"]["ename"] == "ZeroDivisionError"
    assert replies[queued_in_subshell]["content"]["status"] == "aborted"
    assert replies[parent]["content"]["status"] == "ok"
    control(kernel, "delete_subshell_request", {"subshell_id": subshell})


@pytest.mark.parametrize(
    ("subshell", "evalue"),
    [
        ("no-such-subshell", "no subshell 'no-such-subshell'"),
        # Not a string: refused, never run in the parent shell as if no subshell were named.
        (5, "subshell_id must be a string, got 5"),
        (["a"], "subshell_id must be a string, got ['a']"),
    ],
    ids=["unknown", "number", "list"],
)
def test_request_for_an_unknown_subshell_gets_an_error(
    kernel: Kernel, subshell: Any, evalue: str
) -> None:
    msg_id = execute_in(kernel, subshell, "print('ran')")
    reply = kernel.reply(msg_id)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "UnknownSubshell"
    assert reply["content"]["evalue"] == evalue
    msgs = kernel.until_idle(msg_id)
    assert [m["content"]["execution_state"] for m in outputs(msgs, "status")] == ["busy", "idle"]
    assert stream_text(msgs) == ""
    assert stream_text(kernel.execute("print('fine')")[1]) == "fine\n"


def test_deleting_a_subshell_answers_every_request_sent_to_it(kernel: Kernel) -> None:
    subshell = control(kernel, "create_subshell_request")["subshell_id"]
    running = execute_in(
        kernel, subshell, "import trio\nprint('waiting', flush=True)\nawait trio.sleep(30)"
    )
    kernel.iopub_until(running, lambda m: m["msg_type"] == "stream")
    queued = execute_in(kernel, subshell, "'never run'")
    assert control(kernel, "delete_subshell_request", {"subshell_id": subshell})["status"] == "ok"
    # A frontend waiting on either would wait for ever without its reply.
    replies = kernel.replies(running, queued)
    assert replies[running]["content"]["ename"] == "KeyboardInterrupt"
    # Aborted if it was in the subshell's queue when the delete came, refused as sent to a
    # subshell that is gone if the delete (on control) overtook it on its way there.
    queued_reply = replies[queued]["content"]
    assert queued_reply["status"] == "aborted" or queued_reply["ename"] == "UnknownSubshell"
    kernel.all_until_idle(running, queued)
    assert kernel.execute("1 + 1")[0]["content"]["status"] == "ok"
