"""The kernel's command line: our settings, ipykernel's options that Jupyter tools add to any
kernelspec's command line (testbook, nbclient, VS Code), and IPython's options passed on.

Pure parsing: nothing here starts a kernel (tests/kernel/test_profile.py starts one with them).
"""

from __future__ import annotations

import pytest

from trikernel.__main__ import main, split_options
from trikernel.shell import ipython_config


def test_our_settings_and_ipykernels_that_mean_them() -> None:
    line = split_options(
        [
            "--shell.timeout=5",
            "--Kernel.stop_on_error_timeout=0",  # testbook
            "--IPKernelApp.log_level=10",  # a level as traitlets takes it: a number
        ]
    )
    assert line.settings == {
        "shell.timeout": "5",
        "shell.stop_on_error_timeout": "0",
        "log_level": "DEBUG",
    }
    assert line.connection == {}
    assert line.ipython == []


def test_debug_flag_is_the_debug_log_level() -> None:
    assert split_options(["--debug"]).settings == {"log_level": "DEBUG"}


def test_vs_code_connection_options_are_unquoted() -> None:
    line = split_options(
        [
            "--ip=127.0.0.1",
            "--stdin=9001",
            "--control=9002",
            "--hb=9003",
            '--Session.signature_scheme="hmac-sha256"',
            '--Session.key=b"abc"',
            "--shell=9004",
            '--transport="tcp"',
            "--iopub=9005",
        ]
    )
    assert line.connection == {
        "ip": "127.0.0.1",
        "stdin_port": 9001,
        "control_port": 9002,
        "hb_port": 9003,
        "signature_scheme": "hmac-sha256",
        "key": "abc",
        "shell_port": 9004,
        "transport": "tcp",
        "iopub_port": 9005,
    }
    assert line.settings == {}
    assert line.ipython == []


def test_ipykernels_options_also_take_their_value_as_the_next_argument() -> None:
    line = split_options(
        ["--ip", "127.0.0.1", "--shell", "9004", "--IPKernelApp.log_level", "10", "--no-stdout"]
    )
    assert line.connection == {"ip": "127.0.0.1", "shell_port": 9004}
    assert line.settings == {"log_level": "DEBUG"}
    assert line.ipython == []
    assert line.ignored == ["--no-stdout"]  # ipykernel's only: logged, then ignored


def test_the_rest_goes_to_ipython_in_order() -> None:
    args = ["--HistoryManager.hist_file=:memory:", "--matplotlib", "inline", "--pdb"]
    assert split_options(args).ipython == args


def test_ipythons_parser_reads_what_ipykernel_takes() -> None:
    config = ipython_config(
        ["--HistoryManager.hist_file=:memory:", "--matplotlib=inline", "--pdb", "--colors=nocolor"]
    )
    assert config.HistoryManager.hist_file == ":memory:"
    assert config.IPythonProfile.matplotlib == "inline"
    assert config.InteractiveShell.pdb is True
    assert config.InteractiveShell.colors == "nocolor"


@pytest.mark.parametrize("args", [["--bogus"], ["stray"], ["--InteractiveShell.xmode"]])
def test_ipythons_parser_refuses_what_it_cannot_use(args: list[str]) -> None:
    with pytest.raises(ValueError, match=r"IPython|unrecognised"):
        ipython_config(args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shell.timout=1"], "unknown setting 'shell.timout'"),
        (["--shell.timeout", "1"], "--shell.timeout=VALUE"),
        (["--Kernel.stop_on_error_timeout=soon"], "shell.stop_on_error_timeout"),
        (["--shell=port"], "port must be an integer"),
        (["stray"], "unrecognised arguments"),
    ],
)
def test_bad_options_stop_the_kernel_before_it_starts(
    args: list[str], message: str, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc_info:
        main(["-f", f"{tmp_path}/kernel.json", *args])
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err
