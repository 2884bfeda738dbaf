"""docs/async-notebooks.md on the real kernel, checked by docs/check_examples.py.

The checker runs as the docs session runs it, in a subprocess, against the test kernelspec;
its rules (what a block is, what output is compared) are tested on small texts without a kernel.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import TEST_KERNEL

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "docs" / "check_examples.py"
CHECK_TIMEOUT = 90  # below pytest-timeout's 120 s, so the checker's report is shown


def load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_examples", CHECKER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checker = load_checker()


def run_checker(*args: str) -> subprocess.CompletedProcess[str]:
    # conftest put the test kernelspec on JUPYTER_PATH, which the subprocess inherits.
    return subprocess.run(
        [sys.executable, str(CHECKER), "--kernel", TEST_KERNEL, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT,
        check=False,
    )


def guide(text: str) -> str:
    """A small guide, written indented in a test."""
    return textwrap.dedent(text).lstrip("\n")


def fence_line(text: str, source: str) -> int:
    """1-based line number of the fence that opens the block whose first line is ``source``."""
    # The fence is the line above the source, so its number is the source's 0-based index.
    return text.splitlines().index(source)


# -- the rules, without a kernel ------------------------------------------------------------


def test_blocks_pair_with_the_text_block_right_after_them() -> None:
    text = guide(
        """
        Prose.

        ```python
        x = 1
        ```

        ```python
        x + 1
        ```


        ```text
        2
        ```

        ```python no-run
        %tasks
        ```

        ```text
        shown, never compared
        ```

        ```python
        print(x)
        ```

        Prose between a cell and a text block: that text block is only shown.

        ```text
        1
        ```

        ```bash
        echo not python
        ```
        """
    )
    examples = checker.parse_examples(text)
    assert [(e.source, e.expected) for e in examples] == [
        ("x = 1", ""),
        ("x + 1", "2\n"),
        ("print(x)", ""),
    ]
    assert [e.line for e in examples] == [
        fence_line(text, "x = 1"),
        fence_line(text, "x + 1"),
        fence_line(text, "print(x)"),
    ]
    assert examples[1].expected_line == fence_line(text, "2")
    assert examples[2].expected_line is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("```python no_run\n1\n```\n", "unknown word(s) after python: no_run"),
        ("```python\n1\n", "never closed"),
        ("- a list item\n\n  ```python\n  1\n  ```\n", "must start at column 0"),
    ],
)
def test_guide_errors(text: str, message: str) -> None:
    with pytest.raises(checker.GuideError) as info:
        checker.parse_examples(guide(text))
    assert message in str(info.value)


def test_cell_text_rule() -> None:
    outputs = [
        {"output_type": "stream", "name": "stdout", "text": "printed\r\n"},
        {"output_type": "stream", "name": "stderr", "text": "warned\n"},
        {"output_type": "display_data", "data": {"text/plain": "shown", "text/html": "<b>"}},
        {"output_type": "display_data", "data": {"image/png": "..."}},
        {"output_type": "execute_result", "data": {"text/plain": "'value'"}},
        {"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": ["..."]},
        {"output_type": "error", "ename": "KeyboardInterrupt", "evalue": "", "traceback": []},
    ]
    assert checker.cell_text(outputs) == (
        "printed\nwarned\nshown\n'value'\nValueError: bad\nKeyboardInterrupt\n"
    )


# -- on the kernel --------------------------------------------------------------------------


@pytest.mark.slow
def test_guide_examples_match() -> None:
    proc = run_checker()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every output matches" in proc.stdout


@pytest.mark.slow
def test_wrong_expectations_and_unexpected_errors_are_caught(tmp_path: Path) -> None:
    text = guide(
        """
        # A guide with mistakes

        ```python
        x = 21
        ```

        ```python
        x * 2
        ```

        ```text
        43
        ```

        ```python
        print("as promised")
        ```

        ```text
        as promised
        ```

        ```python
        1 / 0
        ```

        ```python
        raise ValueError("on purpose")
        ```

        ```text
        ValueError: on purpose
        ```

        ```python
        print("unannounced")
        ```
        """
    )
    path = tmp_path / "guide.md"
    path.write_text(text, encoding="utf-8")
    proc = run_checker("--doc", str(path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = proc.stdout

    def at(source: str) -> str:
        return f"{path}:{fence_line(text, source)}:"

    # A wrong expectation: a diff against the text block.
    assert (
        f"{at('x * 2')} output differs\n--- expected ({path}:{fence_line(text, '43')})\n"
        "+++ actual\n@@ -1 +1 @@\n-43\n+42\n"
    ) in report
    # A failure the guide does not announce.
    assert f"{at('1 / 0')} unexpected failure (error): ZeroDivisionError: division by zero" in (
        report
    )
    # Output from a cell that has no text block.
    unannounced = at('print("unannounced")')
    assert f"{unannounced} output differs\n--- expected (no text block)" in report
    # The cells that did what the guide says are not reported.
    for source in ("x = 21", 'print("as promised")', 'raise ValueError("on purpose")'):
        assert at(source) not in report
    assert report.rstrip().endswith("3 problem(s)")
