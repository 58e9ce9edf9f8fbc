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
"""

from __future__ import annotations

import json
import multiprocessing
import platform
import resource
import statistics
import sys
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


def peak_memory_bytes(setup: Callable[[], Any], run: Callable[[Any], Any], *,
                      device: str = "cpu") -> int:
    """Peak extra memory of ``run(setup())`` measured in a fresh process.

    ``setup`` and ``run`` must be picklable (module-level functions or ``functools.partial`` of
    them); ``setup`` builds the inputs, whose memory is not counted.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_measure_in_child, args=(setup, run, device, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"memory measurement subprocess failed with exit code {child.exitcode}")
    return int(queue.get())


def case(name: str, *, baseline: dict[str, float], ours: dict[str, float],
         targets: dict[str, float] | None = None, baseline_name: str = "baseline",
         ours_name: str = "logitkit") -> dict[str, Any]:
    """One comparison: ratio = ours / baseline for each metric both report.

    ``targets`` maps a metric to the largest acceptable ratio (lower is better: time, memory);
    a ``min_`` prefix asks for a smallest acceptable ratio instead, e.g. ``{"min_speedup": 20}``
    (``speedup`` = baseline time / our time).
    """
    ratios = {
        metric: ours[metric] / baseline[metric]
        for metric in ours
        if metric in baseline and baseline[metric] != 0
    }
    if "time_s" in ratios and ratios["time_s"] > 0:
        ratios["speedup"] = 1.0 / ratios["time_s"]
    met = {}
    for metric, bound in (targets or {}).items():
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
    }


def emit(benchmark: str, *, config: dict[str, Any], cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Print the benchmark's single JSON object on stdout (last line) and return it."""
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
    }
    print(json.dumps(payload), flush=True)
    return payload


def quick_flag() -> bool:
    """True when the script was called with ``--quick`` (smaller shapes)."""
    return "--quick" in sys.argv[1:]
