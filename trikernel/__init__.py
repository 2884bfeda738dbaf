"""trikernel: a Jupyter kernel for Python that runs every cell on one trio loop.

The public API is what this module exports; ``tests/unit/test_exports.py`` pins it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if sys.argv[:1] == ["-m"] and sys.path[:1] == [str(Path.cwd())]:
    # `python -m trikernel` (sys.argv[0] is "-m" while runpy imports the package) put the
    # working directory first on sys.path, where a notebook's `random.py` or `signal.py`
    # shadowed the standard library, the kernel's own imports included. The shell puts it
    # back after the standard library, as IPython and ipykernel do (see trikernel.shell).
    del sys.path[0]

__version__ = "0.1.0"

from .kernel import Kernel as Kernel
from .kernel import RequestError as RequestError
from .kernel import ainput as ainput
from .settings import KernelSettings as KernelSettings
from .settings import SettingsError as SettingsError
from .tasks import background as background

if TYPE_CHECKING:
    from .kernelspec import get_kernel_dir as get_kernel_dir
    from .kernelspec import make_argv as make_argv
    from .kernelspec import write_kernel_spec as write_kernel_spec

__all__ = [
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

# The kernelspec helpers load on first use: a starting kernel does not need them (nor the
# jupyter_core and stdlib modules they import), and every millisecond before its sockets are
# bound is startup time (docs/architecture.md, "Startup").
_KERNELSPEC_NAMES = frozenset({"get_kernel_dir", "make_argv", "write_kernel_spec"})


def __getattr__(name: str) -> Any:
    if name in _KERNELSPEC_NAMES:
        from . import kernelspec

        value = getattr(kernelspec, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _KERNELSPEC_NAMES)
