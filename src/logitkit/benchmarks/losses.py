"""Fused linear + loss against its 3-GEMM floor, plain PyTorch, PyTorch's own chunked CE,
cut-cross-entropy and Liger-Kernel.

Each call is one forward + backward of ``loss(hidden @ weight.T, target)`` with gradients for
hidden and weight, on CPU, with ``hidden`` and ``weight`` in float32 and again in bfloat16 (our
losses compute in float32 inside). Methods:

* ``floor``: the three products a fused linear + CE forward/backward cannot avoid, same shapes and
  dtype: ``hidden @ weight.T`` (N x V), ``G @ weight`` and ``G.T @ hidden``, with ``G`` an
  N x V tensor made beforehand (not timed);
* ``torch_ce``: ``F.cross_entropy(hidden @ weight.T, target)`` (the full N x V logits; in
  bfloat16 its softmax is taken on bf16 logits and rounded to bf16: 47x our loss error, measured
  at N=1024 V=16384 d=512 against float64);
* ``torch_ce_float``: bfloat16 only, ``F.cross_entropy((hidden @ weight.T).float(), target)``,
  the float upcast Hugging Face's ``ForCausalLMLoss`` applies (the accuracy of our float32 math);
* ``torch_native``: ``F.linear_cross_entropy(..., options=torch.nn.LinearCrossEntropyOptions())``
  (PyTorch's chunked fused CE, torch >= 2.13; skipped where absent);
* ``cce``: cut-cross-entropy's ``linear_cross_entropy(..., impl="torch_compile")`` (skipped when
  the package is not installed; the ``bench`` extra installs it);
* ``liger``: Liger-Kernel's fused linear CE, listed as skipped: it needs a GPU (Triton);
* ours: ``linear_cross_entropy``, ``linear_emo_loss`` (EMO alone, the fixed mixture
  ``mle_weight=0.5`` and the EMO authors' per-token adaptive mixture; cost embedding = a separate
  V x d matrix in the inputs' dtype), ``linear_tailr_loss`` (the TaiLr authors' form: gamma 0.8,
  weight threshold 0.2).
A peer that raises (e.g. in bfloat16 on CPU) is recorded as skipped with the error text.

Targets: uniform ids, and text-like ids: Zipf over the vocabulary, p(rank k) proportional to
``1 / (k + 2.7) ** 1.1`` for k = 1..V, ranks mapped to ids by a fixed random permutation (seeded).
Real text has 0.26-0.47 distinct target ids per token in a chunk; each case's config reports its
number of distinct targets / N. EMO's extra product depends only on the target id, so few distinct
targets is the case it is tuned for.

Time: one thread (``torch.set_num_threads(1)``; ``--threads N`` to change). Every method is called
once to warm up, then ``repeats`` rounds call each method once in turn (interleaved, so load that
comes and goes hits all methods alike); the median wall-clock time (``time_s``) and the median CPU
time of this process (``cpu_s``, user + sys) are reported. A method whose warm-up call takes over
10x fused CE's and over 3 s (torch's native chunked CE at large V: 10-30 s a call) is not called
again: that call is its one sample (``samples``, ``timed_by`` in the JSON); ``cce`` never is (its
warm-up compiles). Wall-clock ratios are the targets; on a busy machine read the CPU-time ratios,
and rerun on a quiet one.

Peak memory: growth of the peak resident set (``VmHWM``) during the FIRST forward + backward in a
fresh subprocess, after its inputs exist, with no warm-up call; the child starts with
``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc returns freed buffers of 64 KiB and more to the
system instead of keeping them in its heap (where a later peak could hide in them). The first call
includes each method's one-time costs: for ``cce`` that is torch.compile's compilation, which is
counted, not hidden. The floor has no memory figure (its ``G`` is an input). The memory processes
run after the case's timings, two at a time (``--memory-jobs``); each reports its own peak.

Targets (issue 24), in both dtypes and both target kinds: fused CE time <= 1.1x the 3-GEMM floor,
<= 1.0x plain torch CE and <= 1.0x torch's native chunked CE; fused CE peak memory <= every peer's
(torch CE, torch native, cut-cross-entropy); each EMO form (alone, fixed 0.5 mixture, adaptive
mixture) <= 1.25x fused CE time on Zipf targets and <= 1.3x on uniform targets; TaiLr <= 1.1x
fused CE time; each mixture's peak memory = EMO's (ratio <= 1.01). Time against cut-cross-entropy
is reported as a further anchor (no target).
Shapes (N, V, d): (1024, 16384, 512), (128, 65536, 1024), (4096, 32768, 512),
(512, 131072, 1024); ``--quick``: the first two (small N with large V is a hard case). At
``--quick`` the uniform-target cases run only fused CE and the EMO forms (the rest does not read
the target distribution; see the Zipf cases); every other target is tested at --quick too.
Output: a summary per case (ratios, "not met" where a target is missed) and the shared table of
the cases (ratios, targets, met) on stderr, then the JSON object (``emit``) with every number.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from logitkit.benchmarks.harness import case, emit, peak_memory_bytes, quick_flag
from logitkit.losses import linear_cross_entropy, linear_emo_loss, linear_tailr_loss

SHAPES = ((1024, 16384, 512), (128, 65536, 1024), (4096, 32768, 512), (512, 131072, 1024))
QUICK_SHAPES = SHAPES[:2]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TARGET_KINDS = ("zipf", "uniform")
ZIPF = {"offset": 2.7, "exponent": 1.1}
TAILR = {"gamma": 0.8, "threshold": 0.2}
EMO_FIXED_WEIGHT = 0.5
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
SLOW = {"factor": 10.0, "seconds": 3.0}
PEERS = ("torch_ce", "torch_ce_float", "torch_native", "cce", "liger")
FLOAT_UPCAST_ONLY_FOR = "bfloat16"  # in float32 torch_ce_float is torch_ce
EMO_FORMS = ("fused_emo", "fused_emo_mle_fixed", "fused_emo_mle_adaptive")
OURS = ("fused_ce", *EMO_FORMS, "fused_tailr")
COMPILED = ("cce",)  # their warm-up call compiles: never timed from it
NAMES = {
    "floor": "3 GEMMs: hidden @ weight.T, G @ weight, G.T @ hidden",
    "torch_ce": "F.cross_entropy on full logits",
    "torch_ce_float": "F.cross_entropy on full logits upcast to float32 (as HF ForCausalLMLoss)",
    "torch_native": "F.linear_cross_entropy(options=LinearCrossEntropyOptions())",
    "cce": "cut_cross_entropy.linear_cross_entropy(impl='torch_compile')",
    "liger": "liger_kernel LigerFusedLinearCrossEntropyLoss",
    "fused_ce": "logitkit linear_cross_entropy",
    "fused_emo": "logitkit linear_emo_loss (EMO alone)",
    "fused_emo_mle_fixed": f"logitkit linear_emo_loss(mle_weight={EMO_FIXED_WEIGHT})",
    "fused_emo_mle_adaptive": "logitkit linear_emo_loss(mle_weight='adaptive')",
    "fused_tailr": "logitkit linear_tailr_loss(gamma=0.8, threshold=0.2)",
}
SHORT = {"floor": "3-GEMM floor", "torch_ce": "torch CE", "torch_ce_float": "torch CE float",
         "torch_native": "torch native",
         "cce": "CCE torch_compile", "liger": "Liger", "fused_emo": "EMO",
         "fused_emo_mle_fixed": f"EMO+{EMO_FIXED_WEIGHT} MLE", "fused_emo_mle_adaptive":
         "EMO adaptive", "fused_tailr": "TaiLr"}


def peer_skips() -> dict[str, str]:
    """Why each peer that cannot run here is skipped (peers absent from the dict run)."""
    skips = {}
    if not (hasattr(F, "linear_cross_entropy") and hasattr(torch.nn, "LinearCrossEntropyOptions")):
        skips["torch_native"] = (f"skipped: needs torch >= 2.13 (F.linear_cross_entropy), this is "
                                 f"torch {torch.__version__}")
    try:
        import cut_cross_entropy  # noqa: F401
    except ImportError as error:
        skips["cce"] = f"skipped: cut_cross_entropy not installed ({error})"
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        skips["liger"] = "skipped: needs a GPU (Triton); liger_kernel is not installed either"
    else:
        skips["liger"] = "skipped: needs a GPU (Triton); this benchmark runs on CPU"
    return skips


def available_methods() -> list[str]:
    skips = peer_skips()
    return ["floor", *(peer for peer in PEERS if peer not in skips), *OURS]


def make_targets(n: int, vocab: int, kind: str) -> torch.Tensor:
    """``n`` target ids: uniform, or Zipf ranks (see the module docstring) through a fixed
    random permutation of the vocabulary; seeded, so every method and process sees the same."""
    gen = torch.Generator().manual_seed(1)
    if kind == "uniform":
        return torch.randint(0, vocab, (n,), generator=gen)
    if kind != "zipf":
        raise ValueError(kind)
    ranks = torch.arange(1, vocab + 1, dtype=torch.float64)
    probabilities = (ranks + ZIPF["offset"]).pow(-ZIPF["exponent"])
    permutation = torch.randperm(vocab, generator=gen)
    return permutation[torch.multinomial(probabilities, n, replacement=True, generator=gen)]


def make_inputs(n: int, vocab: int, width: int, dtype: str = "float32", targets: str = "uniform",
                *, floor: bool = True) -> dict:
    """The inputs of every method; ``floor``: also the N x V gradient ``G`` of the floor."""
    gen = torch.Generator().manual_seed(0)
    kind = DTYPES[dtype]
    inputs = {
        "hidden": torch.randn(n, width, generator=gen).div_(width**0.5).to(kind).requires_grad_(),
        "weight": torch.randn(vocab, width, generator=gen).to(kind).requires_grad_(),
        "embedding": torch.randn(vocab, width, generator=gen).to(kind),
        "target": make_targets(n, vocab, targets),
    }
    if floor:
        inputs["grad_logits"] = torch.randn(n, vocab, generator=gen).div_(n).to(kind)
    return inputs


def loss_of(method: str, inputs: dict) -> torch.Tensor:
    hidden, weight, target = inputs["hidden"], inputs["weight"], inputs["target"]
    if method == "torch_ce":
        return F.cross_entropy(hidden @ weight.T, target)
    if method == "torch_ce_float":
        return F.cross_entropy((hidden @ weight.T).float(), target)
    if method == "torch_native":
        return F.linear_cross_entropy(hidden, weight, target,
                                      options=torch.nn.LinearCrossEntropyOptions())
    if method == "cce":
        from cut_cross_entropy import linear_cross_entropy as cce_loss

        return cce_loss(hidden, weight, target, impl="torch_compile")
    if method == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        return LigerFusedLinearCrossEntropyLoss()(weight, hidden, target)
    if method == "fused_ce":
        return linear_cross_entropy(hidden, weight, target)
    if method == "fused_emo":
        return linear_emo_loss(hidden, weight, target, inputs["embedding"])
    if method == "fused_emo_mle_fixed":
        return linear_emo_loss(hidden, weight, target, inputs["embedding"],
                               mle_weight=EMO_FIXED_WEIGHT)
    if method == "fused_emo_mle_adaptive":
        return linear_emo_loss(hidden, weight, target, inputs["embedding"], mle_weight="adaptive")
    if method == "fused_tailr":
        return linear_tailr_loss(hidden, weight, target, **TAILR)
    raise ValueError(method)


def floor_products(inputs: dict) -> None:
    """The 3 GEMMs: logits, grad_hidden and grad_weight of a linear + CE forward/backward."""
    hidden, weight = inputs["hidden"].detach(), inputs["weight"].detach()
    grad = inputs["grad_logits"]
    logits = hidden @ weight.T  # noqa: F841
    grad_hidden = grad @ weight  # noqa: F841
    grad_weight = grad.T @ hidden  # noqa: F841


def forward_backward(method: str, inputs: dict) -> None:
    if method == "floor":
        floor_products(inputs)
        return
    inputs["hidden"].grad = inputs["weight"].grad = None
    loss_of(method, inputs).backward()
    inputs["hidden"].grad = inputs["weight"].grad = None


def fresh_inputs(config: tuple, method: str, threads: int) -> dict:
    """Inputs for ``method`` in a fresh process, without a warm-up call; the peer's package is
    imported here so that its import is not counted as the call's memory."""
    torch.set_num_threads(threads)
    if method == "cce":
        import cut_cross_entropy  # noqa: F401
    return make_inputs(*config, floor=False)


def _error_text(error: BaseException) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return f"skipped: {text[:300]}"


def timings(inputs: dict, methods: list[str], repeats: int) -> dict[str, dict]:
    """Median wall-clock and CPU seconds per method, from interleaved rounds after one warm-up
    call each; a method that raises is recorded as ``{"skipped": error}``."""
    results: dict[str, dict] = {}
    warm: dict[str, tuple[float, float]] = {}  # wall-clock and CPU seconds of the warm-up
    for method in methods:
        cpu_start, start = time.process_time(), time.perf_counter()
        try:
            forward_backward(method, inputs)
        except Exception as error:  # a peer that fails (e.g. bf16 on CPU) is skipped, not fatal
            results[method] = {"skipped": _error_text(error)}
            inputs["hidden"].grad = inputs["weight"].grad = None
            continue
        warm[method] = (time.perf_counter() - start, time.process_time() - cpu_start)
    reference = warm.get("fused_ce")
    slow = [method for method, (seconds, _) in warm.items()
            if method not in COMPILED and reference is not None
            and seconds > max(SLOW["factor"] * reference[0], SLOW["seconds"])]
    wall = {m: [seconds] if m in slow else [] for m, (seconds, _) in warm.items()}
    cpu = {m: [seconds] if m in slow else [] for m, (_, seconds) in warm.items()}
    for _ in range(repeats):
        for method in warm:
            if method in slow:
                continue
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            forward_backward(method, inputs)
            wall[method].append(time.perf_counter() - wall_start)
            cpu[method].append(time.process_time() - cpu_start)
    for method, (seconds, _) in warm.items():
        results[method] = {"time_s": round(statistics.median(wall[method]), 4),
                           "cpu_s": round(statistics.median(cpu[method]), 4),
                           "warmup_s": round(seconds, 4), "samples": len(wall[method]),
                           **({"timed_by": "its warm-up call (slow)"} if method in slow else {})}
    return results


def first_call_peak(config: tuple, method: str, threads: int) -> int | str:
    """Peak RSS growth of the first call in a fresh process (bytes), or why it failed."""
    try:
        return peak_memory_bytes(functools.partial(fresh_inputs, config, method, threads),
                                 functools.partial(forward_backward, method), env=MALLOC_ENV)
    except RuntimeError as error:
        return _error_text(error)


def methods_for(targets: str, dtype: str, methods: list[str], quick: bool) -> list[str]:
    if quick and targets == "uniform":
        return [m for m in methods if m == "fused_ce" or m in EMO_FORMS]
    return [m for m in methods if m != "torch_ce_float" or dtype == FLOAT_UPCAST_ONLY_FOR]


def measure(config: tuple, methods: list[str], repeats: int, *, threads: int = 1,
            memory: bool = True, memory_jobs: int = 2) -> dict[str, dict]:
    """Time, then (``memory``) first-call peak memory in fresh processes, per method, up to
    ``memory_jobs`` processes at once (each process's own peak: they do not see each other)."""
    inputs = make_inputs(*config, floor="floor" in methods)
    results = timings(inputs, methods, repeats)
    del inputs
    if memory:
        jobs = sorted((m for m in methods if m != "floor" and "skipped" not in results[m]),
                      key=lambda m: -results[m]["warmup_s"])  # the slowest first
        with ThreadPoolExecutor(max_workers=memory_jobs) as pool:
            peaks = pool.map(functools.partial(first_call_peak, config, threads=threads), jobs)
            for method, peak in zip(jobs, peaks, strict=True):
                if isinstance(peak, str):
                    results[method]["peak_skipped"] = peak
                else:
                    results[method]["peak_bytes"] = peak
    return results


def distinct_per_token(n: int, vocab: int, targets: str) -> float:
    return round(make_targets(n, vocab, targets).unique().numel() / n, 4)


def label_of(config: tuple) -> str:
    n, vocab, width, dtype, targets = config
    return f"N={n} V={vocab} d={width} {dtype} {targets}"


def _figures(result: dict, keys: tuple = ("time_s", "cpu_s", "peak_bytes")) -> dict:
    return {key: result[key] for key in keys if key in result}


def cases_for(config: tuple, results: dict[str, dict], skips: dict[str, str]) -> list[dict]:
    """The harness cases of one (shape, dtype, targets) configuration. Each carries ``row`` (its
    configuration) and ``column`` (its column in ``summary_table``)."""
    label = label_of(config)
    targets = config[4]
    distinct = distinct_per_token(config[0], config[1], targets)
    row = f"{label} ({distinct:.3g} distinct ids/token)"
    settings = dict(zip(("N", "V", "d", "dtype", "targets"), config, strict=True))
    settings["distinct_targets_per_token"] = distinct
    out = []

    def add(column: str, result: dict) -> None:
        out.append({**result, "row": row, "column": column, "config": settings})

    fused_ce = results.get("fused_ce", {})
    if "time_s" not in fused_ce:  # nothing to compare with: say so
        reason = fused_ce.get("skipped", "skipped: not run")
        add("floor", {**case(f"{label}: fused CE ({reason})", baseline={}, ours={}),
                      "skipped": reason})
        return out
    if "floor" in results:
        add("floor", case(f"{label}: fused CE vs 3-GEMM floor",
                          baseline=_figures(results["floor"], ("time_s", "cpu_s")),
                          ours=_figures(fused_ce, ("time_s", "cpu_s")),
                          baseline_name=NAMES["floor"], ours_name=NAMES["fused_ce"],
                          targets={"time_s": 1.1}))
    peers_ran = any(peer in results for peer in PEERS)
    for peer in PEERS:
        name = f"{label}: fused CE vs {peer}"
        skipped = skips.get(peer) or results.get(peer, {}).get("skipped")
        if not peers_ran or (peer not in results and peer not in skips):
            continue  # not run in this configuration (--quick uniform targets)
        if skipped:
            add(peer, {**case(f"{name} ({skipped})", baseline={}, ours={},
                              baseline_name=NAMES[peer], ours_name=NAMES["fused_ce"]),
                       "skipped": skipped})
            continue
        bounds = {"peak_bytes": 1.0} if peer == "cce" else {"time_s": 1.0, "peak_bytes": 1.0}
        result = case(name, baseline=_figures(results[peer]), ours=_figures(fused_ce),
                      baseline_name=NAMES[peer], ours_name=NAMES["fused_ce"], targets=bounds)
        for side, figures in (("baseline", results[peer]), ("ours", fused_ce)):
            if "peak_skipped" in figures:
                result.setdefault("peak_skipped", {})[side] = figures["peak_skipped"]
        add(peer, result)
    emo_bound = 1.25 if targets == "zipf" else 1.3
    for method, bound in (*((form, emo_bound) for form in EMO_FORMS), ("fused_tailr", 1.1)):
        if method not in results:
            continue
        if "skipped" in results[method]:
            add(method, {**case(f"{label}: {method} vs fused CE ({results[method]['skipped']})",
                                baseline={}, ours={}), "skipped": results[method]["skipped"]})
            continue
        suffix = " (uniform targets)" if method in EMO_FORMS and targets == "uniform" else ""
        add(method, case(f"{label}: {method} vs fused CE{suffix}",
                         baseline=_figures(fused_ce, ("time_s", "cpu_s")),
                         ours=_figures(results[method], ("time_s", "cpu_s")),
                         baseline_name=NAMES["fused_ce"], ours_name=NAMES[method],
                         targets={"time_s": bound}))
    emo = results.get("fused_emo", {})
    for mixture in EMO_FORMS[1:]:
        if "peak_bytes" in emo and "peak_bytes" in results.get(mixture, {}):
            add(f"{mixture}_memory", case(
                f"{label}: {mixture} memory vs EMO alone",
                baseline={"peak_bytes": emo["peak_bytes"]},
                ours={"peak_bytes": results[mixture]["peak_bytes"]},
                baseline_name=NAMES["fused_emo"], ours_name=NAMES[mixture],
                targets={"peak_bytes": 1.01}))
    return out


def _cell(result: dict | None, metric: str) -> str:
    """``"0.93x"``, with ``" (<= 1x NOT MET)"`` where a target is missed, or why it is empty."""
    if result is None:
        return "not run"
    if "skipped" in result:
        return "skipped"
    value = result["ratio"].get(metric)
    if value is None or not math.isfinite(value):
        return "no figure"
    text = f"{value:.3f}x" if value < 10 else f"{value:.3g}x"
    if metric in result["met"]:
        text += " ok" if result["met"][metric] else f" NOT MET (<= {result['targets'][metric]:g}x)"
    return text


def summary_table(cases: list[dict]) -> str:
    """One row per (shape, dtype, targets): fused CE time against the floor and each peer, each
    EMO form's and TaiLr's time over fused CE's, then fused CE's peak memory over each peer's."""
    rows = list(dict.fromkeys(c["row"] for c in cases if "row" in c))
    by = {(c["row"], c["column"]): c for c in cases if "row" in c}
    time_columns = ("floor", *PEERS, *EMO_FORMS, "fused_tailr")
    header = ["shape (N, V, d), dtype, targets",
              *(f"fused CE / {SHORT[c]}" if c in ("floor", *PEERS) else f"{SHORT[c]} / fused CE"
                for c in time_columns),
              "fused CE memory / peer's", "mixture memory / EMO's"]
    lines = []
    skipped_notes: dict[str, str] = {}
    for row in rows:
        cells = [row]
        for column in time_columns:
            result = by.get((row, column))
            cells.append(_cell(result, "time_s"))
            if result is not None and "skipped" in result:
                skipped_notes[SHORT[column]] = result["skipped"]
        memory = []
        for peer in PEERS:
            result = by.get((row, peer))
            if result is not None and "skipped" not in result:
                memory.append(f"{SHORT[peer]} {_cell(result, 'peak_bytes')}")
        mixtures = [f"{SHORT[m]} {_cell(by[(row, f'{m}_memory')], 'peak_bytes')}"
                    for m in EMO_FORMS[1:] if (row, f"{m}_memory") in by]
        cells += ["; ".join(memory) or "-", "; ".join(mixtures) or "-"]
        lines.append(cells)
    widths = [max(len(r[i]) for r in (header, *lines)) for i in range(len(header))]
    text = ["time ratios (wall clock, median) and first-call peak-memory ratios; lower is better"]
    for r in (header, ["-" * w for w in widths], *lines):
        text.append(" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    text += [f"{name}: {reason}" for name, reason in skipped_notes.items()]
    text.append("CCE's memory includes torch.compile's compilation (its first call compiles); "
                "its time is after a warm-up call")
    return "\n".join(text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the two smaller shapes")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for every timing and memory call (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--memory-jobs", type=int, default=2,
                        help="memory subprocesses run at once, after the timings (default 2)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    quick = args.quick or quick_flag()
    torch.set_num_threads(args.threads)
    shapes = QUICK_SHAPES if quick else SHAPES
    skips = peer_skips()
    methods = available_methods()
    cases, raw, distinct = [], {}, {}
    start = time.perf_counter()
    for shape in shapes:
        for targets in TARGET_KINDS:
            distinct[f"N={shape[0]} V={shape[1]} {targets}"] = distinct_per_token(
                shape[0], shape[1], targets)
            for dtype in DTYPES:
                config = (*shape, dtype, targets)
                results = measure(config, methods_for(targets, dtype, methods, quick),
                                  args.repeats,
                                  threads=args.threads, memory_jobs=args.memory_jobs)
                raw[label_of(config)] = results
                print(json.dumps({"case": label_of(config), "measurements": results}),
                      file=sys.stderr, flush=True)
                cases += cases_for(config, results, skips)
    print("\n" + summary_table(cases), file=sys.stderr, flush=True)
    emit("losses", config={
        "shapes (N, V, d), CPU": shapes, "dtypes": list(DTYPES), "targets": list(TARGET_KINDS),
        "zipf": {**ZIPF, "p(rank k)": "1 / (k + offset) ** exponent, k = 1..V, ranks -> a seeded "
                                      "random permutation of ids"},
        "distinct targets / N": distinct, "threads": args.threads, "repeats": args.repeats,
        "methods": {m: NAMES[m] for m in methods}, "skipped peers": skips, "tailr": TAILR,
        "emo fixed mle_weight": EMO_FIXED_WEIGHT,
        "quick uniform targets": "fused CE and the EMO forms only" if quick else None,
        "time": f"{args.threads} thread(s); median of interleaved rounds after one warm-up call; "
                f"time_s wall-clock, cpu_s process CPU time; a method whose warm-up takes over "
                f"{SLOW['factor']:g}x fused CE's and over {SLOW['seconds']:g} s is timed by that "
                f"call alone",
        "memory_jobs": args.memory_jobs,
        "memory": "peak RSS growth of the first forward + backward in a fresh process, after "
                  "the inputs exist, no warm-up; child env " + json.dumps(MALLOC_ENV) + "; cce's "
                  "includes its torch.compile compilation",
        "seconds": round(time.perf_counter() - start, 1),
        "measurements": raw}, cases=cases, table=True, quick=quick)


if __name__ == "__main__":
    main()
