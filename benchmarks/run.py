"""Compare trikernel with ipykernel (and async-kernel on trio, when installed): one table.

    python benchmarks/run.py [--quick] [--only FIG[,FIG]] [--kernels a,b] [--json PATH]

Every kernel is started from its kernelspec by ``jupyter_client.KernelManager`` and measured
through raw ZeroMQ sockets (``wire.py``). Kernels take turns: each repetition of a figure runs
on every kernel before the next repetition starts, in an order that rotates, so drift in the
machine's speed hits all of them alike. What each figure measures: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import figures
import psutil
import zmq
from kernels import (
    ASYNC_KERNEL_SPEC,
    Kernel,
    find_async_kernel_python,
    leftover_processes,
    spec_exists,
    write_async_kernel_spec,
)

HERE = Path(__file__).resolve().parent
STEAL_WARNING = 5.0
"""Percent of CPU time stolen over the run past which the run warns that figures are noisy."""

# -- what is measured -------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    key: str
    """Its name in the JSON."""
    group: str
    """What ``--only`` selects it by (``GROUPS`` maps issue 6's figure numbers to these)."""
    title: str
    unit: str
    higher_is_better: bool = False
    goal: float | None = None
    """Goal for trikernel's ratio to the baseline: at most (time, memory) or at least (rate)."""
    rep: Callable[[Kernel, figures.Params], list[float]] | None = None
    reps: Callable[[figures.Params], int] = lambda p: 1

    def meets(self, ratio: float) -> bool:
        """Whether trikernel's ``ratio`` to the baseline meets the goal (there must be one)."""
        assert self.goal is not None
        return ratio >= self.goal if self.higher_is_better else ratio <= self.goal


GROUPS = {
    "1": "startup",
    "2": "rss",
    "3": "execute",
    "4": "pipelined",
    "5": "stream",
    "6": "comm",
    "7": "interrupt",
    "8": "control",
}

FIGURES = [
    Figure("startup", "startup", "startup: start_kernel → kernel_info reply", "ms", goal=0.6),
    Figure("idle_rss", "rss", "idle RSS after one cell", "MiB", goal=0.8),
    Figure("shutdown", "startup", "shutdown: shutdown_request → process exit", "ms"),
    Figure(
        "execute_rt",
        "execute",
        "`pass` round trip (reply + idle), median",
        "ms",
        goal=0.35,
        rep=figures.execute_rt,
        reps=lambda p: p.execute_batches,
    ),
    Figure("execute_rt_p99", "execute", "`pass` round trip, p99", "ms"),
    Figure(
        "error_rt",
        "execute",
        "`1/0` round trip (error reply + idle), median",
        "ms",
        rep=figures.error_rt,
        reps=lambda p: p.error_batches,
    ),
    Figure(
        "pipelined",
        "pipelined",
        "pipelined `pass` cells (to last reply + idle)",
        "cells/s",
        higher_is_better=True,
        goal=6.0,
        rep=figures.pipelined,
        reps=lambda p: p.pipelined_reps,
    ),
    Figure(
        "print_100k",
        "stream",
        "100k `print(i)` to idle, verified",
        "s",
        goal=0.5,
        rep=figures.print_100k,
        reps=lambda p: p.stream_reps,
    ),
    Figure(
        "write_10mb",
        "stream",
        "one 10 MB `sys.stdout.write` to idle, verified",
        "s",
        goal=0.5,
        rep=figures.write_10mb,
        reps=lambda p: p.write_reps,
    ),
    Figure(
        "comm_rt",
        "comm",
        "comm_msg → echoed comm_msg",
        "ms",
        rep=figures.comm_rt,
        reps=lambda p: p.comm_reps,
    ),
    *(
        Figure(
            f"interrupt_{mode}_{cell}",
            "interrupt",
            f"interrupt ({mode}) `{figures.INTERRUPT_CELLS[cell]}`",
            "ms",
            rep=figures.interrupt_figure(cell, mode),
            reps=lambda p: p.interrupt_reps,
        )
        for mode in ("message", "signal")
        for cell in ("sleep", "busy", "trio")
    ),
    Figure(
        "control_blocked",
        "control",
        "control kernel_info while `time.sleep(30)` runs",
        "ms",
        rep=figures.control_blocked,
        reps=lambda p: p.control_reps,
    ),
]


# -- results ----------------------------------------------------------------------------------


@dataclass
class Cell:
    """One figure on one kernel: samples, or why there are none."""

    samples: list[float] = field(default_factory=list)
    error: str | None = None
    na: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.na is None and bool(self.samples)

    def stats(self) -> dict[str, float]:
        s = sorted(self.samples)
        out = {"n": len(s), "median": statistics.median(s)}
        for q in (5, 25, 75, 95, 99):
            out[f"p{q}"] = percentile(s, q)
        return out


def percentile(sorted_samples: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_samples) == 1:
        return sorted_samples[0]
    pos = (len(sorted_samples) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_samples) - 1)
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (pos - lo)


class Results:
    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self.cells: dict[str, dict[str, Cell]] = {}
        self.steal: dict[str, float] = {}
        """Per figure, the share of CPU time stolen while it ran (see :class:`CpuSteal`)."""

    def cell(self, key: str, label: str) -> Cell:
        return self.cells.setdefault(key, {}).setdefault(label, Cell())

    def value(self, key: str, label: str) -> float | None:
        """The figure's headline number (median; p99 for the p99 row)."""
        c = self.cells.get(key, {}).get(label)
        if c is None or not c.ok:
            return None
        st = c.stats()
        return st["p99"] if key.endswith("_p99") else st["median"]


# -- running ----------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


class CpuSteal:
    """The share of this machine's CPU time that its hypervisor gave to other guests (Linux's
    "steal") since the reading was made; None where the system does not count it.

    On a shared virtual machine this is noise no care in the run can remove: figures taken
    while much time is stolen are not comparable with quiet ones.
    """

    def __init__(self) -> None:
        self.start = psutil.cpu_times()

    def percent(self) -> float | None:
        end = psutil.cpu_times()
        if not hasattr(end, "steal"):
            return None
        # Linux counts guest time inside user and nice: leave it out of the total.
        fields = [f for f in end._fields if f not in ("guest", "guest_nice")]
        total = sum(getattr(end, f) - getattr(self.start, f) for f in fields)
        stolen = end.steal - self.start.steal
        return 100 * stolen / total if total > 0 else None


T0 = time.monotonic()


def short_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, AssertionError | TimeoutError | figures.OutputMismatchError):
        text = f"{type(exc).__name__}: {text}"
    return text.splitlines()[0][:160]


def recover(k: Kernel, params: figures.Params) -> None:
    """After a failure: a kernel that is dead or does not answer a `pass` cell is restarted."""
    try:
        if k.alive():
            k.w.send("control", "interrupt_request")
            time.sleep(0.2)
            k.w.drain(0.05)
            msg_id = k.w.execute("pass")
            k.w.until(msg_id, timeout=5)
            return
    except Exception:  # noqa: BLE001 - any failure here means: restart
        pass
    log(f"  restarting {k.label}")
    k.restart()
    figures.setup_session(k, params)


def rotated(items: list[Kernel], rep: int) -> list[Kernel]:
    n = rep % len(items) if items else 0
    return items[n:] + items[:n]


def run_startup(
    labels: dict[str, str],
    params: figures.Params,
    results: Results,
    ctx: zmq.Context[Any],
    log_dir: Path,
    all_kernels: list[Kernel],
) -> None:
    """Figures 1, 1b and 2: a fresh kernel per repetition per kernel, shut down (1b) after
    measuring."""
    fresh = [Kernel(label, spec, ctx, log_dir) for label, spec in labels.items()]
    all_kernels.extend(fresh)
    failed: set[str] = set()
    no_shutdown: set[str] = set()  # kernels that did not exit once: stopped without timing
    for rep in range(params.startup_reps):
        for k in rotated(fresh, rep):
            if k.label in failed:
                continue
            try:
                ms, rss = figures.startup_once(k)
            except figures.IopubSilentError as exc:
                # The startup figure is still valid; the kernel is not usable, so no RSS.
                results.cell("startup", k.label).samples.append(exc.startup_ms)
                silent = results.cell("idle_rss", k.label).extra
                silent["iopub_silent"] = silent.get("iopub_silent", 0) + 1
                log(f"  {k.label}: {exc}")
            except Exception as exc:  # noqa: BLE001 - reported in the table, the run goes on
                failed.add(k.label)
                msg = short_error(exc)
                tail = k.log_tail(2)
                results.cell("startup", k.label).error = msg + (f" [log: {tail}]" if tail else "")
                results.cell("idle_rss", k.label).error = msg
                log(f"  {k.label}: startup failed: {msg}")
            else:
                results.cell("startup", k.label).samples.append(ms)
                results.cell("idle_rss", k.label).samples.append(rss)
                if k.label not in no_shutdown:
                    try:
                        ms = figures.shutdown_once(k)
                    except Exception as exc:  # noqa: BLE001 - reported in the table, goes on
                        no_shutdown.add(k.label)
                        results.cell("shutdown", k.label).error = short_error(exc)
                        log(f"  {k.label}: shutdown failed: {short_error(exc)}")
                    else:
                        results.cell("shutdown", k.label).samples.append(ms)
            finally:
                k.stop()
    log("startup, idle RSS, shutdown: done")


def run_figure(
    fig: Figure, kernels: list[Kernel], params: figures.Params, results: Results
) -> None:
    assert fig.rep is not None
    started = time.monotonic()
    steal = CpuSteal()
    done: set[str] = set()
    for rep in range(fig.reps(params)):
        for k in rotated(kernels, rep):
            cell = results.cell(fig.key, k.label)
            if k.label in done or cell.error or cell.na:
                continue
            try:
                cell.samples.extend(fig.rep(k, params))
            except figures.NotApplicable as exc:
                cell.na = str(exc)
                done.add(k.label)
            except Exception as exc:  # noqa: BLE001 - reported in the table, the run goes on
                cell.error = short_error(exc)
                done.add(k.label)
                log(f"  {k.label}: {fig.key} failed: {cell.error}")
                if isinstance(exc, figures.OutputMismatchError):
                    print(f"\n!!! OUTPUT VERIFICATION FAILED on {k.label}: {exc}\n", flush=True)
                recover(k, params)
    stolen = steal.percent()
    if stolen is not None:
        results.steal[fig.key] = stolen
    log(f"{fig.key}: done in {time.monotonic() - started:.1f} s{steal_note(stolen)}")


def steal_note(stolen: float | None) -> str:
    return "" if stolen is None else f", {stolen:.1f}% of CPU time stolen by the hypervisor"


def run(args: argparse.Namespace) -> int:
    params = figures.QUICK if args.quick else figures.FULL
    groups = select_groups(args.only)
    notes: list[str] = []
    labels = choose_kernels(args, notes)
    for note in notes:
        print(note)
    if labels.get("trikernel") == "trikernel" and (differ := stale_install()):
        sys.exit(
            f"the trikernel this Python runs is not this checkout's ({', '.join(differ)} "
            "differ): reinstall it first (`nox -s bench` does; `nox -R` skips installs)"
        )
    if args.baseline not in labels:
        print(f"note: baseline {args.baseline!r} is not run; ratios are left out")
    results = Results(list(labels))
    steal = CpuSteal()
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        print(f"warning: load average {load_before:.2f} at start; figures will be noisy")
    ctx: zmq.Context[Any] = zmq.Context()
    log_dir = Path(tempfile.mkdtemp(prefix="trikernel-bench-logs-"))
    # Every kernel keeps IPython's history in a fresh folder of this run's, as on a new
    # machine: a full run stores tens of thousands of cells, which do not belong in the user's.
    ipython_dir = tempfile.mkdtemp(prefix="trikernel-bench-ipython-")
    os.environ["IPYTHONDIR"] = ipython_dir
    all_kernels: list[Kernel] = []
    running: list[Kernel] = []
    interrupted = False
    try:
        if groups & {"startup", "rss"}:
            run_startup(labels, params, results, ctx, log_dir, all_kernels)
        todo = [f for f in FIGURES if f.group in groups and f.rep is not None]
        if todo:
            for label, spec in labels.items():
                k = Kernel(label, spec, ctx, log_dir)
                all_kernels.append(k)
                try:
                    k.start()
                    figures.setup_session(k, params)
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    msg = f"did not start: {short_error(exc)}"
                    tail = k.log_tail(2)
                    log(f"  {label}: {msg} [log: {tail}]")
                    for fig in todo:
                        results.cell(fig.key, label).error = msg
                    k.stop()
                    continue
                running.append(k)
                impl = k.info.get("implementation", "?")
                version = k.info.get("implementation_version", "?")
                log(f"{label}: {impl} {version}, pid {k.pid}, trio await: {k.can_await_trio}")
            for fig in todo:
                run_figure(fig, running, params, results)
            for label in labels:
                c = results.cells.get("execute_rt", {}).get(label)
                if c is not None:
                    results.cells.setdefault("execute_rt_p99", {})[label] = c
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: shutting the kernels down", flush=True)
    finally:
        for k in running:
            k.stop()
        leftovers = leftover_processes(all_kernels)
        for p in leftovers:
            print(f"LEFTOVER kernel process {p.pid} ({' '.join(p.cmdline()[:4])}): killing it")
            p.kill()
        ctx.destroy(linger=0)
        shutil.rmtree(ipython_dir, ignore_errors=True)
    info = {k.label: k.info for k in running}
    print()
    print(render_table(results, labels, args.baseline, groups))
    print()
    print(render_notes(params, notes, leftovers))
    loads = (load_before, os.getloadavg()[0])
    print(f"load average (1 min) at start / end: {loads[0]:.2f} / {loads[1]:.2f}")
    stolen = steal.percent()
    if stolen is not None:
        print(f"CPU time stolen by the hypervisor during the run: {stolen:.1f}%")
        if stolen > STEAL_WARNING:
            print(
                f"warning: over {STEAL_WARNING:g}% stolen: figures are noisier than on a quiet "
                "machine (each figure's share is in the log above and in the JSON)"
            )
    save_json(
        args.json, results, labels, args, params, info, groups, notes, leftovers, loads, stolen
    )
    if any(c.error for per_kernel in results.cells.values() for c in per_kernel.values()):
        print(f"kernel logs (stdout and stderr): {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 130 if interrupted else 0


# -- choosing ---------------------------------------------------------------------------------


def select_groups(only: str | None) -> set[str]:
    if not only:
        return set(GROUPS.values())
    chosen = set()
    for word in only.split(","):
        name = GROUPS.get(word.strip(), word.strip())
        if name not in GROUPS.values():
            sys.exit(f"--only: unknown figure {word!r}; choose from {', '.join(GROUPS.values())}")
        chosen.add(name)
    return chosen


def choose_kernels(args: argparse.Namespace, notes: list[str]) -> dict[str, str]:
    """{label: kernelspec name} of the kernels to run, in table order."""
    wanted = [w.strip() for w in args.kernels.split(",")] if args.kernels else None
    known = {"trikernel": args.trikernel_spec, "ipykernel": args.ipykernel_spec}
    labels = {label: spec for label, spec in known.items() if wanted is None or label in wanted}
    if wanted is None or "async-kernel" in wanted:
        if args.async_kernel_spec:
            labels["async-kernel"] = args.async_kernel_spec
        else:
            python, note = find_async_kernel_python(args.async_kernel_python)
            notes.append(("note: " if python is None else "") + note)
            if python is not None:
                write_async_kernel_spec(python)
                labels["async-kernel"] = ASYNC_KERNEL_SPEC
    # Any other name is a kernelspec, shown under its own name.
    labels.update({n: n for n in wanted or [] if n not in (*known, "async-kernel")})
    for label, spec in list(labels.items()):
        if not spec_exists(spec):
            notes.append(f"note: {label} skipped: no kernelspec named {spec!r}")
            del labels[label]
    if not labels:
        sys.exit("no kernels to run")
    return labels


# -- reporting --------------------------------------------------------------------------------


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratio(results: Results, key: str, label: str, baseline: str) -> float | None:
    v, b = results.value(key, label), results.value(key, baseline)
    if v is None or b is None or b == 0:
        return None
    return v / b


def ratio_interval(
    results: Results, key: str, label: str, baseline: str, draws: int = 2000
) -> tuple[float, float] | None:
    """The 95% bootstrap interval of :func:`ratio` for a median figure (each kernel's samples
    resampled on their own; seeded, so the JSON's samples give the same interval again)."""
    cells = results.cells.get(key, {})
    a, b = cells.get(label), cells.get(baseline)
    if key.endswith("_p99") or a is None or b is None or len(a.samples) < 3 or len(b.samples) < 3:
        return None
    rng = random.Random(0)
    ratios = []
    for _ in range(draws):
        base = statistics.median(rng.choices(b.samples, k=len(b.samples)))
        if base:
            ratios.append(statistics.median(rng.choices(a.samples, k=len(a.samples))) / base)
    if len(ratios) < draws // 2:
        return None
    ratios.sort()
    return ratios[int(0.025 * len(ratios))], ratios[int(0.975 * len(ratios)) - 1]


def render_table(results: Results, labels: dict[str, str], baseline: str, groups: set[str]) -> str:
    kernel_labels = list(labels)
    header = ["figure", "unit", *kernel_labels, "goal (trikernel / " + baseline + ")"]
    rows = [header, ["---"] * len(header)]
    for fig in FIGURES:
        if fig.group not in groups:
            continue
        cells = [render_cell(results, fig, label, baseline) for label in kernel_labels]
        rows.append([fig.title, fig.unit, *cells, render_goal(results, fig, baseline)])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def render_cell(results: Results, fig: Figure, label: str, baseline: str) -> str:
    c = results.cells.get(fig.key, {}).get(label)
    if c is None:
        return "-"
    if c.na:
        return f"n/a ({c.na})"
    if c.error:
        return f"error: {c.error}"
    if not c.samples:
        return "error: iopub silent after every start" if c.extra.get("iopub_silent") else "-"
    st = c.stats()
    if fig.key.endswith("_p99"):
        text = f"{fmt(st['p99'])} (n={st['n']})"
    elif st["n"] == 1:
        text = fmt(st["median"])
    else:
        text = f"{fmt(st['median'])} [{fmt(st['p25'])}-{fmt(st['p75'])}]"
    r = ratio(results, fig.key, label, baseline)
    if r is not None and label != baseline:
        text += f" **{r:.2f}x**"
    if c.extra.get("iopub_silent"):
        n = c.extra["iopub_silent"]
        text += f" (iopub silent after {n} of {n + st['n']} starts)"
    return text


def render_goal(results: Results, fig: Figure, baseline: str) -> str:
    if fig.goal is None:
        return ""
    op = "≥" if fig.higher_is_better else "≤"
    r = ratio(results, fig.key, "trikernel", baseline)
    if r is None:
        return f"{op}{fig.goal:g}x: no ratio"
    text = f"{op}{fig.goal:g}x: {'met' if fig.meets(r) else 'NOT met'} ({r:.2f}x"
    interval = ratio_interval(results, fig.key, "trikernel", baseline)
    if interval is None:
        return text + ")"
    lo, hi = interval
    text += f", 95% {lo:.2f}-{hi:.2f})"
    if lo <= fig.goal <= hi:
        text += ", within noise"
    return text


def render_notes(params: figures.Params, notes: list[str], leftovers: list[Any]) -> str:
    lines = [
        (
            "Cells: median [p25-p75] over all samples; **ratio** = median / the baseline's "
            "median (cells/s: higher is better; everything else: lower is better)."
        ),
        (
            "Goals: 95% = bootstrap interval of the ratio (each kernel's samples resampled); "
            "'within noise' when the goal lies inside it, and then another run may say otherwise."
        ),
        (
            f"Interrupts and control probes are sent {figures.START_DELAY * 1000:.0f} ms after "
            "the cell's execute_input; an interrupt that gets no reply in "
            f"{params.interrupt_timeout:g} s is an error."
        ),
        f"Repetitions: {params}",
        "Kernel processes left over: "
        + ("none (checked with psutil)" if not leftovers else f"{len(leftovers)}, killed"),
    ]
    lines.extend(n for n in notes if n.startswith("note"))
    return "\n".join(lines)


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def save_json(
    path: Path,
    results: Results,
    labels: dict[str, str],
    args: argparse.Namespace,
    params: figures.Params,
    info: dict[str, dict[str, Any]],
    groups: set[str],
    notes: list[str],
    leftovers: list[Any],
    loads: tuple[float, float],
    stolen: float | None,
) -> None:
    per_figure: dict[str, Any] = {}
    for fig in FIGURES:
        if fig.group not in groups:
            continue
        per_kernel = {}
        for label in labels:
            c = results.cells.get(fig.key, {}).get(label)
            if c is None:
                continue
            entry: dict[str, Any] = {"status": "ok" if c.ok else ("n/a" if c.na else "error")}
            if c.na or c.error:
                entry["message"] = c.na or c.error
            if c.samples:
                entry.update(c.stats())
                entry["samples"] = [round(s, 4) for s in c.samples]
            r = ratio(results, fig.key, label, args.baseline)
            if r is not None:
                entry["ratio"] = round(r, 4)
            per_kernel[label] = entry
        goal = None
        if fig.goal is not None:
            r = ratio(results, fig.key, "trikernel", args.baseline)
            met = None if r is None else fig.meets(r)
            goal = {"ratio": fig.goal, "at_least": fig.higher_is_better, "met": met}
            interval = ratio_interval(results, fig.key, "trikernel", args.baseline)
            if interval is not None:
                goal["ratio_95"] = [round(x, 4) for x in interval]
        per_figure[fig.key] = {
            "title": fig.title,
            "unit": fig.unit,
            "goal": goal,
            "cpu_steal_percent": _rounded(results.steal.get(fig.key)),
            "kernels": per_kernel,
        }
    data = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_start_end": loads,
            "cpu_steal_percent": _rounded(stolen),
        },
        "trikernel_commit": git_state(),
        "quick": args.quick,
        "params": dataclasses.asdict(params),
        "baseline": args.baseline,
        "kernelspecs": labels,
        "kernel_info": {
            label: {
                key: i.get(key)
                for key in ("implementation", "implementation_version", "protocol_version")
            }
            for label, i in info.items()
        },
        "notes": notes,
        "leftover_processes": [p.pid for p in leftovers],
        "figures": per_figure,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"results: {path}")


def stale_install(python: str = sys.executable) -> list[str]:
    """The files of this checkout's trikernel/ that the one ``python`` imports lacks or has
    otherwise: the default kernelspec runs that interpreter's installed copy, and git_state()
    names the checkout, so the two must agree (``nox -R`` skips the reinstall)."""
    found = subprocess.run(
        [python, "-c", "import trikernel; print(trikernel.__file__)"],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),  # not the checkout, which would shadow the installed copy
    )
    if found.returncode:
        return ["(trikernel is not importable)"]
    installed = Path(found.stdout.strip()).parent
    source = HERE.parent / "trikernel"
    if installed.resolve() == source.resolve():
        return []
    differ = []
    for path in sorted(source.rglob("*.py")):
        copy = installed / path.relative_to(source)
        if not copy.is_file() or copy.read_bytes() != path.read_bytes():
            differ.append(str(path.relative_to(source)))
    return differ


def git_state() -> str | None:
    """The checkout's commit, with "+dirty" when trikernel/ has changes (what was measured)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "trikernel"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N: a smoke run (< 1 min)")
    parser.add_argument(
        "--only",
        metavar="FIG[,FIG]",
        help=f"figures by name or number: {', '.join(f'{n}={g}' for n, g in GROUPS.items())}",
    )
    parser.add_argument(
        "--kernels",
        metavar="a,b",
        help="kernels to run: trikernel, ipykernel, async-kernel, or any kernelspec name "
        "(default: the first three, async-kernel if installed)",
    )
    parser.add_argument("--trikernel-spec", default="trikernel", metavar="NAME")
    parser.add_argument("--ipykernel-spec", default="python3", metavar="NAME")
    parser.add_argument(
        "--async-kernel-spec",
        metavar="NAME",
        help="an existing kernelspec for async-kernel (default: one written for its trio backend)",
    )
    parser.add_argument(
        "--async-kernel-python",
        metavar="PATH",
        help="interpreter with async-kernel installed (default: this one)",
    )
    parser.add_argument("--baseline", default="ipykernel", help="ratios are to this kernel")
    parser.add_argument(
        "--json", type=Path, default=HERE / "results.json", help="where to save all samples"
    )
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
