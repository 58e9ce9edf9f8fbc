"""Shared harness for the benchmark scripts in this folder.

A benchmark script measures a baseline and logitkit in the same process, then prints ONE JSON object
(``emit``) with the configuration, each case's figures, their ratios (ours / baseline) and whether
the target in the issue is met. Timings: median of repeated calls after warm-up. Peak memory: in a
fresh subprocess (spawn), so earlier work cannot hide it. On CPU it is the growth of the process's
peak resident set while the measured call runs, after its inputs exist: on Linux the child's own
high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` once the inputs exist), because
``getrusage``'s ``ru_maxrss`` survives fork and exec and would start at the parent's peak; elsewhere
``ru_maxrss``. On CUDA it is ``torch.cuda.max_memory_allocated`` above what was allocated before.
Nothing here asserts a speed: targets are reported, never enforced in tests.

For a reader, ``emit(..., table=True)`` also prints a table of the cases on stderr
(``format_table``: each case's time, memory and other ratios, its targets and whether they are
met), so that stdout keeps the one JSON object and ``logitkit bench`` shows the table as the
benchmark finishes. A
target that a run's sizes cannot test (``--quick``) is passed to ``case`` as ``not_testable``: it
is listed with the reason, left out of ``met`` and ``all_targets_met``, and its row says "not
testable at --quick size" instead of "not met".
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], *, device: str = "cpu", repeats: int = 5,
              warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _resident_kib(field: str) -> int | None:
    """``VmRSS`` or ``VmHWM`` of this process in KiB from ``/proc/self/status``; None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_resident() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _measure_in_child(setup: Callable[[], Any], run: Callable[[Any], Any], device: str,
                      queue: Any) -> None:
    state = setup()
    if device.startswith("cuda"):
        synchronize(device)
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run(state)
        synchronize(device)
        queue.put(torch.cuda.max_memory_allocated() - before)
    elif _reset_peak_resident():
        before = _resident_kib("VmRSS")
        run(state)
        queue.put((_resident_kib("VmHWM") - before) * 1024)
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run(state)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        queue.put((after - before) * 1024)  # ru_maxrss is in KiB on Linux


_ENVIRONMENT_LOCK = threading.Lock()


def peak_memory_bytes(setup: Callable[[], Any], run: Callable[[Any], Any], *,
                      device: str = "cpu", env: dict[str, str] | None = None) -> int:
    """Peak extra memory of ``run(setup())`` measured in a fresh process.

    ``setup`` and ``run`` must be picklable (module-level functions or ``functools.partial`` of
    them); ``setup`` builds the inputs, whose memory is not counted. ``env``: environment
    variables the child starts with (e.g. ``{"MALLOC_MMAP_THRESHOLD_": "65536"}``, read by glibc
    at start-up), on top of this process's; this process's own environment is restored after.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_measure_in_child, args=(setup, run, device, queue))
    with _ENVIRONMENT_LOCK:  # callers may measure from several threads at once
        saved = {key: os.environ.get(key) for key in env or {}}
        os.environ.update(env or {})
        try:
            child.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"memory measurement subprocess failed with exit code {child.exitcode}")
    return int(queue.get())


def case(name: str, *, baseline: dict[str, float], ours: dict[str, float],
         targets: dict[str, float] | None = None, baseline_name: str = "baseline",
         ours_name: str = "logitkit",
         not_testable: str | dict[str, str] | None = None) -> dict[str, Any]:
    """One comparison: ratio = ours / baseline for each metric both report.

    ``targets`` maps a metric to the largest acceptable ratio (lower is better: time, memory);
    a ``min_`` prefix asks for a smallest acceptable ratio instead, e.g. ``{"min_speedup": 20}``
    (``speedup`` = baseline time / our time). ``not_testable``: why this run cannot test the
    targets (a reason for all of them, or a reason per target), e.g. a ``--quick`` size too small
    to reach the shape the target is about; those targets stay in ``targets`` but get no entry in
    ``met`` and are listed under ``not_testable`` instead.
    """
    ratios = {
        metric: ours[metric] / baseline[metric]
        for metric in ours
        if metric in baseline and baseline[metric] != 0
    }
    if "time_s" in ratios and ratios["time_s"] > 0:
        ratios["speedup"] = 1.0 / ratios["time_s"]
    if isinstance(not_testable, str):
        not_testable = dict.fromkeys(targets or {}, not_testable)
    untested = {k: v for k, v in (not_testable or {}).items() if k in (targets or {})}
    met = {}
    for metric, bound in (targets or {}).items():
        if metric in untested:
            continue
        if metric.startswith("min_"):
            value = ratios.get(metric[4:])
            met[metric] = value is not None and value >= bound
        else:
            value = ratios.get(metric)
            met[metric] = value is not None and value <= bound
    return {
        "case": name,
        "baseline_name": baseline_name,
        "ours_name": ours_name,
        "baseline": baseline,
        "ours": ours,
        "ratio": {k: round(v, 4) for k, v in ratios.items()},
        "targets": targets or {},
        "met": met,
        **({"not_testable": untested} if untested else {}),
    }


def add_target(result: dict[str, Any], key: str, *, description: str, met: bool | None = None,
               not_testable: str | None = None) -> dict[str, Any]:
    """Add a target that is not a ratio (e.g. "the whole head in < 600 s") to a ``case``.

    ``description`` is what the table shows; ``met`` whether it is met, or ``not_testable`` why
    this run cannot test it (then it gets no entry in ``met``). Returns ``result``.
    """
    result.setdefault("target_text", {})[key] = description
    if not_testable is not None:
        result.setdefault("not_testable", {})[key] = not_testable
    else:
        result["met"][key] = bool(met)
    return result


QUICK_UNTESTABLE = "not testable at --quick size"
UNTESTABLE = "not testable in this run"
_METRIC_LABELS = {"time_s": "time", "cpu_s": "CPU time", "peak_bytes": "memory",
                  "memory_bytes": "memory", "speedup": "speedup"}
_FIRST_COLUMNS = ("time_s", "cpu_s", "speedup", "peak_bytes", "memory_bytes")


def _label(metric: str) -> str:
    return _METRIC_LABELS.get(metric, metric)


def describe_target(metric: str, bound: float) -> str:
    """``("time_s", 1.0)`` -> ``"time <= 1x"``; ``("min_speedup", 20)`` -> ``"speedup >= 20x"``."""
    if metric.startswith("min_"):
        return f"{_label(metric[4:])} >= {bound:g}x"
    return f"{_label(metric)} <= {bound:g}x"


def _target_keys(result: dict[str, Any]) -> list[str]:
    """Every target of a case, in order: ratio targets, then the others (``add_target``, met)."""
    keys = list(result.get("targets", {}))
    for extra in (result.get("target_text", {}), result.get("met", {}),
                  result.get("not_testable", {})):
        keys += [key for key in extra if key not in keys]
    return keys


def _target_text(result: dict[str, Any], key: str) -> str:
    if key in result.get("target_text", {}):
        return result["target_text"][key]
    if key in result.get("targets", {}):
        return describe_target(key, result["targets"][key])
    return key


def _met_cell(result: dict[str, Any], keys: list[str], notes: list[str], untestable: str) -> str:
    """"yes", "NO", or per target when they differ; untestable ones point to a numbered note."""
    states = []
    for key in keys:
        if key in result.get("not_testable", {}):
            reason = result["not_testable"][key]
            if reason not in notes:
                notes.append(reason)
            states.append(f"{untestable} [{notes.index(reason) + 1}]")
        else:
            states.append("yes" if result.get("met", {}).get(key) else "NO")
    if not states:
        return "- (no target)"
    if len(set(states)) == 1:
        return states[0]
    return "; ".join(f"{_label(key[4:] if key.startswith('min_') else key)} {state}"
                     for key, state in zip(keys, states, strict=True))


def _ratio_cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}x" if value < 100 else f"{value:.0f}x"


def format_table(cases: list[dict[str, Any]], *, title: str = "", quick: bool = False) -> str:
    """The cases as an aligned text table for a reader: case, ratios (ours / baseline; speedup =
    baseline time / ours), targets and whether each is met ("not testable at --quick size" with a
    numbered reason below the table where a run's size cannot test a target), then a count."""
    untestable = QUICK_UNTESTABLE if quick else UNTESTABLE
    ratio_keys = list(dict.fromkeys(key for c in cases for key in c.get("ratio", {})))
    columns = [key for key in _FIRST_COLUMNS if key in ratio_keys]
    columns += [key for key in ratio_keys if key not in columns]
    memory = [key for key in ("peak_bytes", "memory_bytes") if key in columns]
    if len(memory) == 2:  # one "memory" column: a case reports one of them
        columns.remove("memory_bytes")
    header = ["case", *(_label(key) for key in columns), "target", "met"]
    rows, notes = [], []
    counts = {"met": 0, "not met": 0, untestable: 0}
    for result in cases:
        ratio = result.get("ratio", {})
        cells = [str(result.get("case", "?"))]
        for key in columns:
            value = ratio.get(key)
            if value is None and key == "peak_bytes":
                value = ratio.get("memory_bytes")
            cells.append(_ratio_cell(value))
        keys = _target_keys(result)
        cells.append("; ".join(_target_text(result, key) for key in keys) or "-")
        cells.append(_met_cell(result, keys, notes, untestable))
        rows.append(cells)
        for key in keys:
            if key in result.get("not_testable", {}):
                counts[untestable] += 1
            else:
                counts["met" if result.get("met", {}).get(key) else "not met"] += 1
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [title] if title else []
    lines.append("ratios are ours / baseline (lower is better); speedup = baseline time / ours")
    for row in (header, ["-" * width for width in widths], *rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip())
    lines += [f"[{number}] {note}" for number, note in enumerate(notes, 1)]
    total = sum(counts.values())
    summary = f"{total} target(s): {counts['met']} met, {counts['not met']} not met"
    if counts[untestable] or quick:
        summary += f", {counts[untestable]} {untestable}"
    lines.append(summary)
    return "\n".join(lines)


def emit(benchmark: str, *, config: dict[str, Any], cases: list[dict[str, Any]],
         table: bool = False, quick: bool | None = None) -> dict[str, Any]:
    """Print the benchmark's single JSON object on stdout (last line) and return it.

    ``table=True`` first prints ``format_table`` of the cases on stderr (stdout stays one JSON
    object). ``quick`` (default: ``quick_flag()``) marks the title. ``all_targets_met`` covers the
    targets this run could test; ``not_testable`` lists the others, as ``"case: target"``.
    """
    quick = quick_flag() if quick is None else quick
    if table:
        title = f"== {benchmark}{' --quick' if quick else ''}: logitkit vs baseline"
        print("\n" + format_table(cases, title=title, quick=quick) + "\n", file=sys.stderr,
              flush=True)
    untested = [f"{c['case']}: {key}" for c in cases for key in c.get("not_testable", {})]
    payload = {
        "benchmark": benchmark,
        "config": config,
        "environment": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "cases": cases,
        "all_targets_met": all(all(c["met"].values()) for c in cases),
        **({"not_testable": untested} if untested else {}),
    }
    print(json.dumps(payload), flush=True)
    return payload


def quick_flag() -> bool:
    """True when the script was called with ``--quick`` (smaller shapes)."""
    return "--quick" in sys.argv[1:]
