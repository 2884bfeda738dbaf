"""trikernel: a Jupyter kernel for Python that runs every cell on one trio loop."""

from __future__ import annotations

__version__ = "0.1.0"
