"""Kernelspecs as Jupyter and a user see them: the folder, kernel.json, logos and the CLI."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jupyter_client.kernelspec import KernelSpecManager

import trikernel
from trikernel import kernelspec
from trikernel.kernelspec import (
    KERNEL_NAME,
    add_install_arguments,
    get_kernel_dir,
    import_start_interface,
    install,
    make_argv,
    run_install,
    write_kernel_spec,
)
from trikernel.settings import SettingsError, parse_settings

LOGOS = {"logo-svg.svg": None, "logo-64x64.png": (64, 64), "logo-32x32.png": (32, 32)}


def sample_start_interface(*args: object, **kwargs: object) -> tuple[object, ...]:
    """A self-contained start interface: what a user passes to write_kernel_spec."""
    import os  # imports live in the body: only this function is copied

    return ("sample", args, kwargs, os.sep)


def _identity(func: Callable[..., Any]) -> Callable[..., Any]:
    return func


@_identity
def decorated_start_interface() -> None:
    """Decorated: the copy would not know the decorator."""


def read_spec(spec_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((spec_dir / "kernel.json").read_text(encoding="utf-8"))
    return data


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def listing(folder: Path) -> list[str]:
    """Everything in a folder, hidden entries included: staging leftovers show up here."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------------------------
# make_argv


def test_make_argv_defaults_to_this_interpreter_and_the_placeholder() -> None:
    assert make_argv() == [sys.executable, "-m", "trikernel", "-f", "{connection_file}"]


def test_make_argv_adds_start_interface_and_settings_in_order() -> None:
    argv = make_argv(
        connection_file="/tmp/conn.json",
        start_interface="pkg.mod:start",
        executable="/opt/py/bin/python",
        settings={"shell.timeout": 0.5, "shell.history": False, "log_level": "debug"},
    )
    assert argv == [
        "/opt/py/bin/python",
        "-m",
        "trikernel",
        "-f",
        "/tmp/conn.json",
        "--start-interface=pkg.mod:start",
        "--shell.timeout=0.5",
        "--shell.history=false",
        "--log_level=debug",
    ]


def test_make_argv_writes_none_so_the_kernel_reads_it_back() -> None:
    assert make_argv(settings={"shell.timeout": None})[-1] == "--shell.timeout=none"
    assert parse_settings({"shell.timeout": "none"}).shell.timeout is None


@given(
    timeout=st.none() | st.floats(min_value=0, allow_nan=False),
    history=st.booleans(),
    batch=st.integers(min_value=0, max_value=2**62),
)
def test_argv_settings_parse_back_to_the_same_settings(
    timeout: float | None, history: bool, batch: int
) -> None:
    typed = {"shell.timeout": timeout, "shell.history": history, "streams.max_batch_bytes": batch}
    options = make_argv(settings=typed)[5:]
    as_text = dict(option.removeprefix("--").split("=", 1) for option in options)
    assert parse_settings(as_text) == parse_settings(typed)


# ----------------------------------------------------------------------------------------------
# get_kernel_dir


def test_get_kernel_dir_under_a_prefix(tmp_path: Path) -> None:
    assert get_kernel_dir(tmp_path) == tmp_path / "share" / "jupyter" / "kernels"
    assert get_kernel_dir(str(tmp_path)) == tmp_path / "share" / "jupyter" / "kernels"


def test_get_kernel_dir_defaults_to_the_user_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    assert get_kernel_dir() == tmp_path / "data" / "kernels"


# ----------------------------------------------------------------------------------------------
# write_kernel_spec


def test_write_kernel_spec_writes_kernel_json_and_logos(tmp_path: Path) -> None:
    spec_dir = write_kernel_spec(tmp_path)

    assert spec_dir == tmp_path / KERNEL_NAME
    assert read_spec(spec_dir) == {
        "argv": ["python", "-m", "trikernel", "-f", "{connection_file}"],
        "display_name": "Python 3 (trikernel)",
        "language": "python",
        "interrupt_mode": "message",
        "metadata": {"debugger": True, "supported_encryption": ["curve"]},
    }
    assert sorted(p.name for p in spec_dir.iterdir()) == sorted([*LOGOS, "kernel.json"])
    for name, size in LOGOS.items():
        if size is not None:
            assert png_size(spec_dir / name) == size
    assert (spec_dir / "logo-svg.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
    assert listing(tmp_path) == [KERNEL_NAME]


def test_written_spec_is_what_jupyter_client_loads(tmp_path: Path) -> None:
    write_kernel_spec(tmp_path, kernel_name="tk-test", display_name="Trio test")
    manager = KernelSpecManager(kernel_dirs=[str(tmp_path)])

    assert manager.find_kernel_specs()["tk-test"] == str(tmp_path / "tk-test")
    spec = manager.get_kernel_spec("tk-test")
    assert spec.display_name == "Trio test"
    assert spec.interrupt_mode == "message"
    assert spec.language == "python"
    assert spec.argv[1:] == ["-m", "trikernel", "-f", "{connection_file}"]
    # What jupyter_client (8.9+) looks for before it gives a kernel CurveZMQ keys.
    assert spec.metadata["supported_encryption"] == ["curve"]


def test_shipped_kernel_json_is_what_write_kernel_spec_writes(tmp_path: Path) -> None:
    """The spec `pip install` ships is hand-written; it must not drift from the generated one."""
    shipped = Path(__file__).resolve().parents[2] / "share/jupyter/kernels/trikernel/kernel.json"
    assert json.loads(shipped.read_text(encoding="utf-8")) == read_spec(write_kernel_spec(tmp_path))


def test_fullpath_uses_this_interpreter(tmp_path: Path) -> None:
    spec_dir = write_kernel_spec(tmp_path, fullpath=True)
    assert read_spec(spec_dir)["argv"][0] == sys.executable


def test_default_display_name_follows_the_kernel_name(tmp_path: Path) -> None:
    spec_dir = write_kernel_spec(tmp_path, kernel_name="trio-dev")
    assert read_spec(spec_dir)["display_name"] == "Python 3 (trio-dev)"


def test_env_and_connection_file_are_written(tmp_path: Path) -> None:
    spec_dir = write_kernel_spec(
        tmp_path, env={"PYTHONHASHSEED": "0", "A": "b c"}, connection_file="{connection_file}"
    )
    spec = read_spec(spec_dir)
    assert spec["env"] == {"PYTHONHASHSEED": "0", "A": "b c"}
    assert spec["argv"][-1] == "{connection_file}"


def test_env_values_must_be_strings(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="PORT"):
        write_kernel_spec(tmp_path, env={"PORT": 8888})  # type: ignore[dict-item]
    assert listing(tmp_path) == []


def test_metadata_is_merged_over_the_defaults(tmp_path: Path) -> None:
    spec_dir = write_kernel_spec(tmp_path, metadata={"trikernel": {"flavour": "trio"}})
    assert read_spec(spec_dir)["metadata"] == {
        "debugger": True,
        "supported_encryption": ["curve"],
        "trikernel": {"flavour": "trio"},
    }

    spec_dir = write_kernel_spec(tmp_path, metadata={"debugger": False, "supported_encryption": []})
    assert read_spec(spec_dir)["metadata"] == {"debugger": False, "supported_encryption": []}


def test_interrupt_mode_is_always_message(tmp_path: Path) -> None:
    spec_dir = write_kernel_spec(tmp_path, metadata={"interrupt_mode": "signal"})
    assert read_spec(spec_dir)["interrupt_mode"] == "message"


def test_settings_go_to_argv(tmp_path: Path) -> None:
    spec_dir = write_kernel_spec(
        tmp_path, **{"shell.timeout": 0.1, "shell.history": False, "streams.flush_interval": 0}
    )
    assert read_spec(spec_dir)["argv"][5:] == [
        "--shell.timeout=0.1",
        "--shell.history=false",
        "--streams.flush_interval=0",
    ]


def test_unknown_setting_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"shell\.tiemout"):
        write_kernel_spec(tmp_path, **{"shell.tiemout": 1})
    assert listing(tmp_path) == []


def test_bad_setting_value_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"shell\.timeout"):
        write_kernel_spec(tmp_path, **{"shell.timeout": "soon"})
    assert listing(tmp_path) == []


@pytest.mark.parametrize("name", ["", "has space", "slash/name", "ünïcode", "a:b"])
def test_invalid_kernel_name_is_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid kernel name"):
        write_kernel_spec(tmp_path, kernel_name=name)
    assert listing(tmp_path) == []


def test_kernel_name_allows_jupyters_characters_in_any_case(tmp_path: Path) -> None:
    spec_dir = write_kernel_spec(tmp_path, kernel_name="Tri_Kernel-3.11")
    assert spec_dir.name == "Tri_Kernel-3.11"
    assert (spec_dir / "kernel.json").is_file()


def test_path_and_prefix_together_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prefix"):
        write_kernel_spec(tmp_path / "a", prefix=str(tmp_path / "b"))
    assert listing(tmp_path) == []


def test_prefix_writes_under_share_jupyter_kernels(tmp_path: Path) -> None:
    spec_dir = write_kernel_spec(prefix=str(tmp_path))
    assert spec_dir == tmp_path / "share" / "jupyter" / "kernels" / KERNEL_NAME
    assert (spec_dir / "kernel.json").is_file()


def test_existing_spec_is_replaced_whole(tmp_path: Path) -> None:
    old = tmp_path / KERNEL_NAME
    old.mkdir()
    (old / "kernel.json").write_text('{"argv": ["old"]}', encoding="utf-8")
    (old / "stale.txt").write_text("from an older install", encoding="utf-8")

    spec_dir = write_kernel_spec(tmp_path, display_name="New")

    assert read_spec(spec_dir)["display_name"] == "New"
    assert not (spec_dir / "stale.txt").exists()
    assert listing(tmp_path) == [KERNEL_NAME]


def test_failed_write_keeps_the_previous_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write_kernel_spec(tmp_path, display_name="First")
    before = {p.name: p.read_bytes() for p in first.iterdir()}

    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_kernel_spec(tmp_path, display_name="Second")

    assert listing(tmp_path) == [KERNEL_NAME]
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before


def test_unserialisable_metadata_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_kernel_spec(tmp_path, metadata={"when": object()})
    assert listing(tmp_path) == []


def test_spec_folder_is_readable_by_everyone(tmp_path: Path) -> None:
    spec_dir = write_kernel_spec(tmp_path)
    assert spec_dir.stat().st_mode & 0o555 == 0o555


# ----------------------------------------------------------------------------------------------
# start interfaces in kernelspecs


def test_callable_start_interface_is_copied_into_the_spec(tmp_path: Path) -> None:
    spec_dir = write_kernel_spec(tmp_path, start_interface=sample_start_interface)

    copy = spec_dir / "start_interface.py"
    option = f"--start-interface={copy}:sample_start_interface"
    assert read_spec(spec_dir)["argv"][5:] == [option]
    loaded = import_start_interface(option.split("=", 1)[1])
    assert loaded is not sample_start_interface
    assert loaded(1, two=2) == ("sample", (1,), {"two": 2}, os.sep)


def test_callable_start_interface_survives_replacing_the_spec(tmp_path: Path) -> None:
    write_kernel_spec(tmp_path, start_interface=sample_start_interface)
    spec_dir = write_kernel_spec(tmp_path, start_interface=sample_start_interface)
    assert (spec_dir / "start_interface.py").is_file()
    assert listing(tmp_path) == [KERNEL_NAME]


def test_nested_functions_and_lambdas_cannot_be_copied(tmp_path: Path) -> None:
    def nested() -> None:
        pass

    for func in (nested, lambda: None, decorated_start_interface):
        with pytest.raises(ValueError, match="start_interface"):
            write_kernel_spec(tmp_path, start_interface=func)
    with pytest.raises(TypeError, match="start_interface"):
        write_kernel_spec(tmp_path, start_interface=print)
    assert listing(tmp_path) == []


def test_import_path_start_interface_is_stored_as_given(tmp_path: Path) -> None:
    spec_dir = write_kernel_spec(tmp_path, start_interface="my_pkg.ui:start")
    assert read_spec(spec_dir)["argv"][-1] == "--start-interface=my_pkg.ui:start"


def test_file_start_interface_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ui.py").write_text("def go():\n    return 'go'\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    spec_dir = write_kernel_spec(tmp_path / "kernels", start_interface="ui.py:go")

    option = read_spec(spec_dir)["argv"][-1]
    assert option == f"--start-interface={tmp_path / 'ui.py'}:go"
    assert import_start_interface(option.split("=", 1)[1])() == "go"


def test_missing_start_interface_file_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match=r"nowhere\.py"):
        write_kernel_spec(tmp_path / "kernels", start_interface=str(tmp_path / "nowhere.py"))
    assert listing(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# import_start_interface


@pytest.fixture
def interface_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable package ``tk_iface_pkg`` with interfaces in several shapes."""
    root = tmp_path / "site"
    package = root / "tk_iface_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "ui.py").write_text(
        "def start(*args, **kwargs):\n"
        "    return ('ui.start', args, kwargs)\n"
        "\n"
        "class Interfaces:\n"
        "    @staticmethod\n"
        "    def console():\n"
        "        return 'console'\n"
        "\n"
        "NOT_CALLABLE = 42\n",
        encoding="utf-8",
    )
    (package / "broken.py").write_text(
        "import tk_iface_missing_dependency\n\ndef start():\n    pass\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m.startswith("tk_iface_pkg")]:
        del sys.modules[name]


@pytest.mark.usefixtures("interface_package")
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tk_iface_pkg.ui:start", ("ui.start", (), {})),
        ("tk_iface_pkg.ui.start", ("ui.start", (), {})),
        ("tk_iface_pkg.ui:Interfaces.console", "console"),
        ("tk_iface_pkg.ui.Interfaces.console", "console"),
        ("  tk_iface_pkg.ui:start  ", ("ui.start", (), {})),
    ],
)
def test_import_start_interface_from_modules(name: str, expected: object) -> None:
    assert import_start_interface(name)() == expected


def test_import_start_interface_from_a_file(tmp_path: Path) -> None:
    script = tmp_path / "my interface.py"
    script.write_text(
        "import dataclasses\n"
        "\n"
        "@dataclasses.dataclass\n"
        "class Options:\n"  # dataclasses look their module up in sys.modules
        "    port: int = 1\n"
        "\n"
        "def start_interface():\n"
        "    return Options()\n"
        "\n"
        "def other(x):\n"
        "    return x * 2\n",
        encoding="utf-8",
    )
    assert import_start_interface(str(script))().port == 1
    assert import_start_interface(f"{script}:other")(21) == 42


def test_import_start_interface_from_a_relative_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rel.py").write_text("def start_interface():\n    return 'rel'\n", "utf-8")
    monkeypatch.chdir(tmp_path)
    assert import_start_interface("rel.py")() == "rel"


@pytest.mark.parametrize(
    "name", ["", "   ", "justaname", "pkg.mod:", "pkg.mod:not-an-attr", "not a module:attr", ":x"]
)
def test_malformed_start_interface_is_a_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="start interface"):
        import_start_interface(name)


@pytest.mark.usefixtures("interface_package")
@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("tk_no_such_module:start", "tk_no_such_module"),
        ("tk_no_such_module.start", "tk_no_such_module"),
        ("tk_iface_pkg.ui:nope", "nope"),
        ("tk_iface_pkg.ui.nope", "nope"),
        ("tk_iface_pkg.nomod.start", "nomod"),
        ("/no/such/dir/iface.py", "iface.py"),
        ("/no/such/dir/iface.py:start", "iface.py"),
    ],
)
def test_missing_start_interface_is_an_import_error(name: str, named: str) -> None:
    with pytest.raises(ImportError, match=named):
        import_start_interface(name)


def test_missing_attribute_in_a_file_is_an_import_error(tmp_path: Path) -> None:
    script = tmp_path / "iface.py"
    script.write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(ImportError, match="start_interface"):
        import_start_interface(str(script))


@pytest.mark.usefixtures("interface_package")
def test_a_broken_module_reports_its_own_missing_dependency() -> None:
    with pytest.raises(ModuleNotFoundError, match="tk_iface_missing_dependency"):
        import_start_interface("tk_iface_pkg.broken.start")


@pytest.mark.usefixtures("interface_package")
def test_non_callable_start_interface_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="NOT_CALLABLE"):
        import_start_interface("tk_iface_pkg.ui:NOT_CALLABLE")


def test_errors_raised_by_a_file_propagate(tmp_path: Path) -> None:
    script = tmp_path / "boom.py"
    script.write_text("raise RuntimeError('boom at import')\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="boom at import"):
        import_start_interface(str(script))


# ----------------------------------------------------------------------------------------------
# install and the CLI


def test_install_uses_this_interpreter(tmp_path: Path) -> None:
    spec_dir = install(prefix=str(tmp_path), **{"shell.timeout": 2})
    assert spec_dir == get_kernel_dir(tmp_path) / KERNEL_NAME
    assert read_spec(spec_dir)["argv"] == make_argv(settings={"shell.timeout": 2})


def test_install_defaults_to_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "user-data"))
    assert install() == tmp_path / "user-data" / "kernels" / KERNEL_NAME
    assert install(user=True, kernel_name="other").parent == tmp_path / "user-data" / "kernels"


def test_install_sys_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "env"))
    spec_dir = install(sys_prefix=True)
    assert spec_dir == tmp_path / "env" / "share" / "jupyter" / "kernels" / KERNEL_NAME


def test_install_rejects_two_locations(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at most one"):
        install(user=True, prefix=str(tmp_path))
    assert listing(tmp_path) == []


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trikernel")
    subcommands = parser.add_subparsers(dest="command", required=True)
    add_install_arguments(subcommands.add_parser("install"))
    return parser


def test_cli_install_with_every_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = make_parser().parse_args(
        [
            "install",
            "--prefix",
            str(tmp_path),
            "--name",
            "tk-cli",
            "--display-name",
            "Trio (CLI)",
            "--env",
            "A=1",
            "B=x=y",
            "--env",
            "C=",
            "--set",
            "shell.timeout=3",
            "--start-interface",
            "some.module:start",
        ]
    )
    assert run_install(args) == 0

    spec_dir = get_kernel_dir(tmp_path) / "tk-cli"
    assert str(spec_dir) in capsys.readouterr().out
    spec = read_spec(spec_dir)
    assert spec["display_name"] == "Trio (CLI)"
    assert spec["env"] == {"A": "1", "B": "x=y", "C": ""}
    assert spec["argv"] == [
        sys.executable,
        "-m",
        "trikernel",
        "-f",
        "{connection_file}",
        "--start-interface=some.module:start",
        "--shell.timeout=3",
    ]


def test_cli_reports_a_bad_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = make_parser().parse_args(["install", "--prefix", str(tmp_path), "--set", "nope=1"])
    assert run_install(args) == 2
    assert "'nope'" in capsys.readouterr().err
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["install", "--user", "--sys-prefix"],
        ["install", "--user", "--prefix", "x"],
        ["install", "--env", "NOEQUALS"],
        ["install", "--env", "=value"],
    ],
)
def test_cli_rejects_bad_options(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        make_parser().parse_args(argv)
    assert exc_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_python_m_trikernel_install(tmp_path: Path) -> None:
    """The real command line, in a child process, as a user runs it."""
    source_root = Path(trikernel.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    result = subprocess.run(
        [sys.executable, "-m", "trikernel", "install", "--prefix", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    spec_dir = tmp_path / "share" / "jupyter" / "kernels" / KERNEL_NAME
    spec = read_spec(spec_dir)
    assert spec["argv"] == [sys.executable, "-m", "trikernel", "-f", "{connection_file}"]
    assert spec["interrupt_mode"] == "message"
    assert {p.name for p in spec_dir.iterdir()} == {*LOGOS, "kernel.json"}


def test_module_exports_the_public_api() -> None:
    assert set(kernelspec.__all__) == {
        "KERNEL_NAME",
        "add_install_arguments",
        "get_kernel_dir",
        "import_start_interface",
        "install",
        "make_argv",
        "run_install",
        "write_kernel_spec",
    }
