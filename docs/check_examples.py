"""Run the examples of a markdown guide as one notebook and check every cell's output.

Usage, from the repository root::

    python docs/check_examples.py                          # docs/async-notebooks.md on "trikernel"
    python docs/check_examples.py --kernel trikernel-test --doc docs/async-notebooks.md

The rules a guide follows (fences start at column 0):

- Every ```` ```python ```` block is one notebook cell. The cells run in the order of the page,
  in one kernel, so a block sees what the blocks above it defined. A ```` ```python no-run ````
  block is shown, never run; any other word after ``python`` is refused, so that a misspelt
  ``no-run`` cannot make a block run (or not run) unnoticed. An indented ```` ```python ````
  fence is refused too: it would otherwise be skipped without a word.
- A ```` ```text ```` block that follows a runnable block, with nothing but blank lines between
  them, is that cell's exact expected output. A runnable block with no such block must have no
  output at all. A ```` ```text ```` block anywhere else (after a ``no-run`` block, after prose)
  is only shown.
- A cell's output, as compared, is made from its outputs in the order they arrived:

  - ``stream`` (stdout and stderr alike): its text as is, except that ``\\r\\n`` becomes ``\\n``
    (shell commands run in a pty);
  - ``execute_result`` and ``display_data``: the ``text/plain`` value and a newline (nothing if
    there is no ``text/plain``);
  - ``error``: the line ``ErrorName: evalue`` and a newline, or just ``ErrorName`` when the value
    is empty (as Python prints ``KeyboardInterrupt``). The traceback is not compared: its
    styling and paths are IPython's.
  - Other outputs (updates of a display, ``clear_output``) have been applied by nbclient
    already and add nothing.

  The expected output is the ``text`` block's lines, each followed by a newline, and the two
  must be equal.
- A cell *fails* when its ``execute_reply`` does not say ``ok``. That is expected only if the
  cell has a ``text`` block that ends with the reply's error line, ``ErrorName: evalue``
  (a ``UsageError`` from a magic is printed to stderr rather than sent as an ``error`` output;
  its stderr line is the same text). Any other failure is reported as unexpected.

Exit status: 0 if every cell matched; 1 if an output differed, a cell failed unexpectedly, a
cell timed out, or the kernel died or did not start; 2 if the guide breaks the rules above or
there is no kernelspec of that name.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from jupyter_client.kernelspec import NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.v4 import new_code_cell, new_notebook

GUIDE = Path(__file__).resolve().with_name("async-notebooks.md")

_FENCE = re.compile(r"(?P<fence>`{3,})(?P<info>[^`]*)")
_RUN_FLAGS = {"no-run"}


class GuideError(ValueError):
    """The guide breaks one of the rules in the module docstring."""


@attrs.frozen
class Block:
    """A fenced block of the guide."""

    language: str
    """The first word of the info string (``python``, ``text``, ...; empty if none)."""
    flags: tuple[str, ...]
    """The other words of the info string (``no-run``)."""
    body: str
    """The lines between the fences, each ending with a newline."""
    line: int
    """1-based line number of the opening fence."""
    end: int
    """1-based line number of the closing fence."""


@attrs.frozen
class Example:
    """A runnable ``python`` block and what it must print."""

    source: str
    """The cell's code."""
    line: int
    """1-based line number of its opening fence in the guide."""
    expected: str
    """Its expected output text (empty if the guide gives none)."""
    expected_line: int | None
    """Line of the ``text`` block's opening fence, if there is one."""


def parse_blocks(text: str) -> list[Block]:
    """Every fenced block of a markdown text, in order.

    Raises:
        GuideError: a fence is not closed, or a ``python`` fence is indented.
    """
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        opening = _FENCE.fullmatch(line.rstrip())
        if opening is None:
            if line.lstrip().startswith("```python"):
                raise GuideError(f"line {i + 1}: a python fence must start at column 0")
            i += 1
            continue
        words = opening["info"].split()
        fence = opening["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (
            lines[j].startswith(fence) and lines[j].rstrip().strip("`") == ""
        ):
            body.append(lines[j] + "\n")
            j += 1
        if j == len(lines):
            raise GuideError(f"line {i + 1}: the fence opened here is never closed")
        blocks.append(
            Block(
                language=words[0] if words else "",
                flags=tuple(words[1:]),
                body="".join(body),
                line=i + 1,
                end=j + 1,
            )
        )
        i = j + 1
    return blocks


def parse_examples(text: str) -> list[Example]:
    """The runnable examples of a guide, each with its expected output (module docstring).

    Raises:
        GuideError: the guide breaks a rule.
    """
    lines = text.splitlines()
    blocks = parse_blocks(text)
    examples: list[Example] = []
    for index, block in enumerate(blocks):
        if block.language != "python":
            continue
        unknown = set(block.flags) - _RUN_FLAGS
        if unknown:
            raise GuideError(
                f"line {block.line}: unknown word(s) after python: {' '.join(sorted(unknown))} "
                f"(known: {' '.join(sorted(_RUN_FLAGS))})"
            )
        if "no-run" in block.flags:
            continue
        expected, expected_line = "", None
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        if (
            following is not None
            and following.language == "text"
            and all(not line.strip() for line in lines[block.end : following.line - 1])
        ):
            expected, expected_line = following.body, following.line
        examples.append(
            Example(
                source=block.body.rstrip("\n"),
                line=block.line,
                expected=expected,
                expected_line=expected_line,
            )
        )
    return examples


def error_line(ename: str, evalue: str) -> str:
    """How an error shows in a cell's text: ``ErrorName: evalue``, or ``ErrorName`` alone."""
    return f"{ename}: {evalue}" if evalue else ename


def cell_text(outputs: Iterable[Mapping[str, Any]]) -> str:
    """A cell's outputs as the text the guide's ``text`` blocks hold (module docstring)."""
    parts: list[str] = []
    for output in outputs:
        kind = output.get("output_type")
        if kind == "stream":
            parts.append(str(output.get("text", "")).replace("\r\n", "\n"))
        elif kind in ("execute_result", "display_data"):
            plain = output.get("data", {}).get("text/plain")
            if plain is not None:
                parts.append(f"{plain}\n")
        elif kind == "error":
            parts.append(error_line(str(output.get("ename", "")), str(output.get("evalue", ""))))
            parts.append("\n")
    return "".join(parts)


def diff(expected: str, actual: str, *, label: str) -> str:
    """A unified diff of expected and actual output, readable even for whitespace changes."""
    lines = list(
        difflib.unified_diff(
            expected.splitlines(),
            actual.splitlines(),
            fromfile=f"expected ({label})",
            tofile="actual",
            lineterm="",
        )
    )
    if not lines:  # only line endings differ
        lines = [f"expected: {expected!r}", f"actual:   {actual!r}"]
    return "\n".join(lines)


def check(
    examples: Sequence[Example],
    *,
    kernel: str,
    timeout: float,
    doc: Path,
) -> list[str]:
    """Run the examples as one notebook on ``kernel``; return a report of each problem.

    Raises:
        NoSuchKernel: there is no kernelspec called ``kernel``.
    """
    nb = new_notebook(cells=[new_code_cell(example.source) for example in examples])
    replies: dict[int, Mapping[str, Any]] = {}

    def keep_reply(cell: Any, cell_index: int, execute_reply: Mapping[str, Any]) -> None:
        replies[cell_index] = execute_reply["content"]

    client = NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=timeout,
        # Failures are judged below, against the guide, not by nbclient.
        allow_errors=True,
        on_cell_executed=keep_reply,
        resources={"metadata": {"path": str(doc.parent)}},
    )
    problems: list[str] = []
    try:
        client.execute()
    except (CellTimeoutError, DeadKernelError, RuntimeError) as exc:
        # jupyter_client raises RuntimeError when the kernel dies or is silent as it starts.
        at = len(replies)
        where = f"{doc}:{examples[at].line}: " if at < len(examples) else ""
        problems.append(f"{where}the run stopped: {type(exc).__name__}: {exc}")
    for index, (example, cell) in enumerate(zip(examples, nb.cells, strict=True)):
        reply = replies.get(index)
        if reply is None:
            continue  # not run: the run stopped before it (reported above)
        where = f"{doc}:{example.line}"
        actual = cell_text(cell.outputs)
        if reply.get("status") != "ok":
            line = error_line(str(reply.get("ename", "")), str(reply.get("evalue", "")))
            if example.expected_line is None or not example.expected.endswith(f"{line}\n"):
                problems.append(
                    f"{where}: unexpected failure ({reply.get('status')}): {line}\n"
                    f"its output:\n{_indent(actual or '(none)')}"
                )
                continue
        if actual != example.expected:
            label = f"{doc}:{example.expected_line}" if example.expected_line else "no text block"
            problems.append(
                f"{where}: output differs\n{diff(example.expected, actual, label=label)}"
            )
    return problems


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run a guide's python examples as one notebook and check their outputs."
    )
    parser.add_argument(
        "--kernel",
        default="trikernel",
        help="kernelspec name to run the examples on (default: %(default)s)",
    )
    parser.add_argument(
        "--doc",
        type=Path,
        default=GUIDE,
        help="the markdown guide (default: docs/async-notebooks.md)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30,
        help="seconds each cell may run before the check fails (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    doc: Path = args.doc
    try:
        examples = parse_examples(doc.read_text(encoding="utf-8"))
    except (OSError, GuideError) as exc:
        print(f"{doc}: {exc}", file=sys.stderr)
        return 2
    if not examples:
        print(f"{doc}: no runnable python blocks", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        problems = check(examples, kernel=args.kernel, timeout=args.timeout, doc=doc)
    except NoSuchKernel:
        print(f"no kernelspec named {args.kernel!r}; pass --kernel", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    checked = sum(example.expected_line is not None for example in examples)
    summary = (
        f"{doc}: {len(examples)} cells ({checked} with a text block) "
        f"on kernel {args.kernel!r} in {elapsed:.1f} s"
    )
    if problems:
        for problem in problems:
            print(problem, end="\n\n")
        print(f"{summary}: {len(problems)} problem(s)")
        return 1
    print(f"{summary}: every output matches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
