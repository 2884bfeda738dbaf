"""Test-wide set-up: a kernelspec for the interpreter running the tests.

Protocol tests start the real kernel through jupyter_client, which finds kernels by name on
JUPYTER_PATH. Before any test is collected, a ``trikernel-test`` spec running ``sys.executable``
is written to a temporary directory put first on JUPYTER_PATH, so the tests exercise the
trikernel importable here (the checkout, or the nox session's install), never another one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

TEST_KERNEL = "trikernel-test"
_ROOT = Path(__file__).resolve().parents[1]
_tmp: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _tmp
    _tmp = Path(tempfile.mkdtemp(prefix="trikernel-tests-"))
    spec_dir = _tmp / "kernels" / TEST_KERNEL
    spec_dir.mkdir(parents=True)
    env = {
        # The kernel's IPython keeps its history and profile out of the user's home.
        "IPYTHONDIR": str(_tmp / "ipython"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])),
    }
    spec = {
        "argv": [sys.executable, "-m", "trikernel", "-f", "{connection_file}"],
        "display_name": "trikernel (tests)",
        "language": "python",
        "interrupt_mode": "message",
        # As the shipped spec: lets a KernelManager with transport_encryption="required" start it.
        "metadata": {"supported_encryption": ["curve"]},
        "env": env,
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        filter(None, [str(_tmp), os.environ.get("JUPYTER_PATH")])
    )
    os.environ["IPYTHONDIR"] = env["IPYTHONDIR"]


def pytest_unconfigure(config: pytest.Config) -> None:
    if _tmp is not None:
        shutil.rmtree(_tmp, ignore_errors=True)
