"""The shell's history manager: IPython's history, written without making cells wait.

``trikernel.shell.HistoryManager`` writes the entries outside the lock that ``store_inputs`` takes as
each cell starts; writers still take turns, so a lookup that writes out first sees them all.
IPython's save thread writes once cells pause, so a burst of cells shares one transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShellABC

from trikernel import shell
from trikernel.shell import HistoryManager

TIMEOUT = 5.0


class _Shell:
    """All of a shell the history manager uses: where the ``_i`` variables go."""

    def push(self, variables: dict[str, Any], interactive: bool = True) -> None:
        pass


InteractiveShellABC.register(_Shell)


@pytest.fixture
def history(tmp_path: Path) -> Iterator[HistoryManager]:
    # A large cache: IPython's save thread stays asleep, so each test writes out by itself.
    hm = HistoryManager(shell=_Shell(), hist_file=tmp_path / "history.sqlite", db_cache_size=1000)
    yield hm
    hm.end_session()
    if hm.save_thread is not None:
        hm.save_thread.stop()


@pytest.fixture
def woken_per_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HistoryManager]:
    # IPython's default cache size: store_inputs wakes the save thread after every cell. The
    # pause is long enough that a test's burst of cells cannot contain one.
    monkeypatch.setattr(shell, "_HISTORY_LINGER", 0.5)
    hm = HistoryManager(shell=_Shell(), hist_file=tmp_path / "history.sqlite", db_cache_size=0)
    yield hm
    hm.end_session()
    if hm.save_thread is not None:
        hm.save_thread.stop()


def _recording_inserts(hm: HistoryManager) -> tuple[list[int], threading.Event]:
    """Record how many rows each SQL write of ``hm`` carries: (the counts, set after each)."""
    counts: list[int] = []
    wrote = threading.Event()
    insert = hm._insert

    def recording(conn: Any, sql: str, rows: list[Any]) -> None:
        insert(conn, sql, rows)
        if rows:
            counts.append(len(rows))
            wrote.set()

    hm._insert = recording  # type: ignore[method-assign]
    return counts, wrote


def _blocking_insert(hm: HistoryManager) -> tuple[threading.Event, threading.Event]:
    """Make the next SQL write of ``hm`` wait: (it started, let it go on)."""
    started, release = threading.Event(), threading.Event()
    insert = hm._insert

    def slow(*args: Any) -> None:
        started.set()
        assert release.wait(TIMEOUT)
        insert(*args)

    hm._insert = slow  # type: ignore[method-assign]
    return started, release


def _in_thread(fn: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=fn, args=args, daemon=True)
    thread.start()
    return thread


def test_storing_a_cell_does_not_wait_for_a_write_in_progress(history: HistoryManager) -> None:
    history.store_inputs(1, "a = 1")
    started, release = _blocking_insert(history)
    writer = _in_thread(history.writeout_cache)
    assert started.wait(TIMEOUT)
    # IPython's own writeout_cache held the cache lock here, for the whole transaction.
    storing = _in_thread(history.store_inputs, 2, "b = 2")
    storing.join(TIMEOUT)
    assert not storing.is_alive(), "store_inputs waited for the database"
    release.set()
    writer.join(TIMEOUT)
    assert [entry[2] for entry in history.get_tail(5, include_latest=True)] == ["a = 1", "b = 2"]


def test_a_lookup_waits_for_a_write_in_progress_and_sees_its_entries(
    history: HistoryManager,
) -> None:
    history.store_inputs(1, "a = 1")
    started, release = _blocking_insert(history)
    writer = _in_thread(history.writeout_cache)
    assert started.wait(TIMEOUT)
    found: list[Any] = []
    reader = _in_thread(lambda: found.extend(history.get_tail(5, include_latest=True)))
    reader.join(0.2)
    assert reader.is_alive(), "the lookup read the database before the write had finished"
    release.set()
    writer.join(TIMEOUT)
    reader.join(TIMEOUT)
    assert [entry[2] for entry in found] == ["a = 1"]


def test_outputs_are_written_with_the_inputs(history: HistoryManager) -> None:
    history.db_log_output = True
    history.store_inputs(1, "1 + 1")
    history.output_hist_reprs[1] = "2"
    history.store_output(1)
    history.writeout_cache()
    [entry] = history.get_tail(1, output=True, include_latest=True)
    assert entry[2] == ("1 + 1", "2")


def test_the_save_thread_writes_a_burst_of_cells_in_one_transaction(
    woken_per_cell: HistoryManager,
) -> None:
    counts, wrote = _recording_inserts(woken_per_cell)
    # Cells 10 ms apart for longer than one pause (50 ms), within the longest wait (0.25 s):
    # none of the gaps is a pause.
    for n in range(1, 9):
        woken_per_cell.store_inputs(n, f"x = {n}")
        time.sleep(0.01)
    assert wrote.wait(TIMEOUT), "the save thread wrote nothing"
    assert counts == [8]
    # Written by the save thread: in the database before anything asked for it.
    rows = woken_per_cell.db.execute("SELECT source FROM history ORDER BY line").fetchall()
    assert [row[0] for row in rows] == [f"x = {n}" for n in range(1, 9)]


def test_the_save_thread_writes_a_single_cell_once_cells_pause(
    woken_per_cell: HistoryManager,
) -> None:
    counts, wrote = _recording_inserts(woken_per_cell)
    woken_per_cell.store_inputs(1, "a = 1")
    assert wrote.wait(TIMEOUT), "the save thread did not write the cell"
    assert counts == [1]


def test_cells_that_never_pause_are_written_while_they_come(
    woken_per_cell: HistoryManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a kernel killed outright loses is what waits unwritten: cells stored without a
    # pause are written at least every 0.25 s (it was 1 s).
    monkeypatch.setattr(shell, "_HISTORY_LINGER", 0.05)  # the kernel's
    _, wrote = _recording_inserts(woken_per_cell)
    start = time.monotonic()
    n = 0
    # A cell every 10 ms (never a 50 ms pause) for 0.75 s, three times the longest wait.
    while not wrote.is_set() and time.monotonic() - start < 0.75:
        n += 1
        woken_per_cell.store_inputs(n, f"x = {n}")
        time.sleep(0.01)
    assert wrote.is_set(), f"nothing written while {n} cells came"
