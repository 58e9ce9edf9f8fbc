"""Fused linear + loss against plain PyTorch, PyTorch's own chunked CE and cut-cross-entropy.

Each call is one forward + backward of ``loss(hidden @ weight.T, target)`` with gradients for
hidden and weight, float32 on CPU. Methods:

* ``torch_ce``: ``F.cross_entropy(hidden @ weight.T, target)`` (the full N x V logits);
* ``torch_native``: ``F.linear_cross_entropy(..., options=torch.nn.LinearCrossEntropyOptions())``
  (PyTorch's chunked fused CE, torch >= 2.13; skipped where absent);
* ``cce``: cut-cross-entropy's ``linear_cross_entropy(..., impl="torch_compile")`` (skipped when
  the package is not installed; the ``bench`` extra installs it);
* ours: ``linear_cross_entropy``, ``linear_emo_loss`` (EMO alone and the EMO authors' per-token
  adaptive mixture, cost embedding = a separate V x d matrix), ``linear_tailr_loss`` (the TaiLr
  authors' form: gamma 0.8, weight threshold 0.2).

Time: every method is called once to warm up, then ``repeats`` rounds call each method once in
turn (interleaved, so load that comes and goes hits all methods alike); the median wall-clock time
(``time_s``) and the median CPU time of this process (``cpu_s``, user + sys of all threads) are
reported. Wall-clock ratios are the targets; on a busy machine read the CPU-time ratios, and rerun
on a quiet one. Peak memory: growth of the peak resident set in a fresh subprocess while one call
runs, after its inputs exist and after one warm-up call (so one-time compilation and thread-pool
set-up are not counted).

Targets (issue 11), at every shape: our fused CE time <= 1.0x plain torch CE and <= 1.0x torch's
native chunked CE, peak memory <= both; fused EMO and the per-token adaptive EMO + MLE <= 1.3x
fused CE time, fused TaiLr <= 1.1x; the mixture's peak memory = EMO's (ratio <= 1.01).
cut-cross-entropy is reported as a further anchor (no target set).
Shapes (N, V, d): (4096, 32768, 512), (512, 131072, 1024), (8192, 32768, 512);
``--quick``: (2048, 16384, 256) and (256, 65536, 512), where chunking still pays (N >= d, V >> d),
so every target is tested at --quick size too.
Output: a table of the cases (ratios, targets, met) on stderr, then the JSON object (``emit``).
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from logitkit.benchmarks.harness import case, emit, peak_memory_bytes, quick_flag
from logitkit.losses import linear_cross_entropy, linear_emo_loss, linear_tailr_loss

SHAPES = ((4096, 32768, 512), (512, 131072, 1024), (8192, 32768, 512))
QUICK_SHAPES = ((2048, 16384, 256), (256, 65536, 512))
TAILR = {"gamma": 0.8, "threshold": 0.2}
BASELINES = ("torch_ce", "torch_native", "cce")
OURS = ("fused_ce", "fused_emo", "fused_emo_mle_adaptive", "fused_tailr")
NAMES = {
    "torch_ce": "F.cross_entropy on full logits",
    "torch_native": "F.linear_cross_entropy(options=LinearCrossEntropyOptions())",
    "cce": "cut_cross_entropy.linear_cross_entropy(impl='torch_compile')",
    "fused_ce": "logitkit linear_cross_entropy",
    "fused_emo": "logitkit linear_emo_loss (EMO alone)",
    "fused_emo_mle_adaptive": "logitkit linear_emo_loss(mle_weight='adaptive')",
    "fused_tailr": "logitkit linear_tailr_loss(gamma=0.8, threshold=0.2)",
}


def available_methods() -> list[str]:
    methods = ["torch_ce"]
    if hasattr(F, "linear_cross_entropy") and hasattr(torch.nn, "LinearCrossEntropyOptions"):
        methods.append("torch_native")
    try:
        import cut_cross_entropy  # noqa: F401
    except ImportError:
        pass
    else:
        methods.append("cce")
    return methods + list(OURS)


def make_inputs(n: int, vocab: int, width: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    return {
        "hidden": torch.randn(n, width, generator=gen).div_(width**0.5).requires_grad_(),
        "weight": torch.randn(vocab, width, generator=gen).requires_grad_(),
        "target": torch.randint(0, vocab, (n,), generator=gen),
        "embedding": torch.randn(vocab, width, generator=gen),
    }


def loss_of(method: str, inputs: dict) -> torch.Tensor:
    hidden, weight, target = inputs["hidden"], inputs["weight"], inputs["target"]
    if method == "torch_ce":
        return F.cross_entropy(hidden @ weight.T, target)
    if method == "torch_native":
        return F.linear_cross_entropy(hidden, weight, target,
                                      options=torch.nn.LinearCrossEntropyOptions())
    if method == "cce":
        from cut_cross_entropy import linear_cross_entropy as cce_loss

        return cce_loss(hidden, weight, target, impl="torch_compile")
    if method == "fused_ce":
        return linear_cross_entropy(hidden, weight, target)
    if method == "fused_emo":
        return linear_emo_loss(hidden, weight, target, inputs["embedding"])
    if method == "fused_emo_mle_adaptive":
        return linear_emo_loss(hidden, weight, target, inputs["embedding"], mle_weight="adaptive")
    if method == "fused_tailr":
        return linear_tailr_loss(hidden, weight, target, **TAILR)
    raise ValueError(method)


def forward_backward(method: str, inputs: dict) -> None:
    inputs["hidden"].grad = inputs["weight"].grad = None
    loss_of(method, inputs).backward()
    inputs["hidden"].grad = inputs["weight"].grad = None


def warmed_inputs(shape: tuple, method: str) -> dict:
    """Inputs for ``method`` after one warm-up call (compilation, thread pools)."""
    inputs = make_inputs(*shape)
    forward_backward(method, inputs)
    return inputs


def timings(shape: tuple, methods: list[str], repeats: int) -> dict[str, dict[str, float]]:
    """Median wall-clock and CPU seconds per method, from interleaved rounds."""
    inputs = make_inputs(*shape)
    for method in methods:
        forward_backward(method, inputs)
    wall: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(repeats):
        for method in methods:
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            forward_backward(method, inputs)
            wall[method].append(time.perf_counter() - wall_start)
            cpu[method].append(time.process_time() - cpu_start)
    return {m: {"time_s": round(statistics.median(wall[m]), 4),
                "cpu_s": round(statistics.median(cpu[m]), 4)} for m in methods}


def measure(shape: tuple, methods: list[str], repeats: int) -> dict[str, dict[str, float]]:
    """Time and peak memory per method. Memory subprocesses run first: a spawned child starts
    with the parent's resident set as its maximum, so the parent must still be small then."""
    peaks = {m: peak_memory_bytes(functools.partial(warmed_inputs, shape, m),
                                  functools.partial(forward_backward, m)) for m in methods}
    results = timings(shape, methods, repeats)
    for method in methods:
        results[method]["peak_bytes"] = peaks[method]
    return results


def cases_for(shape: tuple, results: dict[str, dict[str, float]]) -> list[dict]:
    label = "cpu N={} V={} d={} float32".format(*shape)
    fused_ce = results["fused_ce"]
    out = []
    for baseline in BASELINES:
        if baseline not in results:
            continue
        targets = {} if baseline == "cce" else {"time_s": 1.0, "peak_bytes": 1.0}
        out.append(case(f"{label}: fused CE vs {baseline}", baseline=results[baseline],
                        ours=fused_ce, baseline_name=NAMES[baseline], ours_name=NAMES["fused_ce"],
                        targets=targets))
    for method, bound in (("fused_emo", 1.3), ("fused_emo_mle_adaptive", 1.3),
                          ("fused_tailr", 1.1)):
        out.append(case(f"{label}: {method} vs fused CE", baseline=fused_ce,
                        ours=results[method], baseline_name=NAMES["fused_ce"],
                        ours_name=NAMES[method], targets={"time_s": bound}))
    out.append(case(f"{label}: mixture memory vs EMO alone",
                    baseline={"peak_bytes": results["fused_emo"]["peak_bytes"]},
                    ours={"peak_bytes": results["fused_emo_mle_adaptive"]["peak_bytes"]},
                    baseline_name=NAMES["fused_emo"], ours_name=NAMES["fused_emo_mle_adaptive"],
                    targets={"peak_bytes": 1.01}))
    return out


def main() -> None:
    quick = quick_flag()
    shapes = QUICK_SHAPES if quick else SHAPES
    repeats = 3
    methods = available_methods()
    cases, raw = [], {}
    for shape in shapes:
        results = measure(shape, methods, repeats)
        raw["N={} V={} d={}".format(*shape)] = results
        print(json.dumps({"shape": shape, "measurements": results}), file=sys.stderr, flush=True)
        cases += cases_for(shape, results)
    emit("losses", config={"shapes (N, V, d), float32 CPU": shapes, "repeats": repeats,
                           "methods": {m: NAMES[m] for m in methods}, "tailr": TAILR,
                           "time": "median of interleaved rounds after one warm-up call; "
                                   "time_s wall-clock, cpu_s process CPU time",
                           "measurements": raw}, cases=cases, table=True)


if __name__ == "__main__":
    main()
