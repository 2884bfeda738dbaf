"""Run the demo notebook on a Jupyter kernel and print what every cell did.

Usage, from the repository root::

    python examples/run_demo.py                      # the installed ``trikernel`` kernelspec
    python examples/run_demo.py --kernel trikernel-test --output /tmp/demo-run.ipynb

Each cell is printed as a notebook shows it: its source (first line), then its outputs as text.
A display that a later cell updates is printed as it ends up, after the update.

Exit status: 0 if every cell ran (cells tagged ``raises-exception`` may fail, as nbclient
allows), 1 if another cell raised, 2 if the kernel could not be started, died or timed out.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

DEMO = Path(__file__).resolve().with_name("demo.ipynb")
SOURCE_WIDTH = 72


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Execute a notebook with nbclient and print each cell's outputs as text."
    )
    parser.add_argument(
        "--kernel",
        default="trikernel",
        help="kernelspec name to run the notebook on (default: %(default)s)",
    )
    parser.add_argument(
        "--notebook",
        type=Path,
        default=DEMO,
        help="notebook to execute (default: examples/demo.ipynb)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60,
        help="seconds each cell may run before the run fails (default: %(default)s)",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="also save the executed notebook here"
    )
    return parser.parse_args(argv)


def abbreviate(source: str, *, skip_comments: bool) -> str:
    """A cell in one line: its first line (of code, if ``skip_comments``), cut, and its length."""
    lines = source.strip().splitlines() or [""]
    if skip_comments:
        code = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        lines = code or lines
    first = lines[0]
    if len(first) > SOURCE_WIDTH:
        first = first[: SOURCE_WIDTH - 4] + " ..."
    total = len(source.strip().splitlines())
    return f"{first}  [{total} lines]" if total > 1 else first


def output_lines(output: dict[str, Any]) -> Iterator[str]:
    """An output as lines of text: ``<kind>| <text>`` for each line of it."""
    kind = output["output_type"]
    if kind == "stream":
        # Shell commands run in a pty, which ends lines with \r\n.
        text = output["text"].replace("\r\n", "\n")
        for line in text.splitlines():
            yield f"  {output['name']}| {line}"
    elif kind == "error":
        yield f"  error| {output['ename']}: {output['evalue']}"
    elif kind == "display_data":
        # Every mimetype is named; text/plain, the one a terminal can show, is printed.
        data = output["data"]
        label = f"display [{', '.join(sorted(data))}]"
        for line in data.get("text/plain", "").splitlines() or [""]:
            yield f"  {label}| {line}"
    else:
        yield f"  {kind}"


def merged_streams(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outputs with adjacent text of one stream joined, as a notebook frontend shows them.

    A kernel may send one printed line in two stream messages (its pieces arrive on either
    side of a flush); nbclient keeps them apart, JupyterLab joins them.
    """
    merged: list[dict[str, Any]] = []
    for output in outputs:
        last = merged[-1] if merged else None
        if (
            last is not None
            and output["output_type"] == "stream"
            and last["output_type"] == "stream"
            and last["name"] == output["name"]
        ):
            merged[-1] = {**last, "text": last["text"] + output["text"]}
        else:
            merged.append(output)
    return merged


def print_cell(cell: dict[str, Any]) -> None:
    """A cell as ``In [n]: source`` and its outputs; an execute_result as ``Out[n]: value``."""
    if cell["cell_type"] != "code":
        print(f"{cell['cell_type']}: {abbreviate(cell['source'], skip_comments=False)}")
        return
    count = cell.get("execution_count") or " "
    print(f"In [{count}]: {abbreviate(cell['source'], skip_comments=True)}")
    for output in merged_streams(cell.get("outputs", [])):
        if output["output_type"] == "execute_result":
            text = output["data"].get("text/plain", "")
            print(f"Out[{output['execution_count']}]: {text}")
        else:
            for line in output_lines(output):
                print(line)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    notebook_path: Path = args.notebook.resolve()
    nb = nbformat.read(notebook_path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=args.kernel,
        timeout=args.timeout,
        # The kernel starts in the notebook's directory, as it would in Jupyter.
        resources={"metadata": {"path": str(notebook_path.parent)}},
    )
    print(f"running {notebook_path.name} on kernel {args.kernel!r}")
    started = time.perf_counter()
    status = 0
    problem = ""
    try:
        client.execute()
    except CellExecutionError as exc:
        status = 1
        problem = f"a cell raised {exc.ename}: {exc.evalue} (not tagged raises-exception)"
    except NoSuchKernel:
        # Nothing ran, so there is nothing to show.
        print(
            f"no kernelspec named {args.kernel!r}; install trikernel's with "
            "`python -m trikernel install --user`, or pass --kernel",
            file=sys.stderr,
        )
        return 2
    except (CellTimeoutError, DeadKernelError, RuntimeError) as exc:
        # jupyter_client raises RuntimeError when the kernel dies or is silent as it starts.
        status = 2
        problem = f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - started

    if any(cell.get("execution_count") for cell in nb.cells):
        print()
        for cell in nb.cells:
            print_cell(cell)
        print()
    if args.output is not None:
        nbformat.write(nb, args.output)
        print(f"executed notebook saved to {args.output}")
    if status:
        print(f"FAILED after {elapsed:.1f} s: {problem}", file=sys.stderr)
    else:
        code_cells = sum(cell.cell_type == "code" for cell in nb.cells)
        print(f"ran {code_cells} code cells in {elapsed:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
