"""Kernel settings: typed, validated, addressed by dotted paths.

Settings reach the kernel from its command line (``--shell.timeout=0.1``) or from
:func:`trikernel.kernelspec.write_kernel_spec` (``**{"shell.timeout": 0.1}``), which writes them
into the kernelspec's argv. Both go through :func:`parse_settings`, so a bad key or value is
rejected with the same message at install time as at start time.

Each group is a frozen attrs class; a dotted path names a group and a field. Values given as
strings (from a command line) are converted by the field's declared type.
"""

from __future__ import annotations

import logging
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "ExecutionSettings",
    "IOPubSettings",
    "KernelSettings",
    "ReplySettings",
    "SettingsError",
    "ShutdownSettings",
    "StreamSettings",
    "parse_settings",
    "setting_paths",
]


class SettingsError(ValueError):
    """A setting's key is unknown or its value does not fit the setting's type."""


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value >= 0:  # also rejects NaN
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _profile_name(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value or "/" in value or "\\" in value:
        raise ValueError(f"{attribute.name} must be a profile's name, not a path, got {value!r}")


def _upper(value: object) -> str:
    return str(value).upper()


@attrs.frozen(kw_only=True)
class ExecutionSettings:
    """How cells run (the ``shell.*`` settings)."""

    timeout: float | None = attrs.field(default=None, validator=_non_negative)
    """Seconds a cell may run before it is cancelled as by ``%%timeout``; None: no deadline."""

    stop_on_error_timeout: float = attrs.field(default=0.0, validator=_non_negative)
    """After a failed cell, also abort execute requests that arrive within this many seconds."""

    history: bool = True
    """Keep IPython's SQLite history (off: an in-memory history for this run only)."""

    profile: str = attrs.field(default="default", validator=_profile_name)
    """The IPython profile (in ``IPYTHONDIR``, ``~/.ipython`` by default) whose config files
    configure the shell and whose startup files and ``exec_lines`` run before the first cell."""


@attrs.frozen(kw_only=True)
class StreamSettings:
    """How stdout/stderr text is batched into ``stream`` messages (the ``streams.*`` settings)."""

    flush_interval: float = attrs.field(default=0.02, validator=_non_negative)
    """Seconds text may wait before it is sent; lower is snappier, higher batches more."""

    max_batch_bytes: int = attrs.field(default=1 << 20, validator=_non_negative)
    """Send at once when this many bytes are waiting, without waiting for the timer."""

    max_pending_bytes: int = attrs.field(default=32 << 20, validator=_non_negative)
    """Text that may wait in the kernel for iopub; a thread that writes more waits until the
    frontends have taken some (``print`` blocks, as on a full pipe). 0: no limit."""


@attrs.frozen(kw_only=True)
class IOPubSettings:
    """How the kernel waits for frontends that read iopub slowly (the ``iopub.*`` settings)."""

    hwm: int = attrs.field(default=1000, validator=_non_negative)
    """Messages ZeroMQ may hold for each subscriber; at this mark the kernel waits for the
    subscriber instead of dropping. 0: no limit (memory grows while a subscriber lags)."""

    stall_timeout: float = attrs.field(default=10.0, validator=_non_negative)
    """Seconds the kernel waits for a subscriber at ``hwm`` that reads nothing; after that it
    stops waiting, and messages that subscriber has no room for are dropped for it (logged)."""


@attrs.frozen(kw_only=True)
class ReplySettings:
    """How the kernel waits for clients that read their replies slowly (``replies.*``)."""

    stall_timeout: float = attrs.field(default=10.0, validator=_non_negative)
    """Seconds a shell, control or stdin reply waits for a client whose ZeroMQ queue is full
    (1000 replies unread); after that, replies that client has no room for are dropped for it
    (logged) until it reads again. While a reply waits, the channel reads no requests."""


@attrs.frozen(kw_only=True)
class ShutdownSettings:
    """How the kernel stops (the ``shutdown.*`` settings)."""

    grace: float = attrs.field(default=0.5, validator=_non_negative)
    """Seconds background tasks get to finish after they are cancelled at shutdown."""


@attrs.frozen(kw_only=True)
class KernelSettings:
    """Every setting of the kernel; the root of the dotted paths."""

    shell: ExecutionSettings = attrs.Factory(ExecutionSettings)
    streams: StreamSettings = attrs.Factory(StreamSettings)
    iopub: IOPubSettings = attrs.Factory(IOPubSettings)
    replies: ReplySettings = attrs.Factory(ReplySettings)
    shutdown: ShutdownSettings = attrs.Factory(ShutdownSettings)
    log_level: str = attrs.field(default="WARNING", converter=_upper)
    """Level of the kernel's own log on stderr (DEBUG, INFO, WARNING, ERROR)."""
    tune_malloc: bool = True
    """Start glibc's allocator at the thresholds it adapts to after a 32 MiB block is freed,
    instead of where it starts (see docs/architecture.md); off: glibc's defaults."""

    ipython_args: tuple[str, ...] = attrs.field(default=(), metadata={"dotted": False})
    """Command-line options for IPython's shell, as ipykernel takes them (``--matplotlib=inline``,
    ``--HistoryManager.hist_file=:memory:``, ``--InteractiveShell.xmode=Plain``): applied on top of
    the profile's config files. Not a dotted setting: they come from the kernel's command line
    (``trikernel.__main__``), where a kernelspec's argv can hold them."""

    @log_level.validator
    def _check_level(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(logging.getLevelName(value), int):
            raise ValueError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {value!r}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def setting_paths(cls: type[Any] = KernelSettings, prefix: str = "") -> dict[str, Any]:
    """Return every dotted setting path below ``cls`` mapped to its declared type."""
    hints = typing.get_type_hints(cls)
    paths: dict[str, Any] = {}
    for field in attrs.fields(cls):
        if not field.metadata.get("dotted", True):
            continue
        hint = hints[field.name]
        if attrs.has(hint):
            paths.update(setting_paths(hint, f"{prefix}{field.name}."))
        else:
            paths[f"{prefix}{field.name}"] = hint
    return paths


def _convert(key: str, hint: Any, value: object) -> object:
    """Convert ``value`` (a string from a command line, or already typed) to ``hint``."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        empty = value is None or (isinstance(value, str) and value.lower() in {"none", ""})
        if empty and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(key, arg, value)
            except SettingsError as exc:
                errors.append(str(exc))
        raise SettingsError("; ".join(errors))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str and isinstance(value, str):
        return value
    name = getattr(hint, "__name__", str(hint))
    raise SettingsError(f"setting {key!r} takes a {name}, got {value!r}")


def _evolve(obj: Any, path: list[str], value: object) -> Any:
    if len(path) == 1:
        return attrs.evolve(obj, **{path[0]: value})
    child = getattr(obj, path[0])
    return attrs.evolve(obj, **{path[0]: _evolve(child, path[1:], value)})


def parse_settings(
    items: Mapping[str, object], base: KernelSettings | None = None
) -> KernelSettings:
    """Build settings from ``{dotted.path: value}`` pairs on top of ``base`` (the defaults).

    Args:
        items: dotted paths such as ``"shell.timeout"``; ``-`` in a path counts as ``_``, so
            command-line spellings like ``shell.stop-on-error-timeout`` work. Values may be
            strings (converted by the setting's type) or already typed.
        base: the settings to start from; defaults to ``KernelSettings()``.

    Returns:
        A new, validated :class:`KernelSettings`.

    Raises:
        SettingsError: a key is unknown (the message lists the known keys) or a value does not
            fit; the message names the key.
    """
    known = setting_paths()
    settings = base if base is not None else KernelSettings()
    for raw_key, raw_value in items.items():
        key = raw_key.replace("-", "_")
        if key not in known:
            raise SettingsError(
                f"unknown setting {raw_key!r}; known settings: {', '.join(sorted(known))}"
            )
        value = _convert(key, known[key], raw_value)
        try:
            settings = _evolve(settings, key.split("."), value)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"setting {key!r}: {exc}") from None
    return settings
