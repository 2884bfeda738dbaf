"""Kernel settings as a user spells them: on a command line, or typed in ``write_kernel_spec``."""

from __future__ import annotations

import math

import pytest

from trikernel.settings import (
    ExecutionSettings,
    IOPubSettings,
    KernelSettings,
    ReplySettings,
    SettingsError,
    StreamSettings,
    parse_settings,
    setting_paths,
)

ALL_PATHS = {
    "shell.timeout",
    "shell.stop_on_error_timeout",
    "shell.history",
    "shell.profile",
    "streams.flush_interval",
    "streams.max_batch_bytes",
    "streams.max_pending_bytes",
    "iopub.hwm",
    "iopub.stall_timeout",
    "replies.stall_timeout",
    "shutdown.grace",
    "log_level",
    "tune_malloc",
}


def test_no_items_gives_the_defaults() -> None:
    assert parse_settings({}) == KernelSettings()


def test_setting_paths_lists_every_setting() -> None:
    assert set(setting_paths()) == ALL_PATHS


def test_every_listed_path_can_be_set() -> None:
    defaults = KernelSettings()
    for path in setting_paths():
        group, _, name = path.rpartition(".")
        owner = getattr(defaults, group) if group else defaults
        current = getattr(owner, name)
        # Setting each one to its default, as a string, round-trips through the converter.
        text = "none" if current is None else str(current)
        assert parse_settings({path: text}) == defaults, path


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ({"shell.timeout": "0.5"}, KernelSettings(shell=ExecutionSettings(timeout=0.5))),
        ({"shell.timeout": 2}, KernelSettings(shell=ExecutionSettings(timeout=2.0))),
        ({"shell.timeout": 0.25}, KernelSettings(shell=ExecutionSettings(timeout=0.25))),
        (
            {"streams.max_batch_bytes": "4096"},
            KernelSettings(streams=StreamSettings(max_batch_bytes=4096)),
        ),
        ({"streams.max_batch_bytes": 0}, KernelSettings(streams=StreamSettings(max_batch_bytes=0))),
        ({"shell.history": False}, KernelSettings(shell=ExecutionSettings(history=False))),
        ({"shell.profile": "work"}, KernelSettings(shell=ExecutionSettings(profile="work"))),
        ({"iopub.hwm": "0"}, KernelSettings(iopub=IOPubSettings(hwm=0))),
        ({"iopub.stall_timeout": 2}, KernelSettings(iopub=IOPubSettings(stall_timeout=2.0))),
        (
            {"replies.stall_timeout": "0.5"},
            KernelSettings(replies=ReplySettings(stall_timeout=0.5)),
        ),
        ({"log_level": "debug"}, KernelSettings(log_level="DEBUG")),
        ({"log_level": "Info"}, KernelSettings(log_level="INFO")),
    ],
    ids=[
        "float-str",
        "int-for-float",
        "float",
        "int-str",
        "int",
        "bool",
        "str",
        "hwm-off",
        "stall-int",
        "replies-stall-str",
        "level",
        "level-mixed",
    ],
)
def test_strings_and_typed_values(items: dict[str, object], expected: KernelSettings) -> None:
    assert parse_settings(items) == expected


def test_a_float_setting_set_from_an_int_is_a_float() -> None:
    timeout = parse_settings({"shell.timeout": 3}).shell.timeout
    assert timeout == 3.0
    assert isinstance(timeout, float)


@pytest.mark.parametrize(
    "key",
    ["shell.stop-on-error-timeout", "shell.stop_on_error-timeout", "shell.stop_on_error_timeout"],
)
def test_dashes_in_keys_count_as_underscores(key: str) -> None:
    assert parse_settings({key: "1.5"}).shell.stop_on_error_timeout == 1.5


def test_log_level_with_a_dash_spelling() -> None:
    assert parse_settings({"log-level": "error"}).log_level == "ERROR"


@pytest.mark.parametrize("value", [None, "none", "None", "NONE", ""])
def test_none_clears_an_optional_setting(value: object) -> None:
    base = parse_settings({"shell.timeout": 10})
    assert parse_settings({"shell.timeout": value}, base=base).shell.timeout is None


@pytest.mark.parametrize("value", [None, "none", ""])
def test_none_is_refused_for_a_required_setting(value: object) -> None:
    with pytest.raises(SettingsError, match=r"shutdown\.grace"):
        parse_settings({"shutdown.grace": value})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[(t, True) for t in ["1", "true", "True", "TRUE", "yes", "Yes", "on", "ON"]],
        *[(t, False) for t in ["0", "false", "False", "FALSE", "no", "No", "off", "OFF"]],
    ],
)
def test_bool_spellings(text: str, expected: bool) -> None:
    base = KernelSettings(shell=ExecutionSettings(history=not expected))
    assert parse_settings({"shell.history": text}, base=base).shell.history is expected


@pytest.mark.parametrize("value", ["maybe", "2", "", "t", "y", 1, 0, None, 1.0])
def test_bools_accept_no_other_spelling(value: object) -> None:
    with pytest.raises(SettingsError, match=r"shell\.history"):
        parse_settings({"shell.history": value})


@pytest.mark.parametrize(
    "key", ["shell.timeot", "timeout", "shell", "shell.timeout.x", "streams.", "", "Shell.timeout"]
)
def test_unknown_key_lists_the_known_ones(key: str) -> None:
    with pytest.raises(SettingsError, match="unknown setting") as info:
        parse_settings({key: "1"})
    message = str(info.value)
    assert repr(key) in message
    for path in ALL_PATHS:
        assert path in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("shell.timeout", "soon"),
        ("shell.timeout", True),
        ("shell.timeout", [1]),
        ("streams.max_batch_bytes", "1.5"),
        ("streams.max_batch_bytes", 1.5),
        ("streams.max_batch_bytes", True),
        ("streams.max_batch_bytes", "1e6"),
        ("streams.flush_interval", "fast"),
        ("log_level", 10),
        ("log_level", "verbose"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key(key: str, value: object) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        parse_settings({key: value})


@pytest.mark.parametrize(
    "key",
    [
        "shell.timeout",
        "shell.stop_on_error_timeout",
        "streams.flush_interval",
        "streams.max_batch_bytes",
        "streams.max_pending_bytes",
        "iopub.hwm",
        "iopub.stall_timeout",
        "replies.stall_timeout",
        "shutdown.grace",
    ],
)
@pytest.mark.parametrize("value", ["-1", -1])
def test_negative_values_are_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        parse_settings({key: value})


@pytest.mark.parametrize(
    "key",
    [
        "shell.timeout",
        "shell.stop_on_error_timeout",
        "streams.flush_interval",
        "iopub.stall_timeout",
        "replies.stall_timeout",
        "shutdown.grace",
    ],
)
def test_nan_is_refused(key: str) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        parse_settings({key: "nan"})


@pytest.mark.parametrize("value", ["", "../elsewhere", "a/b", "a\\b"])
def test_a_profile_must_be_a_name_not_a_path(value: str) -> None:
    with pytest.raises(SettingsError, match=r"shell\.profile.*not a path"):
        parse_settings({"shell.profile": value})


def test_infinite_timeout_means_no_deadline() -> None:
    assert parse_settings({"shell.timeout": "inf"}).shell.timeout == math.inf


def test_settings_error_is_a_value_error() -> None:
    # Callers that validate several inputs at once can catch ValueError.
    with pytest.raises(ValueError):
        parse_settings({"nope": 1})


def test_fields_not_mentioned_keep_the_base_values() -> None:
    base = parse_settings(
        {"shell.timeout": 5, "shell.history": "off", "streams.flush_interval": 0.1}
    )

    settings = parse_settings({"shell.timeout": "7", "log_level": "error"}, base=base)

    assert settings.shell == ExecutionSettings(timeout=7.0, history=False)
    assert settings.streams == StreamSettings(flush_interval=0.1)
    assert settings.shutdown == base.shutdown
    assert settings.log_level == "ERROR"
    assert base.shell.timeout == 5.0  # the base is a value: untouched


def test_a_failed_parse_changes_nothing_in_the_base() -> None:
    base = parse_settings({"shell.timeout": 5})
    with pytest.raises(SettingsError):
        parse_settings({"shell.timeout": 1, "streams.max_batch_bytes": "lots"}, base=base)
    assert base.shell.timeout == 5.0


def test_later_items_win_over_earlier_ones_for_the_same_setting() -> None:
    settings = parse_settings(
        {"shell.stop-on-error-timeout": "1", "shell.stop_on_error_timeout": 2}
    )
    assert settings.shell.stop_on_error_timeout == 2.0
