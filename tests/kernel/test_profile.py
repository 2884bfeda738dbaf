"""The user's IPython profile (config files, startup files, exec_lines), used as ipykernel uses
it; and what libraries check to know they run in a Jupyter kernel.

Each test writes a profile of its own into the test session's ``IPYTHONDIR`` and starts a
kernel with ``--shell.profile=<name>``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.kernel.conftest import Kernel, outputs, start_kernel, stop_kernel, stream_text


def write_profile(files: dict[str, str]) -> str:
    """A new profile holding ``files`` (paths relative to its folder); return its name."""
    name = f"t{uuid.uuid4().hex[:8]}"
    folder = Path(os.environ["IPYTHONDIR"]) / f"profile_{name}"
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return name


@contextmanager
def kernel_with_profile(files: dict[str, str]) -> Iterator[Kernel]:
    """A kernel started with a new profile made of ``files``."""
    k = start_kernel({"extra_arguments": [f"--shell.profile={write_profile(files)}"]})
    try:
        yield k
    finally:
        stop_kernel(k)


def results(kernel: Kernel, code: str) -> list[str]:
    reply, msgs = kernel.execute(code)
    assert reply["content"]["status"] == "ok", reply["content"]
    return [m["content"]["data"]["text/plain"] for m in outputs(msgs, "execute_result")]


def test_profile_configures_the_shell_and_runs_its_startup_code() -> None:
    with kernel_with_profile(
        {
            "startup/00-first.py": "ORDER = ['startup .py']\n",
            "startup/10-second.ipy": (
                "ORDER.append('startup .ipy')\n%env TRIKERNEL_PROFILE_ENV=set\n"
            ),
            "ipython_config.py": (
                "c.InteractiveShell.ast_node_interactivity = 'all'\n"
                "c.InteractiveShellApp.exec_lines = ['ORDER.append(\"overridden\")']\n"
            ),
            "ipython_kernel_config.py": (
                "c.IPKernelApp.exec_lines = ['ORDER.append(\"kernel exec_lines\")']\n"
                "c.IPKernelApp.extensions = ['autoreload']\n"
            ),
        }
    ) as k:
        # As in ipykernel: startup files in name order, then exec_lines; the IPKernelApp
        # section of ipython_kernel_config over ipython_config's InteractiveShellApp.
        assert results(k, "ORDER") == ["['startup .py', 'startup .ipy', 'kernel exec_lines']"]
        # ast_node_interactivity = 'all': every expression of the cell is shown.
        assert results(k, "3\n4") == ["3", "4"]
        assert results(
            k,
            "import os\n"
            "(os.environ['TRIKERNEL_PROFILE_ENV'],"
            " 'autoreload' in get_ipython().magics_manager.magics['line'],"
            " 'ORDER' in get_ipython().run_line_magic('who_ls', ''))",
        ) == ["('set', True, False)"]  # what the startup code defined is hidden from %who


@pytest.mark.parametrize(
    ("startup_file", "error"),
    [
        # IPython shows this one itself, skips the later startup files and goes on.
        ("print('before the error')\n1 / 0\n", "ZeroDivisionError"),
        # IPython lets this one through; in the kernel's main task it would end the kernel.
        ("raise SystemExit(3)\n", "SystemExit"),
    ],
)
def test_failing_startup_code_is_logged_and_the_kernel_serves(
    startup_file: str, error: str
) -> None:
    with kernel_with_profile(
        {
            "startup/00-fails.py": startup_file,
            "ipython_kernel_config.py": "c.IPKernelApp.exec_lines = ['import sys; sys.exit(4)']\n",
        }
    ) as k:
        reply, msgs = k.execute("print('cell runs')")
        assert reply["content"]["status"] == "ok"
        assert stream_text(msgs) == "cell runs\n"
        log = k.log.read_text()
        assert "error in the IPython profile's startup code" in log
        assert error in log


def test_profile_with_a_bad_value_is_refused_in_the_log() -> None:
    with kernel_with_profile(
        {
            "ipython_config.py": "c.InteractiveShell.ast_node_interactivity = 42\n",
            "startup/00-never.py": "RAN = True\n",
        }
    ) as k:
        assert results(k, "3\n4\n'RAN' in globals()") == ["False"]
        log = k.log.read_text()
        assert "the kernel starts without it" in log
        assert "ast_node_interactivity" in log


def test_a_config_file_that_does_not_parse_is_skipped() -> None:
    with kernel_with_profile(
        {
            "ipython_config.py": "c.InteractiveShell.ast_node_interactivity = (\n",
            "ipython_kernel_config.py": "c.IPKernelApp.exec_lines = ['LOADED = True']\n",
        }
    ) as k:
        # IPython's own rule: the file is logged and skipped, the others still apply.
        assert results(k, "LOADED") == ["True"]
        assert "ipython_config.py" in k.log.read_text()


def test_an_extension_that_fails_to_load_is_logged_and_the_kernel_serves() -> None:
    with kernel_with_profile(
        {
            "ipython_kernel_config.py": (
                "c.IPKernelApp.extensions = ['no_such_extension_anywhere']\n"
                # IPython raises it then, rather than only logging it.
                "c.IPKernelApp.reraise_ipython_extension_failures = True\n"
            )
        }
    ) as k:
        assert results(k, "'serving'") == ["'serving'"]
        log = k.log.read_text()
        assert "error in the IPython profile's startup code" in log
        assert "no_such_extension_anywhere" in log


def inspect_data(kernel: Kernel, code: str) -> dict[str, str]:
    reply = kernel.reply(kernel.kc.inspect(code, len(code), 0))
    assert reply["content"]["found"], reply["content"]
    return dict(reply["content"]["data"])


def test_help_is_html_only_where_the_profile_asks_for_it(kernel: Kernel) -> None:
    assert set(inspect_data(kernel, "print")) == {"text/plain"}
    with kernel_with_profile(
        {"ipython_config.py": "c.InteractiveShell.enable_html_pager = True\n"}
    ) as k:
        assert set(inspect_data(k, "print")) == {"text/plain", "text/html"}


def test_libraries_see_a_jupyter_kernel(kernel: Kernel) -> None:
    """The tests libraries use to choose notebook output over terminal output say "Jupyter"
    (rich's and many progress bars' class name, pandas' "zmq", the IPKernelApp section)."""
    assert results(
        kernel,
        "ip = get_ipython()\n"
        "(type(ip).__name__, 'zmq' in str(type(ip)).lower(), 'IPKernelApp' in ip.config)",
    ) == ["('ZMQInteractiveShell', True, True)"]
    reply, msgs = kernel.execute("import rich\nrich.print('[bold]bold[/bold]')")
    assert reply["content"]["status"] == "ok"
    [shown] = outputs(msgs, "display_data")
    assert "font-weight: bold" in shown["content"]["data"]["text/html"]
    assert not outputs(msgs, "stream")


def test_ipykernels_command_line_options_as_jupyter_tools_add_them() -> None:
    """testbook adds --Kernel.stop_on_error_timeout, nbclient --HistoryManager.hist_file, VS
    Code the connection as options, users IPython's own: the kernel starts and uses them."""
    k = start_kernel(
        {
            "extra_arguments": [
                "--Kernel.stop_on_error_timeout=3",
                "--HistoryManager.hist_file=:memory:",
                "--InteractiveShell.xmode=Plain",
                "--IPKernelApp.exec_lines=FROM_EXEC_LINES = 1",
                '--transport="tcp"',
                '--Session.key=b"not-the-files-key"',
                "--debug",
                "--no-stdout",
            ]
        }
    )
    try:
        assert results(
            k,
            "shell = get_ipython()\n"
            "(str(shell.history_manager.hist_file), FROM_EXEC_LINES,"
            " shell.kernel.settings.shell.stop_on_error_timeout)",
        ) == ["(':memory:', 1, 3.0)"]
        reply, _ = k.execute("1/0")
        # xmode Plain: Python's own traceback layout, not IPython's context frames.
        first = re.sub(r"\x1b\[[0-9;]*m", "", reply["content"]["traceback"][0])
        assert first.startswith("Traceback (most recent call last):")
        log = k.log.read_text()
        # The connection file's key is used (the kernel answered); the option's is reported.
        assert "key (not shown) differs from the connection file's" in log
        assert "not-the-files-key" not in log
        assert "DEBUG" in log  # --debug
        # In the kernel's log format, as every other line of it.
        assert re.search(
            r"^\[trikernel WARNING [^]]+\] --no-stdout is ipykernel's; ignored$", log, re.M
        )
    finally:
        stop_kernel(k)


def test_the_working_directory_comes_after_the_standard_library(tmp_path: Path) -> None:
    """A notebook's folder holding `random.py` (or `signal.py`, which the kernel imports) no
    longer shadows the standard library; its other modules still import, as in ipykernel."""
    (tmp_path / "random.py").write_text("SHADOWS_THE_STDLIB = True\n")
    (tmp_path / "signal.py").write_text(
        "raise ImportError('the notebook folder shadowed signal')\n"
    )
    (tmp_path / "notebook_helpers.py").write_text("ANSWER = 42\n")
    k = start_kernel({"cwd": str(tmp_path)})
    try:
        assert results(
            k,
            "import random, notebook_helpers\n"
            "hasattr(random, 'SHADOWS_THE_STDLIB'), notebook_helpers.ANSWER",
        ) == ["(False, 42)"]
    finally:
        stop_kernel(k)


def test_what_ipython_says_while_the_shell_starts_is_in_the_kernels_log() -> None:
    """Before any request nothing printed reaches a frontend: IPython's own log (a config
    option nothing reads; a history database it had to move aside) and warnings then were
    lost. The kernel's log has them, as ipykernel's has."""
    with kernel_with_profile(
        {
            "ipython_kernel_config.py": "c.InteractiveShell.not_a_trait_of_the_shell = 1\n",
            "startup/00-warn.py": "import warnings\nwarnings.warn('a startup warning')\n",
        }
    ) as k:
        assert results(k, "1 + 1") == ["2"]  # the shell is up: startup has run
        log = k.log.read_text()
        assert "not_a_trait_of_the_shell" in log
        assert "a startup warning" in log
        # After startup a warning goes to its cell, as in ipykernel.
        _, msgs = k.execute("import warnings\nwarnings.warn('a cell warning')")
        assert "a cell warning" in stream_text(msgs, "stderr")
