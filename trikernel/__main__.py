"""Command line: ``python -m trikernel -f CONNECTION_FILE [--setting=value ...]``.

Also ``python -m trikernel install [...]`` to install the kernelspec (see ``--help``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from . import __version__

if TYPE_CHECKING:
    from .protocol import ConnectionInfo

_EPILOG = """\
settings (dotted paths, see docs/settings.md):
{settings}

ipykernel's options are taken too: --f=FILE, --debug, --Kernel.stop_on_error_timeout and
--IPKernelApp.log_level become the settings above; --ip, --shell, --iopub, --stdin, --control,
--hb, --transport and --Session.key describe the connection (the connection file wins);
--no-stdout and --no-stderr are ignored; the rest go to IPython's shell as ipykernel passes them
(--matplotlib=inline, --Class.trait=value).

examples:
  python -m trikernel -f ~/kernel-1.json
  python -m trikernel -f kernel.json --shell.timeout=60 --log_level=INFO
  python -m trikernel install --user --name trikernel --display-name "Python (trio)"
"""


def _settings_help() -> str:
    from .settings import setting_paths

    return "\n".join(
        f"  --{path}={getattr(hint, '__name__', str(hint))}"
        for path, hint in setting_paths().items()
    )


def _kernel_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trikernel",
        description=(
            "Run trikernel, a Jupyter kernel for Python on trio. "
            "Use `python -m trikernel install --help` to install its kernelspec."
        ),
        epilog=_EPILOG.format(settings=_settings_help()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Not abbreviations of ours: IPython's options pass on whole (--conf is not --config).
        allow_abbrev=False,
    )
    parser.add_argument(
        "-f",
        "--f",
        "--connection-file",
        dest="connection_file",
        required=True,
        type=Path,
        help="connection file; created (mode 0600, random ports and key) if it does not exist; "
        "curve_publickey and curve_secretkey in it encrypt every socket (CurveZMQ)",
    )
    parser.add_argument(
        "--start-interface",
        default=None,
        help="import path (pkg.mod:factory) or file (path.py:factory) of a callable that "
        "takes connection=, settings= and connection_file= and returns the Kernel to run "
        "(a wrapper kernel)",
    )
    parser.add_argument("--version", action="version", version=f"trikernel {__version__}")
    return parser


# Jupyter tools add ipykernel's options to whatever command line a kernelspec gives (testbook
# passes --Kernel.stop_on_error_timeout=0, nbclient --HistoryManager.hist_file=:memory:, VS Code
# the connection's ports). Those that mean one of our settings become it; ...
_IPYKERNEL_SETTINGS = {
    "Kernel.stop_on_error_timeout": "shell.stop_on_error_timeout",
    "IPythonKernel.stop_on_error_timeout": "shell.stop_on_error_timeout",
    "IPKernelApp.log_level": "log_level",
    "Application.log_level": "log_level",
    "log-level": "log_level",
}
# ... those that describe the connection are checked against the connection file (they make a
# new one when there is none) ...
_CONNECTION_OPTIONS = {
    "ip": "ip",
    "transport": "transport",
    "shell": "shell_port",
    "iopub": "iopub_port",
    "stdin": "stdin_port",
    "control": "control_port",
    "hb": "hb_port",
    "Session.key": "key",
    "Session.signature_scheme": "signature_scheme",
}
# ... those that only ipykernel has are ignored, with a warning ...
_IGNORED_FLAGS = frozenset({"--no-stdout", "--no-stderr"})
# ... and the rest are IPython's (--matplotlib=inline, --Class.trait=value), passed on to the
# shell as ipykernel's application takes them (trikernel.shell.ipython_config).


@attrs.frozen
class CommandLine:
    """The options after the ones argparse knows, sorted by whose they are."""

    settings: dict[str, str]
    """Our dotted settings (ipykernel's that mean one of them renamed), as strings."""
    connection: dict[str, object]
    """:class:`~trikernel.protocol.ConnectionInfo` fields given as ipykernel's options."""
    ipython: list[str]
    """Everything else, for IPython's command-line parser."""
    ignored: list[str] = attrs.field(factory=list)
    """ipykernel's options that mean nothing here (logged once the kernel's log is set up)."""


def _unquote(value: str) -> str:
    # VS Code passes --transport="tcp" and --Session.key=b"..." with the quotes in the argument.
    if value[:2] in ('b"', "b'"):
        value = value[1:]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value


def _level_name(value: str) -> str:
    # traitlets takes a level as a name or a number ("10"); our setting takes the name.
    return logging.getLevelName(int(value)) if value.isdigit() else value


def split_options(extra: Sequence[str]) -> CommandLine:
    """Sort the kernel's extra command-line options: our settings, ipykernel's, IPython's.

    Raises:
        SettingsError: one of our settings without its ``=VALUE``.
    """
    from .settings import SettingsError, setting_paths

    known = setting_paths()
    groups = {path.partition(".")[0] for path in known if "." in path}
    line = CommandLine({}, {}, [])
    args = list(extra)
    while args:
        arg = args.pop(0)
        key, equals, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if (
            not equals
            and (key in _IPYKERNEL_SETTINGS or key in _CONNECTION_OPTIONS)
            and args
            and not args[0].startswith("-")
        ):
            equals, value = "=", args.pop(0)  # ipykernel's options also take `--ip 127.0.0.1`
        path = key.replace("-", "_")
        ours = path in known or ("." in path and path.partition(".")[0] in groups)
        if arg == "--debug":
            line.settings["log_level"] = "DEBUG"
        elif arg in _IGNORED_FLAGS:
            line.ignored.append(arg)
        elif equals and key in _IPYKERNEL_SETTINGS:
            setting = _IPYKERNEL_SETTINGS[key]
            line.settings[setting] = _level_name(value) if setting == "log_level" else value
        elif ours and not equals:
            raise SettingsError(f"setting {key!r} takes its value as --{key}=VALUE")
        elif ours:
            line.settings[key] = value  # an unknown one in our groups: parse_settings says so
        elif equals and key in _CONNECTION_OPTIONS:
            field = _CONNECTION_OPTIONS[key]
            value = _unquote(value)
            line.connection[field] = (
                int(value) if field.endswith("_port") and value.isdigit() else value
            )
        else:
            line.ipython.append(arg)
    return line


def _with_connection_options(
    connection: ConnectionInfo, options: dict[str, object], from_file: bool, path: Path
) -> ConnectionInfo:
    """``connection`` with ipykernel's connection options applied where no file gave it."""
    if not from_file:
        return type(connection).from_dict({**attrs.asdict(connection), **options})
    for field, value in options.items():
        if getattr(connection, field) != value:
            shown = "(not shown)" if field == "key" else repr(value)
            logging.getLogger("trikernel").warning(
                "the command line's %s %s differs from the connection file's; %s is used",
                field,
                shown,
                path,
            )
    return connection


# mallopt() parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _tune_malloc() -> None:
    """Set glibc's mmap and trim thresholds to the values its own heuristic ends at.

    glibc serves a request of 128 KiB or more with a fresh mmap, and returns heap memory to the
    system once 128 KiB is free at the top. Each time the program frees such a mapped block it
    raises both thresholds (to the block's size and twice that), up to 32 and 64 MiB. Until
    then, big buffers keep being mapped afresh and cost a page fault per 4 KiB on first touch:
    a 10 MB write sent as 1 MiB pieces faulted in 800 to 1,700 pages each time, 1 to 5 ms of
    CPU, against 250 to 650 pages with these values. A notebook that frees one 32 MiB array
    reaches them anyway; the kernel starts there. What a user set through ``MALLOC_*``
    variables or ``GLIBC_TUNABLES`` stays.
    """
    if any(name.startswith("MALLOC_") for name in os.environ) or "glibc.malloc." in (
        os.environ.get("GLIBC_TUNABLES", "")
    ):
        return
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
    except (AttributeError, ValueError, OSError):  # not glibc (musl, macOS, Windows)
        return
    import ctypes

    mallopt = ctypes.CDLL(None).mallopt
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 64 << 20)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the kernel or the installer; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["install"]:
        from .kernelspec import add_install_arguments, run_install

        parser = argparse.ArgumentParser(
            prog="python -m trikernel install",
            description="Install the trikernel kernelspec, running this Python interpreter.",
        )
        add_install_arguments(parser)
        return run_install(parser.parse_args(args_list[1:]))

    parser = _kernel_parser()
    args, extra = parser.parse_known_args(args_list)
    from .settings import SettingsError, parse_settings

    try:
        line = split_options(extra)
        settings = parse_settings(line.settings)
    except SettingsError as exc:
        parser.error(str(exc))
    if line.ipython:
        # Checked now, so that a bad option stops the kernel with IPython's message before
        # anything starts; only then is IPython loaded this early.
        from .shell import ipython_config

        try:
            ipython_config(line.ipython)
        except ValueError as exc:
            parser.error(str(exc))
        settings = attrs.evolve(settings, ipython_args=tuple(line.ipython))
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(logging.Formatter("[trikernel %(levelname)s %(asctime)s] %(message)s"))
    logger = logging.getLogger("trikernel")
    logger.addHandler(handler)
    logger.setLevel(settings.log_level)
    for option in line.ignored:
        logger.warning("%s is ipykernel's; ignored", option)
    if settings.tune_malloc:
        _tune_malloc()

    from .kernel import Kernel
    from .protocol import ConnectionInfo

    path: Path = args.connection_file.expanduser()
    try:
        if path.exists():
            connection = ConnectionInfo.from_json(path.read_bytes())
        else:
            connection = ConnectionInfo(key=ConnectionInfo.new_key())
    except ValueError as exc:
        parser.error(f"connection file {path}: {exc}")
    try:
        connection = _with_connection_options(connection, line.connection, path.exists(), path)
    except (TypeError, ValueError) as exc:
        parser.error(f"connection options {line.connection}: {exc}")

    if args.start_interface:
        from .kernelspec import import_start_interface

        factory = import_start_interface(args.start_interface)
        kernel = factory(connection=connection, settings=settings, connection_file=path)
        if not isinstance(kernel, Kernel):
            parser.error(f"{args.start_interface} returned {kernel!r}, not a trikernel Kernel")
    else:
        kernel = Kernel(connection, settings=settings, connection_file=path)
    kernel.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
