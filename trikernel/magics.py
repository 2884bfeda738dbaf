"""The magics a kernel adds to IPython's: those of ipykernel that notebooks use, and our own.

IPython's own magics assume a terminal in a few places (``%edit`` starts an editor and waits
for it, ``%less`` and ``%man`` page through one). A kernel has no terminal, so ipykernel
replaces those and adds a few of its own; notebooks written for ipykernel use them, and a
magic that is missing is an error, which stops "Run All" at that cell. Here they are, each
doing what a frontend can show:

- ``%connect_info`` prints the connection file and how to attach another frontend to it;
  ``%qtconsole`` starts a Qt console attached to this kernel.
- ``%edit`` asks the frontend to open the file (an ``edit_magic`` payload, which qtconsole
  opens and notebooks ignore); ``%less``, ``%more`` and ``%man`` page through a payload.
- ``%clear`` clears a terminal frontend's screen; ``%autosave`` sets the classic notebook's
  autosave interval.
- trikernel's own: ``%autoawait`` (always trio), ``%tasks`` and ``%cancel`` (background tasks),
  and ``%%timeout`` (read by the kernel before the cell runs; here only to say so).
"""

from __future__ import annotations

import getopt
import importlib.util
import json
import shlex
import subprocess
import sys
import time
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core import page
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magics.code import CodeMagics, InteractivelyDefined, MacroToEdit

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["KernelMagics"]


class KernelMagics:
    """The kernel's magics (see the module's list); :meth:`register` adds them to its shell.

    Args:
        shell: the shell they run in.
        kernel_of: returns the running kernel (asked at each call: the shell is made before
            the kernel has bound its sockets).
    """

    def __init__(self, shell: InteractiveShell, kernel_of: Callable[[], Kernel]) -> None:
        self._shell = shell
        self._ipython: Any = shell
        """The shell, for the calls into IPython that are not typed."""
        self._kernel_of = kernel_of
        self._last_edit = ["", ""]
        """What IPython's ``%edit -p`` reads: the previous %edit's target."""

    def register(self) -> None:
        """Add the magics to the shell, over IPython's of the same names."""
        for kind, name, fn in (
            ("line", "connect_info", self.connect_info),
            ("line", "qtconsole", self.qtconsole),
            ("line", "edit", self.edit),
            ("line", "ed", self.edit),
            ("line", "less", self.less),
            ("line", "more", self.less),
            ("line", "man", self.man),
            ("line", "clear", self.clear),
            ("line", "autosave", self.autosave),
            ("line", "autoawait", self.autoawait),
            ("line", "tasks", self.tasks),
            ("line", "cancel", self.cancel),
            ("cell", "timeout", self.timeout),
        ):
            self._ipython.register_magic_function(fn, kind, name)

    @property
    def _payloads(self) -> Any:
        assert self._shell.payload_manager is not None  # made in InteractiveShell.__init__
        return self._shell.payload_manager

    # -- attaching other frontends --------------------------------------------------------------

    def connect_info(self, line: str) -> None:
        """Print this kernel's connection info and how to attach another frontend to it."""
        kernel = self._kernel_of()
        info = json.loads(kernel.connection.to_json())
        print(json.dumps(info, indent=2))
        path = kernel.connection_file
        if path is None:
            print("\nThis kernel has no connection file: save the JSON above to one to connect.")
            return
        print(
            "\nAnother frontend attaches to this kernel with its connection file, for example:\n"
            f"    jupyter console --existing {path}"
        )
        if path.parent == _runtime_dir():
            print(
                "or by the file's name alone, since it is in Jupyter's runtime directory:\n"
                f"    jupyter console --existing {path.name}\n"
                "or with no name at all, if this is the kernel started last:\n"
                "    jupyter console --existing"
            )
        print("From another machine, save the JSON above to a file there and pass its path.")

    def qtconsole(self, line: str) -> None:
        """Start a Qt console attached to this kernel (arguments go to ``jupyter qtconsole``)."""
        path = self._kernel_of().connection_file
        if path is None:
            raise UsageError("this kernel has no connection file for a Qt console to read")
        try:
            args = shlex.split(line)
        except ValueError as exc:  # an unclosed quote
            raise UsageError(f"%qtconsole: {exc}") from None
        if importlib.util.find_spec("qtconsole") is None:
            raise UsageError(
                f"qtconsole is not installed beside the kernel ({sys.executable}); "
                "`%pip install qtconsole` installs it"
            )
        # In the kernel's process group: the console ends with the kernel it is attached to.
        subprocess.Popen(
            [sys.executable, "-m", "qtconsole", "--existing", str(path), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    # -- what a terminal would show --------------------------------------------------------------

    def edit(self, parameter_s: str = "") -> None:
        """%edit [-p] [-r] [-n LINE] [target]: ask the frontend to open ``target`` in an editor.

        ``target`` is what IPython's ``%edit`` takes (a file, an object, a history range); with
        none, a new temporary file. Frontends with an editor (qtconsole) open it; notebooks do
        not, and there you open the file yourself. Nothing is run afterwards."""
        try:
            pairs, rest = getopt.getopt(shlex.split(parameter_s), "prxn:")
        except (getopt.GetoptError, ValueError) as exc:
            raise UsageError(f"%edit: {exc}") from None
        opts = {flag.lstrip("-"): value for flag, value in pairs}
        find: Any = CodeMagics._find_edit_target
        try:
            found = find(self._shell, " ".join(rest), opts, self._last_edit)
        except MacroToEdit:
            raise UsageError(
                "a macro is edited in place only in a terminal; `%load` it to put its code in "
                "the next cell"
            ) from None
        except InteractivelyDefined as exc:
            raise UsageError(
                f"that was defined in cell {exc.index}, not in a file: `%load {exc.index}` "
                "puts its code in the next cell"
            ) from None
        filename, lineno = found[0], found[1]
        if filename is None:  # IPython has warned that it found nothing to open
            return
        self._payloads.write_payload(
            {"source": "edit_magic", "filename": filename, "line_number": lineno}
        )
        print(
            f"Asked the frontend to open {filename} (qtconsole does; in a notebook, open it there)"
        )

    def less(self, arg_s: str) -> None:
        """%less FILE (or %more FILE): show a file in the pager (Python source highlighted)."""
        if not arg_s.strip():
            raise UsageError("%less needs a file name")
        path = Path(arg_s.strip()).expanduser()
        try:
            if path.suffix == ".py":
                with tokenize.open(path) as f:  # in the encoding its coding line names
                    text = self._ipython.pycolorize(f.read())
            else:
                text = path.read_text(errors="replace")
        except (OSError, SyntaxError) as exc:  # SyntaxError: a coding line naming no codec
            raise UsageError(f"cannot read {path}: {exc}") from None
        page.page(text)

    def man(self, arg_s: str) -> None:
        """%man TOPIC: show a manual page in the pager."""
        if not arg_s.strip():
            raise UsageError("%man needs a topic, as `man` does")
        try:
            # Not a terminal, so man neither pages nor overstrikes (bold, underline).
            result = subprocess.run(
                ["man", *shlex.split(arg_s)], capture_output=True, text=True, check=False
            )
        except ValueError as exc:  # an unclosed quote
            raise UsageError(f"%man: {exc}") from None
        except FileNotFoundError:
            raise UsageError("there is no `man` command on this machine") from None
        if result.returncode != 0:
            raise UsageError(result.stderr.strip() or f"man exited with {result.returncode}")
        page.page(result.stdout)

    def clear(self, line: str) -> None:
        """Clear a terminal frontend's screen (jupyter console); notebooks show nothing."""
        sys.stdout.write("\x1b[H\x1b[2J")
        sys.stdout.flush()

    def autosave(self, arg_s: str) -> None:
        """%autosave SECONDS: the classic notebook's autosave interval (0 turns it off).

        JupyterLab and Notebook 7 keep autosave in their own settings; there this only says
        so (their pages have no API a kernel could call)."""
        try:
            seconds = int(arg_s.strip())
        except ValueError:
            raise UsageError(f"%autosave takes a whole number of seconds, got {arg_s!r}") from None
        if seconds < 0:
            raise UsageError("%autosave takes 0 (off) or a positive number of seconds")
        # Runs only in the classic notebook (nbclassic); elsewhere the guard makes it nothing.
        script = (
            "if (typeof IPython !== 'undefined' && IPython.notebook) "
            f"IPython.notebook.set_autosave_interval({seconds * 1000});"
        )
        self._ipython.display_pub.publish(data={"application/javascript": script}, metadata={})
        what = f"every {seconds} seconds" if seconds else "off"
        print(
            f"Autosave {what} in the classic notebook; JupyterLab and Notebook 7 set it in "
            "their settings"
        )

    # -- trikernel's own -----------------------------------------------------------------------

    def autoawait(self, line: str) -> None:
        """Show the async runner: always trio, the kernel's own loop (it cannot be changed)."""
        arg = line.strip().lower()
        if arg in ("", "trio", "true", "on", "1"):
            print("autoawait is on, on the kernel's own trio loop (trikernel)")
            return
        raise UsageError(
            f"trikernel runs every cell on its own trio loop; %autoawait {line.strip()} "
            "cannot switch to another runner or turn top-level await off"
        )

    def tasks(self, line: str) -> None:
        """List the background tasks started with trikernel.background.start_soon."""
        rows = [
            (
                t.name,
                t.state,
                "-" if t.cell is None else str(t.cell),
                f"{time.monotonic() - t.started:.1f} s",
            )
            for t in self._kernel_of().background
        ]
        if not rows:
            print("no background tasks")
            return
        header = ("name", "state", "cell", "age")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())

    def cancel(self, line: str) -> None:
        """%cancel NAME: cancel the background task called NAME."""
        name = line.strip()
        background = self._kernel_of().background
        try:
            background.cancel(name)
        except KeyError:
            known = ", ".join(t.name for t in background) or "none"
            raise UsageError(f"no background task {name!r}; tasks: {known}") from None
        print(f"cancelled background task {name!r}")

    def timeout(self, line: str, cell: str) -> None:
        """%%timeout SECONDS: run the cell under a deadline (the cell's first line only)."""
        raise UsageError(
            "%%timeout must be the very first line of the cell: the kernel applies it to the "
            "whole cell before it runs"
        )


def _runtime_dir() -> Path:
    # Imported here, not at startup: only %connect_info needs it.
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir())
