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
    # Every import before the sockets are bound is startup time: IPython (the slowest) and the
    # other main-thread-only modules load once they are bound; the kernelspec helpers on use.
    later = ["IPython", "comm", "greenback", "jupyter_core", "trikernel.kernelspec"]
    code = f"import sys, trikernel; print([m for m in {later!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_kernelspec_helpers_load_on_first_use() -> None:
    from trikernel import kernelspec, make_argv

    assert make_argv is kernelspec.make_argv
    assert trikernel.write_kernel_spec is kernelspec.write_kernel_spec
    assert {"get_kernel_dir", "make_argv", "write_kernel_spec"} <= set(dir(trikernel))
