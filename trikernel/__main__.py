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

from . import __version__

_EPILOG = """\
settings (dotted paths, see docs/settings.md):
{settings}

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
    )
    parser.add_argument(
        "-f",
        "--connection-file",
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


def _parse_setting_args(extra: Sequence[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    items: dict[str, str] = {}
    for arg in extra:
        if not arg.startswith("--") or "=" not in arg:
            parser.error(f"unrecognised argument {arg!r}; settings are given as --path=value")
        key, _, value = arg[2:].partition("=")
        items[key] = value
    return items


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
        settings = parse_settings(_parse_setting_args(extra, parser))
    except SettingsError as exc:
        parser.error(str(exc))
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(logging.Formatter("[trikernel %(levelname)s %(asctime)s] %(message)s"))
    logger = logging.getLogger("trikernel")
    logger.addHandler(handler)
    logger.setLevel(settings.log_level)
    if settings.tune_malloc:
        _tune_malloc()

    from .kernel import Kernel
    from .protocol import ConnectionInfo

    path: Path = args.connection_file.expanduser()
    if path.exists():
        try:
            connection = ConnectionInfo.from_json(path.read_bytes())
        except ValueError as exc:
            parser.error(f"connection file {path}: {exc}")
    else:
        connection = ConnectionInfo(key=ConnectionInfo.new_key())

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
