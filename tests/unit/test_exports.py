"""The public surface: exactly these names, and importing it does not import IPython."""

from __future__ import annotations

import subprocess
import sys

import trikernel


def test_public_names_are_pinned() -> None:
    assert sorted(trikernel.__all__) == [
        "Kernel",
        "KernelSettings",
        "RequestError",
        "SettingsError",
        "__version__",
        "ainput",
        "background",
        "get_kernel_dir",
        "make_argv",
        "write_kernel_spec",
    ]
    for name in trikernel.__all__:
        assert getattr(trikernel, name) is not None


def test_importing_trikernel_leaves_ipython_for_later() -> None:
    # IPython is the slowest import; the kernel loads it once its sockets are bound.
    code = "import sys, trikernel; print('IPython' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
