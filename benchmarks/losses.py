"""Fused (chunked) linear + loss vs the loss on materialised logits, for CE, EMO and TaiLr.

Each call is one forward + backward of ``loss(hidden @ weight.T, target)`` with gradients for
hidden and weight. Baselines: ``F.cross_entropy`` on full logits (CE), and logitkit's own
``emo_loss`` / ``tailr_loss`` on full logits (EMO, TaiLr). Time: median of repeated calls in this
process. Peak memory: growth in a fresh subprocess while the call runs (inputs already built).

Targets (issue 3): fused peak extra memory <= 10% of unfused; CPU time <= 1.2x unfused; fused
EMO <= 1.5x fused CE time; fused TaiLr <= 1.1x fused CE time.
Shapes: CPU N=8192, V=32768, d=512 float32 (``--quick``: N=2048, V=8192, d=256); on CUDA also
N=8192, V=128256, d=4096 bf16 (only when a GPU is present).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from harness import case, emit, peak_memory_bytes, quick_flag, time_call
from logitkit.losses import (
    emo_loss,
    linear_cross_entropy,
    linear_emo_loss,
    linear_tailr_loss,
    tailr_loss,
)

GAMMA = 0.5


def make_inputs(n: int, vocab: int, width: int, dtype_name: str, device: str) -> dict:
    gen = torch.Generator().manual_seed(0)
    dtype = getattr(torch, dtype_name)
    hidden = torch.randn(n, width, generator=gen).div_(width**0.5)
    weight = torch.randn(vocab, width, generator=gen)
    return {
        "hidden": hidden.to(device=device, dtype=dtype).requires_grad_(),
        "weight": weight.to(device=device, dtype=dtype).requires_grad_(),
        "target": torch.randint(0, vocab, (n,), generator=gen).to(device),
        "embedding": torch.randn(vocab, width, generator=gen).to(device=device, dtype=dtype),
    }


def unfused_loss(name: str, inputs: dict) -> torch.Tensor:
    logits = inputs["hidden"] @ inputs["weight"].T
    if name == "ce":
        return F.cross_entropy(logits.float(), inputs["target"])
    if name == "emo":
        return emo_loss(logits, inputs["target"], inputs["embedding"])
    return tailr_loss(logits, inputs["target"], gamma=GAMMA)


def fused_loss(name: str, inputs: dict, chunk_size: int | None) -> torch.Tensor:
    hidden, weight, target = inputs["hidden"], inputs["weight"], inputs["target"]
    if name == "ce":
        return linear_cross_entropy(hidden, weight, target, chunk_size=chunk_size)
    if name == "emo":
        return linear_emo_loss(hidden, weight, target, inputs["embedding"],
                               chunk_size=chunk_size)
    return linear_tailr_loss(hidden, weight, target, gamma=GAMMA, chunk_size=chunk_size)


def forward_backward(name: str, fused: bool, chunk_size: int | None, inputs: dict) -> None:
    inputs["hidden"].grad = inputs["weight"].grad = None
    loss = fused_loss(name, inputs, chunk_size) if fused else unfused_loss(name, inputs)
    loss.backward()


def measure(shape: tuple, device: str, repeats: int, chunk_size: int | None) -> dict:
    """{(name, fused): {"time_s", "peak_bytes"}} for the three losses, fused and unfused.

    All memory subprocesses run first: a spawned child starts with the parent's resident set as
    its maximum (Linux carries it over fork + exec), so the parent must still be small then.
    """
    setup = functools.partial(make_inputs, *shape, device)
    keys = [(name, fused) for name in ("ce", "emo", "tailr") for fused in (False, True)]
    runs = {key: functools.partial(forward_backward, key[0], key[1], chunk_size) for key in keys}
    peaks = {key: peak_memory_bytes(setup, runs[key], device=device) for key in keys}
    return {key: {"time_s": round(time_call(functools.partial(runs[key], setup()),
                                            device=device, repeats=repeats), 4),
                  "peak_bytes": peaks[key]} for key in keys}


def cases_for(shape: tuple, device: str, repeats: int, chunk_size: int | None) -> list[dict]:
    label = f"{device} N={shape[0]} V={shape[1]} d={shape[2]} {shape[3]}"
    results = measure(shape, device, repeats, chunk_size)
    fused = {name: results[name, True] for name in ("ce", "emo", "tailr")}
    unfused = {name: results[name, False] for name in ("ce", "emo", "tailr")}
    time_target = {"time_s": 1.2} if device == "cpu" else {}
    baseline_names = {"ce": "F.cross_entropy on full logits", "emo": "emo_loss on full logits",
                      "tailr": "tailr_loss on full logits"}
    results = [
        case(f"{label}: {name} fused vs unfused", baseline=unfused[name], ours=fused[name],
             baseline_name=baseline_names[name], ours_name=f"linear_{name} (chunked)",
             targets={"peak_bytes": 0.10, **time_target})
        for name in ("ce", "emo", "tailr")
    ]
    for name, bound in (("emo", 1.5), ("tailr", 1.1)):
        results.append(case(
            f"{label}: fused {name} vs fused CE time",
            baseline={"time_s": fused["ce"]["time_s"]}, ours={"time_s": fused[name]["time_s"]},
            baseline_name="linear_cross_entropy", ours_name=f"linear_{name}",
            targets={"time_s": bound}))
    return results


def main() -> None:
    quick = quick_flag()
    cpu_shape = (2048, 8192, 256, "float32") if quick else (8192, 32768, 512, "float32")
    repeats = 3 if quick else 2
    chunk_size = 256 if quick else None  # quick: so that the small N still spans 8 chunks
    cases = cases_for(cpu_shape, "cpu", repeats, chunk_size)
    gpu_shape = None
    if torch.cuda.is_available():
        gpu_shape = (1024, 32000, 1024, "bfloat16") if quick else (8192, 128256, 4096, "bfloat16")
        cases += cases_for(gpu_shape, "cuda", 5, chunk_size)
    emit("losses", config={"cpu_shape (N, V, d, dtype)": cpu_shape,
                           "gpu_shape (N, V, d, dtype)": gpu_shape, "tailr_gamma": GAMMA,
                           "chunk_size": chunk_size or "default (8M logits per chunk on CPU, "
                                                       "64M on CUDA)",
                           "repeats": repeats}, cases=cases)


if __name__ == "__main__":
    main()
