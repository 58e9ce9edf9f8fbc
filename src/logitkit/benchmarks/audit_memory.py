"""Peak memory and time of an audit in a fresh process that imports only what ``logitkit audit``
imports (NumPy, SciPy, ``logitkit.audit``; not torch, whose import alone is about 180 MiB).

The benchmark's frontier heads (:mod:`logitkit.benchmarks.audit`) are measured here, in a
subprocess: the benchmark itself imports torch, and its earlier cases would also set the peak of
a process's lifetime (``ru_maxrss``). The memory reported is the process's and its forked
workers' (:class:`PeakMemory`), the head and the interpreter's own included.

Example (from a shell; prints one JSON object)::

    python -m logitkit.benchmarks.audit_memory 20000 40 1.0 300
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time

import numpy as np

from logitkit.audit import AuditResult, check_argmaxable

JOBS = 2


def cpu_seconds() -> float:
    """user + sys CPU seconds of this process and its finished children (the workers)."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _pss_mb(pid: int) -> int:
    """Proportional set size of process ``pid`` in MiB (pages shared with others counted in
    shares, so summing processes counts each page once); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as lines:
            return next((int(line.split()[1]) // 1024 for line in lines
                         if line.startswith("Pss:")), 0)
    except OSError:
        return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as text:
            return [int(child) for child in text.read().split()]
    except OSError:
        return []


class PeakMemory:
    """The peak memory of this process and its children (the audit's forked workers, which
    share the head copy-on-write) while in the ``with`` block: their summed proportional set
    sizes, sampled every ``interval`` seconds; ``peak_gb`` in GiB, as this module's other memory
    figures (None without Linux's /proc).

    Example::

        with PeakMemory() as memory:
            check_argmaxable(weight, jobs=2)
        print(memory.peak_gb)
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval, self.peak_mb = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = os.getpid()
        while True:
            total = _pss_mb(me) + sum(_pss_mb(child) for child in _children(me))
            self.peak_mb = max(self.peak_mb, total)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_gb(self) -> float | None:
        return self.peak_mb / 1024 if self.peak_mb else None


def lognormal_head(n: int, d: int, sigma: float, seed: int = 0) -> np.ndarray:
    """Gaussian directions, row norms ``exp(sigma N(0, 1))`` times a GPT-2-like scale.

    Drawn 4096 rows at a time into the float32 head (the same numbers as one float64 draw of
    all rows, without its 2x-the-head temporary, which would set the peak memory measured)."""
    rng = np.random.default_rng(seed)
    weight = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 4096):
        block = weight[start:start + 4096]
        block[:] = rng.normal(size=block.shape).astype(np.float32) * np.float32(0.1)
    weight *= np.exp(sigma * rng.normal(size=(n, 1))).astype(np.float32)
    return weight


def evidence_bytes(result: AuditResult) -> dict:
    """Where the certificates wait: GiB in memory and in the temporary file (not in the peak)."""
    store = result.certificates
    return {"certificates_in_memory_gb": round(store.bytes_in_memory / 2**30, 3),
            "certificates_on_disk_gb": round(store.bytes_on_disk / 2**30, 3)}


def sampled_audit(n: int, d: int, sigma: float, sample: int, seed: int = 2) -> dict:
    """:func:`check_argmaxable` on ``sample`` seeded classes of ``lognormal_head(n, d, sigma)``
    (every row still competes), ``JOBS`` workers: seconds, the whole-head time extrapolated
    (``time_s x n / sample``), peak memory against the float32 head, counts, and the classes
    the exact stage took (``hard``)."""
    start_mib = _pss_mb(os.getpid())  # the interpreter and the modules, before the head
    weight = lognormal_head(n, d, sigma)
    classes = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    cpu, start = cpu_seconds(), time.perf_counter()
    with PeakMemory() as memory:
        result = check_argmaxable(weight, classes=classes, keep_witnesses=False, jobs=JOBS,
                                  show_progress=False, copy=False)  # one head, not two
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    peak_gb = max(rss_gb, memory.peak_gb or 0.0)  # with the workers' own memory where known
    return {"sample": sample, "sample_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "time_s": round(wall * n / sample, 1), "time_is": "extrapolated from the sample",
            "fast_s": round(result.timings["fast_s"], 1),
            "exact_s": round(result.timings.get("exact_s", 0.0), 1),
            "process_before_head_gb": round(start_mib / 1024, 2),
            "torch_imported": "torch" in sys.modules,
            "peak_rss_gb": round(rss_gb, 2),
            "peak_pss_with_workers_gb": None if memory.peak_gb is None else
            round(memory.peak_gb, 2),
            "peak_over_float32_head": round(peak_gb * 2**30 / weight.nbytes, 2),
            **evidence_bytes(result),
            **{f"n_{k}": v for k, v in result.counts.items()},
            **{f"stage_{k}": v for k, v in result.stage_counts.items()},
            "hard": result.classes[result.stage == "exact"].tolist()}


if __name__ == "__main__":
    n, d, sigma, sample = sys.argv[1:5]
    print(json.dumps(sampled_audit(int(n), int(d), float(sigma), int(sample))))
