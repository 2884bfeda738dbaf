"""The demo notebook on the real kernel, through nbclient as Jupyter tools run notebooks.

``examples/demo.ipynb`` is executed once per module; each of its code cells (named by cell id)
has its outputs pinned exactly below. ``examples/run_demo.py`` is then run as a user would,
in a subprocess, and its printed report and exit status are checked.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from tests.conftest import TEST_KERNEL

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.ipynb"
RUN_DEMO = ROOT / "examples" / "run_demo.py"

# Every demo cell takes well under a second; these bounds only turn a hang into a failure.
CELL_TIMEOUT = 30
RUN_DEMO_TIMEOUT = 90  # below pytest-timeout's 120 s, so the subprocess's output is shown

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Matching:
    """Equal to any string that a regular expression matches in full (for timings)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(self.pattern, other) is not None

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Matching({self.pattern!r})"


def stream(name: str, text: str | Matching) -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def display(data: dict[str, str]) -> dict[str, Any]:
    return {"output_type": "display_data", "data": data, "metadata": {}}


def result(count: int, text: str) -> dict[str, Any]:
    return {
        "output_type": "execute_result",
        "execution_count": count,
        "data": {"text/plain": text},
        "metadata": {},
    }


def error(ename: str, evalue: str) -> dict[str, Any]:
    # The traceback is checked on its own (test_error_traceback): its styling is IPython's.
    return {"output_type": "error", "ename": ename, "evalue": evalue}


# Code cell id -> (execution count, outputs). Cells run in order, so the counts are 1..n; an
# execute_result carries its cell's count.
EXPECTED: dict[str, tuple[int, list[dict[str, Any]]]] = {
    "prints": (
        1,
        [
            stream("stdout", "hello from trikernel\ntwo plus two is 4\n"),
            stream("stderr", "stderr is a stream of its own\n"),
        ],
    ),
    "rich-display": (
        2,
        [
            display(
                {
                    "text/html": "<b>HTML</b> output, rendered by the frontend",
                    "text/plain": "<IPython.core.display.HTML object>",
                }
            ),
            display(
                {
                    "text/markdown": "*Markdown* output, too",
                    "text/plain": "<IPython.core.display.Markdown object>",
                }
            ),
        ],
    ),
    # Displayed as 'step 0 of 3'; the next cell's updates (update_display_data, matched by the
    # display id the kernel put in `transient`) rewrote it where it stands.
    "display-handle": (3, [display({"text/plain": "'step 3 of 3'"})]),
    "display-update": (4, []),
    "execute-result": (5, [result(5, "[0, 1, 4, 9, 16, 25]")]),
    "error": (
        6,
        [stream("stdout", "about to fail\n"), error("ValueError", "this cell fails on purpose")],
    ),
    "top-level-await": (
        7,
        [stream("stdout", "slept at least 0.1 s on the kernel's trio loop: True\n")],
    ),
    # The task spawned in channel-open answers in channel-use: it outlived its cell.
    "channel-open": (8, []),
    "channel-use": (9, [stream("stdout", "ONE\nLOOP\nMANY\nCELLS\n")]),
    "same-loop": (10, [result(10, "True")]),
    "nursery": (
        11,
        [
            stream(
                "stdout",
                "fast child finished after 0.01 s\n"
                "slow child finished after 0.05 s\n"
                "the nursery waited for both children\n",
            )
        ],
    ),
    "sniffio": (12, [result(12, "'trio'")]),
    "background-start": (13, []),
    # The age column of %tasks is the only part that varies.
    "background-tasks": (
        14,
        [
            stream(
                "stdout",
                Matching(
                    r"ticked at least 3 times: True\n"
                    r"name    state    cell  age\n"
                    r"ticker  running  13    \d+\.\d s\n"
                ),
            )
        ],
    ),
    "background-cancel": (
        15,
        [stream("stdout", "cancelled background task 'ticker'\n"), result(15, "'cancelled'")],
    ),
    "timeout": (16, [error("TimeoutError", "the cell ran past its 0.2 s deadline")]),
    "time-magic": (
        17,
        [
            stream("stdout", Matching(r"CPU times: user .+, sys: .+, total: .+\nWall time: .+\n")),
            result(17, "4999950000"),
        ],
    ),
    # `!cmd` runs in a pty, which ends lines with \r\n (as under ipykernel).
    "shell": (18, [stream("stdout", "hello from the shell\r\n")]),
}


def comparable(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outputs as plain dicts, consecutive writes to one stream joined, tracebacks set aside.

    How a cell's printing is cut into ``stream`` messages depends on when the kernel flushes;
    what a frontend shows (the joined text, stdout and stderr in order) does not.
    """
    joined: list[dict[str, Any]] = []
    for output in outputs:
        out = {key: value for key, value in output.items() if key != "traceback"}
        previous = joined[-1] if joined else None
        if (
            previous is not None
            and out["output_type"] == "stream"
            and previous["output_type"] == "stream"
            and previous["name"] == out["name"]
        ):
            previous["text"] += out["text"]
        else:
            joined.append(out)
    return joined


@pytest.fixture(scope="module")
def executed() -> nbformat.NotebookNode:
    """The demo notebook after nbclient ran it on the test kernel."""
    nb = nbformat.read(DEMO, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=TEST_KERNEL,
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(DEMO.parent)}},
    )
    # Raises CellExecutionError if a cell not tagged raises-exception fails.
    client.execute()
    return nb


def cell_by_id(nb: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode:
    [cell] = [cell for cell in nb.cells if cell.id == cell_id]
    return cell


def test_demo_is_stored_without_outputs() -> None:
    nb = nbformat.read(DEMO, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec == {
        "name": "trikernel",
        "display_name": "Python 3 (trikernel)",
        "language": "python",
    }
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    # Every code cell has its outputs pinned below, and no expectation names a missing cell.
    assert [cell.id for cell in code] == list(EXPECTED)
    assert cell_by_id(nb, "error").metadata.tags == ["raises-exception"]
    assert cell_by_id(nb, "timeout").metadata.tags == ["raises-exception"]


@pytest.mark.parametrize("cell_id", list(EXPECTED))
def test_cell_outputs(executed: nbformat.NotebookNode, cell_id: str) -> None:
    count, outputs = EXPECTED[cell_id]
    cell = cell_by_id(executed, cell_id)
    assert cell.execution_count == count
    assert comparable(cell.outputs) == outputs


def test_markdown_cells_are_untouched(executed: nbformat.NotebookNode) -> None:
    original = nbformat.read(DEMO, as_version=4)
    markdown = [cell for cell in executed.cells if cell.cell_type == "markdown"]
    assert len(markdown) == 6
    assert markdown == [cell for cell in original.cells if cell.cell_type == "markdown"]


def test_display_update_replaced_the_first_display(executed: nbformat.NotebookNode) -> None:
    # The text the cell displayed first is not what it shows now: only an update_display_data
    # for its display id can have changed it.
    assert (
        'display("step 0 of 3", display_id=True)' in cell_by_id(executed, "display-handle").source
    )
    assert cell_by_id(executed, "display-handle").outputs[0].data == {"text/plain": "'step 3 of 3'"}


def test_error_traceback(executed: nbformat.NotebookNode) -> None:
    [_, err] = cell_by_id(executed, "error").outputs
    lines = [ANSI.sub("", line) for line in err.traceback]
    assert lines[-1] == "ValueError: this cell fails on purpose"
    # The frame shown is the cell's, named by its execution count, at the line that raised.
    assert any(line.startswith("Cell In[6], line 2\n") for line in lines), lines


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    # conftest put the test kernelspec on JUPYTER_PATH, which the subprocess inherits.
    return subprocess.run(
        [
            sys.executable,
            str(RUN_DEMO),
            "--kernel",
            TEST_KERNEL,
            "--timeout",
            str(CELL_TIMEOUT),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_DEMO_TIMEOUT,
        check=False,
    )


def test_run_demo_prints_every_cell(tmp_path: Path) -> None:
    saved = tmp_path / "demo-run.ipynb"
    proc = run_demo("--output", str(saved))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    expected = [
        f"running demo.ipynb on kernel {TEST_KERNEL!r}",
        "markdown: # trikernel: Python on one trio loop  [9 lines]",
        "In [1]: import sys  [5 lines]",
        "  stdout| hello from trikernel",
        "  stdout| two plus two is 4",
        "  stderr| stderr is a stream of its own",
        "  display [text/html, text/plain]| <IPython.core.display.HTML object>",
        "  display [text/markdown, text/plain]| <IPython.core.display.Markdown object>",
        'In [3]: progress = display("step 0 of 3", display_id=True)',
        "  display [text/plain]| 'step 3 of 3'",
        "Out[5]: [0, 1, 4, 9, 16, 25]",
        "  error| ValueError: this cell fails on purpose",
        "  stdout| slept at least 0.1 s on the kernel's trio loop: True",
        "  stdout| ONE",
        "  stdout| CELLS",
        "In [10]: trio.lowlevel.current_trio_token() is loop_token  [2 lines]",
        "Out[10]: True",
        "  stdout| fast child finished after 0.01 s",
        "  stdout| slow child finished after 0.05 s",
        "Out[12]: 'trio'",
        "  stdout| ticked at least 3 times: True",
        "  stdout| cancelled background task 'ticker'",
        "Out[15]: 'cancelled'",
        "  error| TimeoutError: the cell ran past its 0.2 s deadline",
        "Out[17]: 4999950000",
        "  stdout| hello from the shell",
        f"executed notebook saved to {saved}",
    ]
    # In this order, other lines between them: `in` on an iterator consumes it up to the match.
    remaining = iter(lines)
    assert [line for line in expected if line not in remaining] == [], proc.stdout
    assert re.fullmatch(r"ran 18 code cells in \d+\.\d s", lines[-1]), proc.stdout
    assert [
        cell.execution_count
        for cell in nbformat.read(saved, as_version=4).cells
        if cell.cell_type == "code"
    ] == list(range(1, 19))


def test_run_demo_fails_on_an_untagged_error(tmp_path: Path) -> None:
    notebook = tmp_path / "broken.ipynb"
    cells = [
        new_code_cell("print('first')"),
        new_code_cell("1 / 0"),
        new_code_cell("print('never')"),
    ]
    nbformat.write(new_notebook(cells=cells), notebook)
    proc = run_demo("--notebook", str(notebook))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[2:7] == [
        "In [1]: print('first')",
        "  stdout| first",
        "In [2]: 1 / 0",
        "  error| ZeroDivisionError: division by zero",
        "In [ ]: print('never')",
    ]
    assert "a cell raised ZeroDivisionError: division by zero (not tagged raises-exception)" in (
        proc.stderr
    )
