"""Kernelspecs: the ``kernel.json`` that tells Jupyter how to start trikernel.

A kernelspec is a folder named after the kernel (``trikernel``) holding ``kernel.json`` and the
logos. Jupyter finds it under ``<data dir>/kernels/`` (jupyter_client's ``KernelSpecManager``) and
starts the kernel with its ``argv``, replacing ``{connection_file}`` by the path of the connection
file it wrote.

What this module promises:

* The kernel is always started as ``<python> -m trikernel -f {connection_file} [--options]``, so
  argv[0] names the interpreter whose packages the kernel sees.
* ``interrupt_mode`` is always ``"message"``: Jupyter interrupts by sending ``interrupt_request``
  on the control channel (protocol 5.3), never a SIGINT, which cancels the running cell's trio
  scope instead of raising ``KeyboardInterrupt`` at an arbitrary point.
* ``metadata.supported_encryption`` is ``["curve"]`` unless ``metadata`` says otherwise: a
  jupyter_client (8.9+) whose ``transport_encryption`` is ``"auto"`` or ``"required"`` then puts
  CurveZMQ keys in the connection file, and the kernel encrypts all five sockets with them.
* Settings are validated with :func:`trikernel.settings.parse_settings` before anything is
  written, so a kernelspec that would fail at start time is never installed.
* A spec folder is built beside its destination and renamed into place: a failed write leaves the
  previous spec (or nothing) behind, never a half-written folder.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import site
import sys
import sysconfig
import tempfile
import textwrap
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir

from trikernel.settings import parse_settings

__all__ = [
    "KERNEL_NAME",
    "add_install_arguments",
    "get_kernel_dir",
    "import_start_interface",
    "install",
    "make_argv",
    "run_install",
    "write_kernel_spec",
]

KERNEL_NAME = "trikernel"
"""The name of the kernelspec folder that ``pip install trikernel`` ships."""

DEFAULT_START_INTERFACE_ATTR = "start_interface"
"""The attribute looked up in a ``.py`` file given without ``:attr``."""

CONNECTION_FILE_PLACEHOLDER = "{connection_file}"

# jupyter_client accepts kernel names matching this, compared in lower case
# (jupyter_client.kernelspec._kernel_name_pat).
_KERNEL_NAME_RE = re.compile(r"[a-z0-9._-]+", re.IGNORECASE)
_DOTTED_NAME_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_LOGO_GLOB = "logo-*"
_SHIPPED_SPEC = Path("share", "jupyter", "kernels", KERNEL_NAME)


def make_argv(
    *,
    connection_file: str = CONNECTION_FILE_PLACEHOLDER,
    start_interface: str | None = None,
    executable: str | None = None,
    settings: Mapping[str, object] | None = None,
) -> list[str]:
    """Return the command line that starts trikernel.

    Args:
        connection_file: the connection file argument; keep the default placeholder for a
            kernelspec, which Jupyter fills in.
        start_interface: an import path for ``--start-interface`` (see
            :func:`import_start_interface`); omitted when None.
        executable: argv[0]; defaults to the running interpreter, ``sys.executable``.
        settings: dotted setting paths and values, each added as ``--KEY=VALUE``. Booleans are
            written ``true``/``false`` and None as ``none``, which is how
            :func:`trikernel.settings.parse_settings` reads them back. Not validated here.

    Returns:
        ``[executable, "-m", "trikernel", "-f", connection_file, *options]``.
    """
    argv = [executable or sys.executable, "-m", "trikernel", "-f", connection_file]
    if start_interface is not None:
        argv.append(f"--start-interface={start_interface}")
    if settings:
        argv.extend(f"--{key}={_format_setting(value)}" for key, value in settings.items())
    return argv


def _format_setting(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def get_kernel_dir(prefix: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder that holds kernelspec folders.

    Args:
        prefix: an installation prefix (such as ``sys.prefix``); None for the current user.

    Returns:
        ``<prefix>/share/jupyter/kernels`` when ``prefix`` is given, else ``kernels`` in the
        user's Jupyter data dir (``jupyter --data-dir``; ``JUPYTER_DATA_DIR`` overrides it).
    """
    if prefix is not None:
        return Path(prefix, "share", "jupyter", "kernels")
    return Path(jupyter_data_dir(), "kernels")


# ----------------------------------------------------------------------------------------------
# Start interfaces


def import_start_interface(name: str) -> Callable[..., Any]:
    """Import the callable that a ``--start-interface`` option names.

    Args:
        name: one of

            * ``package.module:attr`` (``attr`` may be dotted, ``Class.method``);
            * ``package.module.attr``: the longest importable prefix is the module;
            * ``path/to/file.py`` or ``path/to/file.py:attr``: the file is imported as a module
              of its own; ``attr`` defaults to ``start_interface``.

    Returns:
        The object named, which is callable.

    Raises:
        ValueError: ``name`` is not in one of the forms above.
        ImportError: the module or file cannot be found, or lacks the attribute. Errors raised
            while the module itself runs propagate unchanged.
        TypeError: the object named is not callable.
    """
    kind, target, attr = _parse_start_interface(name)
    if kind == "file":
        obj: object = _import_file_attr(Path(target), attr, name)
    elif attr:
        obj = _getattr_path(importlib.import_module(target), target, attr, name)
    else:
        obj = _import_dotted(target, name)
    if not callable(obj):
        raise TypeError(f"start interface {name!r} is a {type(obj).__name__}, not a callable")
    return obj


def _parse_start_interface(name: str) -> tuple[str, str, str]:
    """Split a start interface spec into ``(kind, module or path, attr)``.

    ``kind`` is ``"file"`` or ``"module"``; ``attr`` is empty for a dotted ``module.attr`` whose
    split is only known once imported.
    """
    spec = name.strip()
    if not spec:
        raise ValueError("start interface must not be empty")
    if spec.endswith(".py"):
        return "file", spec, DEFAULT_START_INTERFACE_ATTR
    if ":" in spec:
        target, _, attr = spec.rpartition(":")
        if not _DOTTED_NAME_RE.fullmatch(attr):
            raise ValueError(
                f"start interface {name!r}: {attr!r} after ':' is not an attribute name"
            )
        if target.endswith(".py"):
            return "file", target, attr
        if _DOTTED_NAME_RE.fullmatch(target):
            return "module", target, attr
        raise ValueError(
            f"start interface {name!r}: {target!r} is neither a module name nor a .py file"
        )
    if _DOTTED_NAME_RE.fullmatch(spec) and "." in spec:
        return "module", spec, ""
    raise ValueError(
        f"start interface {name!r} is not of the form 'package.module:attr', "
        "'package.module.attr' or 'path/to/file.py[:attr]'"
    )


def _getattr_path(obj: object, owner: str, attr: str, name: str) -> object:
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(
                f"start interface {name!r}: {owner!r} has no attribute {attr!r}", name=owner
            ) from None
    return obj


def _import_dotted(dotted: str, name: str) -> object:
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only a missing *prefix* means "try a shorter module name"; a module that exists but
            # fails to import one of its own dependencies is the user's error to see.
            missing = exc.name or ""
            if module_name == missing or module_name.startswith(missing + "."):
                continue
            raise
        return _getattr_path(module, module_name, ".".join(parts[split:]), name)
    raise ImportError(f"start interface {name!r}: no module named {parts[0]!r}", name=parts[0])


def _import_file_attr(path: Path, attr: str, name: str) -> object:
    path = path.expanduser().absolute()
    if not path.is_file():
        raise ImportError(f"start interface {name!r}: no file {str(path)!r}", path=str(path))
    # A stable, unique module name per file, registered in sys.modules while it runs, so that
    # pickling, dataclasses and typing.get_type_hints can find the module by name.
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module_name = f"_trikernel_start_interface_{_identifier(path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"start interface {name!r}: cannot import {str(path)!r}", path=str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return _getattr_path(module, str(path), attr, name)


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text)


def _start_interface_source(func: Callable[..., Any]) -> str:
    """Return the source of ``func`` as a module that defines it, or raise why it can't be."""
    if not inspect.isfunction(func):
        raise TypeError(
            f"start_interface must be a function or an import path, got {type(func).__name__}"
        )
    label = f"{func.__module__}.{func.__qualname__}"
    if func.__name__ == "<lambda>" or func.__qualname__ != func.__name__:
        raise ValueError(
            f"start_interface {label} must be a top-level function (not a lambda, method or "
            "nested function): its source is copied into the kernelspec"
        )
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError) as exc:
        raise ValueError(f"start_interface {label}: its source is not available ({exc})") from exc
    tree = ast.parse(source)
    definition = next(
        (
            node
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name == func.__name__
        ),
        None,
    )
    if definition is None:
        raise ValueError(f"start_interface {label}: its source does not define {func.__name__}")
    if definition.decorator_list:
        raise ValueError(
            f"start_interface {label} is decorated; the decorator would not exist in the copied "
            "file, so pass an import path instead"
        )
    # Lazy annotations: names used only in annotations need not be importable in the copy.
    header = (
        f'"""Start interface copied from {label} by trikernel.kernelspec.write_kernel_spec."""\n\n'
        "from __future__ import annotations\n\n\n"
    )
    return header + source


# ----------------------------------------------------------------------------------------------
# Writing specs


def _shipped_spec_dirs() -> list[Path]:
    """Folders that may hold the kernelspec shipped with the package (and so its logos).

    ``importlib.resources`` cannot see wheel shared-data, so look where it is installed (the
    environment's and the user's data paths) and in the source tree, for checkouts.
    """
    roots = [Path(__file__).resolve().parents[1], Path(sys.prefix), Path(sys.base_prefix)]
    with contextlib.suppress(KeyError):
        roots.append(Path(sysconfig.get_path("data")))
    if site.USER_BASE:
        roots.append(Path(site.USER_BASE))
    return [root / _SHIPPED_SPEC for root in dict.fromkeys(roots)]


def _find_logos() -> list[Path]:
    for folder in _shipped_spec_dirs():
        logos = sorted(p for p in folder.glob(_LOGO_GLOB) if p.is_file())
        if logos:
            return logos
    return []


def write_kernel_spec(
    path: str | os.PathLike[str] | None = None,
    *,
    kernel_name: str = KERNEL_NAME,
    display_name: str | None = None,
    fullpath: bool = False,
    prefix: str | None = None,
    start_interface: str | Callable[..., Any] | None = None,
    connection_file: str = CONNECTION_FILE_PLACEHOLDER,
    env: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    **settings: object,
) -> Path:
    """Write a trikernel kernelspec folder (``kernel.json`` and logos).

    Example: ``write_kernel_spec(tmp, kernel_name="fast", **{"shell.timeout": 10})``.

    Args:
        path: the folder that holds kernelspec folders; defaults to ``get_kernel_dir(prefix)``.
        kernel_name: the spec folder's name, which is the kernel's name in Jupyter
            (letters, digits, ``.``, ``_``, ``-``).
        display_name: the name shown in menus; defaults to ``"Python 3 (<kernel_name>)"``.
        fullpath: argv[0] is ``sys.executable`` if true, else ``"python"`` (found on PATH when
            the kernel starts).
        prefix: an installation prefix, used when ``path`` is None.
        start_interface: an import path (see :func:`import_start_interface`; a ``.py`` path is
            made absolute), or a self-contained top-level function whose source is copied to
            ``start_interface.py`` in the spec folder. Imports it needs must be inside its body.
        connection_file: the connection file argument; keep the placeholder for Jupyter.
        env: environment variables Jupyter sets for the kernel process.
        metadata: merged over the default metadata,
            ``{"debugger": True, "supported_encryption": ["curve"]}``.
        **settings: dotted setting paths and values (``**{"shell.timeout": 0.1}``), written to
            argv as ``--shell.timeout=0.1``.

    Returns:
        The spec folder, ``<path>/<kernel_name>``.

    Raises:
        ValueError: the kernel name is invalid, ``path`` and ``prefix`` are both given, a setting
            is unknown or its value does not fit (:class:`trikernel.settings.SettingsError`,
            naming the key), or a callable ``start_interface`` cannot be copied.
        ImportError: ``start_interface`` names a ``.py`` file that does not exist.
        TypeError: ``env`` holds a non-string, ``metadata`` is not JSON-serialisable, or
            ``start_interface`` is neither a string nor a function.
        OSError: the folder cannot be written; an existing spec is then left as it was.
    """
    return _write_kernel_spec(
        path,
        kernel_name=kernel_name,
        display_name=display_name,
        fullpath=fullpath,
        prefix=prefix,
        start_interface=start_interface,
        connection_file=connection_file,
        env=env,
        metadata=metadata,
        settings=settings,
    )


def _write_kernel_spec(
    path: str | os.PathLike[str] | None,
    *,
    kernel_name: str,
    display_name: str | None,
    fullpath: bool,
    prefix: str | None,
    start_interface: str | Callable[..., Any] | None,
    connection_file: str,
    env: Mapping[str, str] | None,
    metadata: Mapping[str, Any] | None,
    settings: Mapping[str, object],
) -> Path:
    # Everything is checked before the first write, so errors leave the filesystem untouched.
    if not _KERNEL_NAME_RE.fullmatch(kernel_name):
        raise ValueError(
            f"invalid kernel name {kernel_name!r}: use letters, digits, '.', '_' and '-' only"
        )
    if path is not None and prefix is not None:
        raise ValueError("give either path or prefix, not both")
    kernel_dir = Path(path) if path is not None else get_kernel_dir(prefix)
    spec_dir = kernel_dir.absolute() / kernel_name

    parse_settings(settings)
    # Also check the text the kernel will see on its command line parses back.
    parse_settings({key: _format_setting(value) for key, value in settings.items()})

    interface_source: str | None = None
    interface_arg: str | None = None
    if start_interface is None:
        pass
    elif isinstance(start_interface, str):
        kind, target, attr = _parse_start_interface(start_interface)
        interface_arg = start_interface.strip()
        if kind == "file":
            file = Path(target).expanduser().absolute()
            if not file.is_file():
                raise ImportError(f"start interface {start_interface!r}: no file {str(file)!r}")
            interface_arg = f"{file}:{attr}"
    else:
        interface_source = _start_interface_source(start_interface)
        interface_arg = f"{spec_dir / 'start_interface.py'}:{start_interface.__name__}"

    # Checked at run time too: jupyter_client fails late and obscurely on a non-string env.
    env_items: Iterable[tuple[object, object]] = (env or {}).items()
    env_dict = {}
    for key, value in env_items:
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"env must map str to str, got {key!r}: {value!r}")
        env_dict[key] = value

    spec: dict[str, Any] = {
        "argv": make_argv(
            connection_file=connection_file,
            start_interface=interface_arg,
            executable=sys.executable if fullpath else "python",
            settings=settings,
        ),
        "display_name": display_name if display_name is not None else f"Python 3 ({kernel_name})",
        "language": "python",
        "interrupt_mode": "message",
        "metadata": {"debugger": True, "supported_encryption": ["curve"], **(metadata or {})},
    }
    if env_dict:
        spec["env"] = env_dict
    spec_text = json.dumps(spec, indent=2, ensure_ascii=False) + "\n"

    files: dict[str, str] = {}
    if interface_source is not None:
        files["start_interface.py"] = interface_source
    files["kernel.json"] = spec_text  # last, so a staging folder is never a spec without logos
    _write_spec_dir(spec_dir, _find_logos(), files)
    return spec_dir


def _write_spec_dir(spec_dir: Path, copies: Sequence[Path], files: Mapping[str, str]) -> None:
    """Build ``spec_dir``'s content beside it, then swap it into place."""
    spec_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{spec_dir.name}-", suffix=".staging", dir=spec_dir.parent)
    )
    try:
        # mkdtemp makes the folder 0o700; a spec under a shared prefix must be readable by all.
        staging.chmod(0o755)
        for source in copies:
            shutil.copyfile(source, staging / source.name)
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        _replace_dir(staging, spec_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_dir(new: Path, target: Path) -> None:
    """Move the folder ``new`` to ``target``, replacing whatever is there.

    POSIX ``rename`` only replaces an empty folder, so an existing ``target`` is first moved
    aside, and moved back if the second rename fails.
    """
    if not target.exists() and not target.is_symlink():
        new.rename(target)
        return
    old = target.with_name(f".{target.name}-{uuid.uuid4().hex[:8]}.old")
    target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        old.rename(target)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Installing (``python -m trikernel install``)


def install(
    *,
    user: bool = False,
    sys_prefix: bool = False,
    prefix: str | None = None,
    kernel_name: str = KERNEL_NAME,
    display_name: str | None = None,
    env: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    start_interface: str | Callable[..., Any] | None = None,
    **settings: object,
) -> Path:
    """Install a kernelspec that starts trikernel with the running interpreter.

    Args:
        user: install for the current user (the default when no location is given).
        sys_prefix: install into ``sys.prefix``, the active environment.
        prefix: install into ``<prefix>/share/jupyter/kernels``.
        kernel_name: see :func:`write_kernel_spec`.
        display_name: see :func:`write_kernel_spec`.
        env: see :func:`write_kernel_spec`.
        metadata: see :func:`write_kernel_spec`.
        start_interface: see :func:`write_kernel_spec`.
        **settings: see :func:`write_kernel_spec`.

    Returns:
        The spec folder written.

    Raises:
        ValueError: more than one of ``user``, ``sys_prefix`` and ``prefix`` is given, or as
            :func:`write_kernel_spec`.
    """
    if sum((user, sys_prefix, prefix is not None)) > 1:
        raise ValueError("give at most one of user, sys_prefix and prefix")
    if sys_prefix:
        prefix = sys.prefix
    return _write_kernel_spec(
        None,
        kernel_name=kernel_name,
        display_name=display_name,
        fullpath=True,
        prefix=prefix,
        start_interface=start_interface,
        connection_file=CONNECTION_FILE_PLACEHOLDER,
        env=env,
        metadata=metadata,
        settings=settings,
    )


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_install_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``install`` subcommand's options to ``parser``.

    Wire it up with ``add_install_arguments(subparsers.add_parser("install"))`` and call
    :func:`run_install` with the parsed namespace. Option destinations start with ``install_``
    so they cannot collide with the kernel's own options.

    Args:
        parser: the parser (usually a subparser) to add the options to.
    """
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--user",
        dest="install_user",
        action="store_true",
        help="install for the current user (the default)",
    )
    where.add_argument(
        "--sys-prefix",
        dest="install_sys_prefix",
        action="store_true",
        help=f"install into this environment ({sys.prefix})",
    )
    where.add_argument(
        "--prefix",
        dest="install_prefix",
        metavar="DIR",
        help="install into DIR/share/jupyter/kernels",
    )
    parser.add_argument(
        "--name",
        dest="install_name",
        metavar="NAME",
        default=KERNEL_NAME,
        help=f"kernel name, the spec folder's name (default: {KERNEL_NAME})",
    )
    parser.add_argument(
        "--display-name",
        dest="install_display_name",
        metavar="TEXT",
        help="name shown in Jupyter's menus (default: 'Python 3 (NAME)')",
    )
    parser.add_argument(
        "--env",
        dest="install_env",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        type=_key_value,
        default=[],
        help="environment variable to set in the kernel process (repeatable)",
    )
    parser.add_argument(
        "--set",
        dest="install_settings",
        metavar="SETTING=VALUE",
        nargs="+",
        action="extend",
        type=_key_value,
        default=[],
        help="kernel setting to pass on the kernel's command line, e.g. shell.timeout=10",
    )
    parser.add_argument(
        "--start-interface",
        dest="install_start_interface",
        metavar="IMPORT_PATH",
        help="callable that builds the kernel to run (a wrapper kernel): "
        "'module:attr', 'module.attr' or 'file.py[:attr]'",
    )


def run_install(args: argparse.Namespace) -> int:
    """Run ``python -m trikernel install`` with options parsed by :func:`add_install_arguments`.

    Args:
        args: the parsed options.

    Returns:
        The exit status: 0 on success, 1 if the folder could not be written, 2 if an option's
        value was rejected. Errors are reported on stderr.
    """
    try:
        spec_dir = install(
            user=args.install_user,
            sys_prefix=args.install_sys_prefix,
            prefix=args.install_prefix,
            kernel_name=args.install_name,
            display_name=args.install_display_name,
            env=dict(args.install_env),
            start_interface=args.install_start_interface,
            **dict(args.install_settings),
        )
    except (ValueError, ImportError, TypeError) as exc:
        print(f"trikernel install: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"trikernel install: error: {exc}", file=sys.stderr)
        return 1
    print(f"Installed kernelspec {spec_dir.name} in {spec_dir}")
    return 0
