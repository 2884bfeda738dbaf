"""The one gate for local runs and CI: `nox -s lint typecheck tests` is what .ci/run runs.

Interpreters come from the machine (pyenv's, listed in .python-version), never downloaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import nox

nox.needs_version = ">=2025.5.1"
nox.options.default_venv_backend = "virtualenv"  # seeds pip from wheels it bundles: works offline
nox.options.download_python = "never"
nox.options.error_on_missing_interpreters = True  # a missing Python fails, never skips quietly
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "typecheck", "tests"]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# IPython 9 needs Python >= 3.11, so 3.10 is where IPython 8 stays supported and tested.
IPYTHON_8 = "ipython>=8.12,<9"


def install_project(session: nox.Session, *extra: str) -> None:
    """Install trikernel (a real wheel install, so shared-data lands in the venv) plus ``extra``.

    The project is force-reinstalled because reused venvs would otherwise keep a stale build of
    the same version.
    """
    pins = [IPYTHON_8] if session.python == "3.10" else []
    session.install(".", *extra, *pins)
    session.install("--no-deps", "--force-reinstall", ".")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite (pass pytest options after `--`)."""
    install_project(session, *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def coverage(session: nox.Session) -> None:
    """Run the tests under coverage, following kernel subprocesses, and report."""
    install_project(session, *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine")
    session.run("coverage", "report")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting (check only)."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", *session.posargs, ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=["3.10", "3.13"])
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, on the oldest (IPython 8) and newest (IPython 9) Python."""
    install_project(session, ".[fast]", *nox.project.dependency_groups(PYPROJECT, "typecheck"))
    # Each interpreter checks the code as that version sees it (version-gated imports).
    session.run("mypy", "--strict", f"--python-version={session.python}", *session.posargs)


MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)[^)]*\)")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Check the docs: relative links resolve, --help runs, the guide's examples give the
    outputs it shows."""
    pages = sorted(ROOT.glob("docs/**/*.md"))
    if (ROOT / "README.md").exists():
        pages.append(ROOT / "README.md")
    broken = []
    for page in pages:
        for target in MARKDOWN_LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    if broken:
        session.error("broken links:\n  " + "\n  ".join(broken))
    session.log(f"{len(pages)} markdown pages, all relative links resolve")

    # anyio: a guide example shows anyio code running on the kernel's trio loop.
    install_project(session, "nbclient", "nbformat", "anyio")
    session.run("python", "-m", "trikernel", "--help")
    # The guide's examples, run as one notebook on the kernel just installed.
    session.run("python", "-m", "trikernel", "install", "--sys-prefix")
    session.run("python", "docs/check_examples.py", "--kernel", "trikernel")


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """Run examples/demo.ipynb under trikernel with nbclient and print each cell's output."""
    install_project(session, "nbclient", "nbformat", "ipywidgets", "matplotlib")
    session.run("python", "-m", "trikernel", "install", "--sys-prefix")
    session.run("python", "examples/run_demo.py", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Compare trikernel with ipykernel (benchmarks/run.py; options after `--`), then, in a full
    run, the socket layer alone against zmq-anyio (benchmarks/transport.py)."""
    install_project(
        session, "ipykernel", "async-kernel", "jupyter_client>=8", "orjson", "psutil", "zmq-anyio"
    )
    session.run("python", "-m", "trikernel", "install", "--sys-prefix")
    session.run("python", "benchmarks/run.py", *session.posargs)
    if not session.posargs:
        session.run("python", "benchmarks/transport.py")
