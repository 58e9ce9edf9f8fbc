"""Optimizer step time: logitkit Tiger/Lion vs torch AdamW (foreach), lion-pytorch and
pytorch_optimizer; a lazy sparse step on a large embedding vs the dense step; a lazy step on a fully
dense gradient (the tied case) vs the dense step; and the saturation monitor's time and memory.

Step time only (gradients are fixed tensors set once; no forward/backward). Every optimizer steps
the same parameter list with its own state; steps are timed round-robin. The cases run on ONE
intra-op thread (``config.threads``): the machine these numbers come from is shared, and many
small parallel regions make multi-threaded timings swing by 10x there; one extra case repeats
Tiger vs AdamW with the default thread count. Targets from the issue: Tiger step <= 0.6x AdamW
(foreach) time; lazy step with a sparse gradient touching 2k rows of a 256k x 1024 embedding
>= 20x faster than the dense (non-lazy) step; lazy step on a gradient with every row non-zero
<= 1.1x the dense step; ``find_saturated_rows`` on 65536 x 1024 float32 with at most 10% of the
matrix's size as extra memory (reported against the float64 whole-matrix formula of round 1, and
against the matrix itself).

``--quick`` (d_model 256 x 6 layers; a 32768 x 256 embedding, 2048 rows touched; a 16384 x 1024
scan) tests every target but the lazy sparse step's 20x: a dense step over only 16x the touched
rows cannot be 20x slower than the lazy one. The table (stderr) marks that one "not testable at
--quick size"; the JSON lists it under ``not_testable``. (The scan's 10% is tested on the 4x
smaller matrix: its fixed working memory weighs more there, so it is a harder test.)
"""

from __future__ import annotations

import gc
import importlib.util
import statistics
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from logitkit.benchmarks.harness import case, emit, peak_memory_bytes, quick_flag, time_call
from logitkit.optim import Lion, SaturationMonitor, Tiger, find_saturated_rows


def transformer_like(d_model: int, layers: int, seed: int = 0) -> list[nn.Parameter]:
    """Parameters of ``layers`` pre-norm blocks (qkv, proj, 4x MLP, norms, biases), with grads."""
    generator = torch.Generator().manual_seed(seed)
    shapes = []
    for _ in range(layers):
        shapes += [(3 * d_model, d_model), (3 * d_model,), (d_model, d_model), (d_model,),
                   (4 * d_model, d_model), (4 * d_model,), (d_model, 4 * d_model), (d_model,),
                   (d_model,), (d_model,), (d_model,), (d_model,)]
    params = []
    for shape in shapes:
        param = nn.Parameter(torch.randn(shape, generator=generator) * 0.02)
        param.grad = torch.randn(shape, generator=generator)
        params.append(param)
    return params


def interleaved_step_times(steps: dict[str, torch.optim.Optimizer | Callable[[], None]],
                           repeats: int) -> dict[str, float]:
    """Median time of each optimizer's step (or step function), timed round-robin (one call each
    per round) so that load from other processes hits all of them alike."""
    calls = {name: getattr(step, "step", step) for name, step in steps.items()}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()  # warm-up: creates the state
    for _ in range(repeats):
        for name, call in calls.items():
            samples[name].append(time_call(call, repeats=1, warmup=0))
    return {name: statistics.median(values) for name, values in samples.items()}


def multithread_case(params: list[nn.Parameter], threads: int, repeats: int) -> dict:
    """Tiger vs AdamW (foreach) on ``threads`` intra-op threads (Tiger takes whole tensors)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = interleaved_step_times({
            "adamw_foreach": torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, foreach=True),
            "tiger": Tiger(params, lr=1e-3, weight_decay=0.01)}, repeats)
    finally:
        torch.set_num_threads(before)
    return case(f"tiger_vs_adamw_foreach_{threads}_threads",
                baseline={"time_s": times["adamw_foreach"]}, ours={"time_s": times["tiger"]},
                baseline_name="torch.optim.AdamW(foreach=True)", ours_name="logitkit.Tiger")


def dense_optimizer_cases(params: list[nn.Parameter], repeats: int) -> list[dict]:
    optimizers = {
        "adamw_foreach": torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, foreach=True),
        "tiger": Tiger(params, lr=1e-3, weight_decay=0.01),
        "tiger_foreach": Tiger(params, lr=1e-3, weight_decay=0.01, foreach=True),
        "lion": Lion(params, lr=1e-4, weight_decay=0.01),
    }
    if importlib.util.find_spec("lion_pytorch"):
        from lion_pytorch import Lion as LionPytorch

        optimizers["lion_pytorch"] = LionPytorch(params, lr=1e-4, weight_decay=0.01)
    if importlib.util.find_spec("pytorch_optimizer"):
        import pytorch_optimizer

        optimizers["pytorch_optimizer_tiger"] = pytorch_optimizer.Tiger(params, lr=1e-3,
                                                                        weight_decay=0.01)
        optimizers["pytorch_optimizer_lion"] = pytorch_optimizer.Lion(params, lr=1e-4,
                                                                      weight_decay=0.01)
    times = interleaved_step_times(optimizers, repeats)
    cases = [case("tiger_vs_adamw_foreach", baseline={"time_s": times["adamw_foreach"]},
                  ours={"time_s": times["tiger"]}, targets={"time_s": 0.6},
                  baseline_name="torch.optim.AdamW(foreach=True)", ours_name="logitkit.Tiger"),
             case("tiger_foreach_vs_adamw_foreach", baseline={"time_s": times["adamw_foreach"]},
                  ours={"time_s": times["tiger_foreach"]},
                  baseline_name="torch.optim.AdamW(foreach=True)",
                  ours_name="logitkit.Tiger(foreach=True)")]
    for name, ours, label in [("lion_pytorch", "lion", "lion_pytorch.Lion"),
                              ("pytorch_optimizer_tiger", "tiger", "pytorch_optimizer.Tiger"),
                              ("pytorch_optimizer_lion", "lion", "pytorch_optimizer.Lion")]:
        if name in times:
            cases.append(case(f"{ours}_vs_{name}", baseline={"time_s": times[name]},
                              ours={"time_s": times[ours]}, baseline_name=label,
                              ours_name=f"logitkit.{ours.title()}"))
    return cases


def lazy_embedding_case(rows: int, width: int, touched: int, repeats: int,
                        not_testable: str | None = None) -> dict:
    generator = torch.Generator().manual_seed(1)
    weight = nn.Parameter(torch.randn(rows, width, generator=generator) * 0.02)
    ids = torch.randperm(rows, generator=generator)[:touched]
    values = torch.randn(touched, width, generator=generator)
    sparse = torch.sparse_coo_tensor(ids[None], values, (rows, width), check_invariants=True)

    dense_grad = sparse.to_dense()
    dense, lazy = Tiger([weight], lr=1e-3), Tiger([weight], lr=1e-3, lazy=True)

    def stepper(optimizer: Tiger, grad: torch.Tensor) -> Callable[[], None]:
        def step() -> None:
            weight.grad = grad  # both optimizers share the weight; each keeps its own momentum
            optimizer.step()
        return step

    times = interleaved_step_times({"dense": stepper(dense, dense_grad),
                                    "lazy": stepper(lazy, sparse)}, repeats)
    dense_time, lazy_time = times["dense"], times["lazy"]
    return case("lazy_sparse_vs_dense_step", baseline={"time_s": dense_time},
                ours={"time_s": lazy_time}, targets={"min_speedup": 20.0},
                baseline_name=f"Tiger dense step, {rows}x{width}",
                ours_name=f"Tiger(lazy=True), sparse grad on {touched} rows",
                not_testable=not_testable)


def lazy_on_dense_case(rows: int, width: int, repeats: int) -> dict:
    """Lazy vs dense Tiger step when every gradient row is non-zero (a tied embedding): the lazy
    step must find that out cheaply and take the dense path."""
    generator = torch.Generator().manual_seed(2)
    weight = nn.Parameter(torch.randn(rows, width, generator=generator) * 0.02)
    grad = torch.randn(rows, width, generator=generator)
    dense, lazy = Tiger([weight], lr=1e-3), Tiger([weight], lr=1e-3, lazy=True)

    def stepper(optimizer: Tiger) -> Callable[[], None]:
        def step() -> None:
            weight.grad = grad
            optimizer.step()
        return step

    times = interleaved_step_times({"dense": stepper(dense), "lazy": stepper(lazy)}, repeats)
    return case("lazy_dense_gradient_vs_dense_step", baseline={"time_s": times["dense"]},
                ours={"time_s": times["lazy"]}, targets={"time_s": 1.1},
                baseline_name=f"Tiger dense step, {rows}x{width}",
                ours_name="Tiger(lazy=True), every gradient row non-zero")


def float64_saturated_rows(weight: torch.Tensor, weight_decay: float, tolerance: float = 0.05,
                           fraction: float = 0.5) -> torch.Tensor:
    """Round 1's formula: the whole matrix at once, in float64 (the baseline)."""
    values = weight.reshape(weight.shape[0], -1)
    boundary = 1.0 / weight_decay
    near = (values.abs().double() - boundary).abs() <= tolerance * boundary
    return (near.double().mean(dim=1) >= fraction).nonzero().squeeze(1)


def piled_matrix(rows: int, width: int) -> torch.Tensor:
    """A random matrix whose first eighth of rows sits at +-100 (wd 0.01)."""
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(rows, width, generator=generator)
    weight[: rows // 8] = torch.randint(0, 2, (rows // 8, width), generator=generator) * 200.0 - 100
    return weight


def _scan_ours(weight: torch.Tensor) -> torch.Tensor:
    return find_saturated_rows(weight, 0.01)


def _scan_float64(weight: torch.Tensor) -> torch.Tensor:
    return float64_saturated_rows(weight, 0.01)


def monitor_cases(rows: int, width: int, repeats: int) -> list[dict]:
    setup = partial(piled_matrix, rows, width)
    weight = setup()
    found = _scan_ours(weight)
    if not torch.equal(found, _scan_float64(weight)):
        raise AssertionError("find_saturated_rows disagrees with the float64 formula")
    times = interleaved_step_times({"float64": partial(_scan_float64, weight),
                                    "ours": partial(_scan_ours, weight)}, repeats)
    memory = {name: peak_memory_bytes(setup, run)
              for name, run in (("float64", _scan_float64), ("ours", _scan_ours))}
    matrix_bytes = weight.numel() * weight.element_size()
    cases = [
        case("find_saturated_rows_vs_float64", baseline={"time_s": times["float64"],
                                                         "memory_bytes": memory["float64"]},
             ours={"time_s": times["ours"], "memory_bytes": memory["ours"]},
             baseline_name=f"float64 whole-matrix formula, {rows}x{width} float32",
             ours_name="find_saturated_rows (float32 blocks)"),
        case("find_saturated_rows_extra_memory_vs_matrix", baseline={"memory_bytes": matrix_bytes},
             ours={"memory_bytes": memory["ours"]}, targets={"memory_bytes": 0.10},
             baseline_name=f"the {rows}x{width} float32 matrix itself",
             ours_name="find_saturated_rows peak extra memory"),
    ]
    parameter = nn.Parameter(weight)
    parameter.grad = torch.zeros_like(weight)
    parameter.grad[rows // 2 :] = 1.0
    optimizer = Tiger([parameter], lr=1e-3)
    monitor = SaturationMonitor({"embed": parameter}, 0.01, every=10**9)
    times = interleaved_step_times({"step": optimizer.step, "track": monitor.step}, repeats)
    cases.append(case("monitor_drift_tracking_vs_tiger_step", baseline={"time_s": times["step"]},
                      ours={"time_s": times["track"]},
                      baseline_name=f"Tiger dense step, {rows}x{width}",
                      ours_name="SaturationMonitor.step (drift tracking, every call)"))
    return cases


def main() -> None:
    quick = quick_flag()
    dense = {"d_model": 256, "layers": 6} if quick else {"d_model": 1024, "layers": 4}
    embedding = ({"rows": 32_768, "width": 256, "touched": 2048} if quick
                 else {"rows": 262_144, "width": 1024, "touched": 2048})
    tied = {"rows": 32_768, "width": 256} if quick else {"rows": 65_536, "width": 1024}
    scan = {"rows": 16_384, "width": 1024} if quick else {"rows": 65_536, "width": 1024}
    repeats = 7
    default_threads = torch.get_num_threads()
    params = transformer_like(dense["d_model"], dense["layers"])
    torch.set_num_threads(1)
    cases = dense_optimizer_cases(params, repeats)
    if default_threads > 1:
        cases.append(multithread_case(params, default_threads, repeats))
    sizes = {"dense_params": sum(p.numel() for p in params), "dense_tensors": len(params)}
    del params
    gc.collect()
    cases.append(lazy_embedding_case(
        embedding["rows"], embedding["width"], embedding["touched"], repeats,
        not_testable=("the 20x target is for 2048 touched rows of a 262144 x 1024 embedding; "
                      f"--quick's dense step covers {embedding['rows']} rows, only "
                      f"{embedding['rows'] // embedding['touched']}x the touched ones, so it "
                      "cannot be 20x slower") if quick else None))
    gc.collect()
    cases.append(lazy_on_dense_case(tied["rows"], tied["width"], repeats))
    gc.collect()
    cases += monitor_cases(scan["rows"], scan["width"], repeats=3)
    emit("optim", config={"quick": quick, **dense, **sizes, "embedding": embedding,
                          "tied_embedding": tied, "saturation_scan": scan,
                          "repeats": repeats, "threads": 1, "default_threads": default_threads,
                          "device": "cpu"}, cases=cases, table=True)


if __name__ == "__main__":
    main()
