"""trikernel: a Jupyter kernel for Python that runs every cell on one trio loop.

The public API is what this module exports; ``tests/unit/test_exports.py`` pins it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .kernel import Kernel as Kernel
from .kernel import RequestError as RequestError
from .kernel import ainput as ainput
from .kernelspec import get_kernel_dir as get_kernel_dir
from .kernelspec import make_argv as make_argv
from .kernelspec import write_kernel_spec as write_kernel_spec
from .settings import KernelSettings as KernelSettings
from .settings import SettingsError as SettingsError
from .tasks import background as background

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
