"""``trikernel/protocol/`` stays sans-IO: no event loop, no sockets, no IPython.

The check reads the source with :mod:`ast` rather than importing it, so it sees imports hidden
in functions, ``try`` blocks and ``TYPE_CHECKING`` guards, and runs no import side effects.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "trikernel" / "protocol"

FORBIDDEN = frozenset({"trio", "zmq", "zmq_anyio", "anyio", "IPython", "ipykernel"})


def forbidden_imports(source: str, filename: str = "<source>") -> list[str]:
    """Every import in ``source`` of a forbidden top-level package, as ``line: module``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        elif (
            # importlib.import_module("trio") / __import__("zmq") with a literal name
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (
                    isinstance(node.func, ast.Name)
                    and node.func.id in {"__import__", "import_module"}
                )
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            modules = [node.args[0].value]
        found += [
            f"{node.lineno}: {module}"
            for module in modules
            if module.partition(".")[0] in FORBIDDEN
        ]
    return found


def protocol_modules() -> list[Path]:
    return sorted(PROTOCOL_DIR.rglob("*.py"))


def test_the_protocol_package_is_where_the_test_looks() -> None:
    names = {path.name for path in protocol_modules()}
    assert {"__init__.py", "wire.py", "jsonutil.py", "connection.py"} <= names


@pytest.mark.parametrize("path", protocol_modules(), ids=lambda p: str(p.relative_to(PROTOCOL_DIR)))
def test_protocol_module_imports_no_io_or_ipython(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert forbidden_imports(source, str(path)) == []


@pytest.mark.parametrize(
    "source",
    [
        "import trio",
        "import zmq.asyncio",
        "import zmq_anyio as za",
        "from anyio import sleep",
        "from IPython.core.interactiveshell import InteractiveShell",
        "import json, ipykernel",
        "def f():\n    import trio\n",
        "try:\n    import zmq\nexcept ImportError:\n    pass\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import trio\n",
        "class C:\n    def m(self):\n        from trio import lowlevel\n",
        "import importlib\nimportlib.import_module('trio')\n",
        "__import__('IPython')",
    ],
)
def test_the_check_catches_forbidden_imports(source: str) -> None:
    assert forbidden_imports(source)


@pytest.mark.parametrize(
    "source",
    [
        "import json",
        "from . import trio",  # a sibling module, not the trio package
        "from .zmq import x",
        "import triobox",
        "import zmqlike",
        "import ipython_genutils",
        "x = 'import trio'",
    ],
)
def test_the_check_allows_other_imports(source: str) -> None:
    assert forbidden_imports(source) == []
