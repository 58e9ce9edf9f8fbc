"""cosent_loss vs sentence-transformers' CoSENTLoss math, one forward + backward on N pair scores.

Baseline: ``sentence_transformers.sentence_transformer.losses.CoSENTLoss`` with an identity
similarity, so both sides see the same precomputed scores and only the loss math is timed
(sort by label + logcumsumexp there too). Both are O(N log N) time and O(N) memory; logitkit's
``cosent_loss`` also validates its inputs (finite scores and labels), which the baseline does not.

Cases: float32 at N = 12288 (the batch size of issue 14) with STS-B-like labels (26 values,
many ties): time (median over 5 interleaved rounds of the median of 21 calls) and peak extra
memory (fresh subprocess); bfloat16 scores:
the relative error of the gradient against a float64 evaluation of the same rounded scores.
Targets: time and peak memory <= 1.5x the baseline; bf16 gradient error <= 2x the baseline's.
``--quick``: N = 4096 (the targets are ratios of two O(N log N) computations, tested at that size
too). Output: a table of the cases (ratios, targets, met) on stderr, then the JSON object.
"""

from __future__ import annotations

import functools
import statistics

import torch
from sentence_transformers.sentence_transformer.losses import CoSENTLoss

from logitkit.benchmarks.harness import case, emit, peak_memory_bytes, quick_flag, time_call
from logitkit.matching import cosent_loss

SCALE = 20.0


def make_inputs(n: int, dtype_name: str) -> dict:
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 26, (n,), generator=gen).double() / 5  # STS-B steps of 0.2
    dtype = getattr(torch, dtype_name)
    return {"scores": scores.to(dtype).requires_grad_(), "labels": labels.to(dtype)}


def _identity(first: torch.Tensor, _second: torch.Tensor) -> torch.Tensor:
    return first


def baseline_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    loss = CoSENTLoss(model=None, scale=SCALE, similarity_fct=_identity)
    return loss.compute_loss_from_embeddings([scores, scores], labels)


def ours_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return cosent_loss(scores, labels, scale=SCALE)


LOSSES = {"baseline": baseline_loss, "ours": ours_loss}


def forward_backward(which: str, inputs: dict) -> None:
    inputs["scores"].grad = None
    LOSSES[which](inputs["scores"], inputs["labels"]).backward()


def gradient_error(which: str, inputs: dict) -> float:
    """max |g - g64| / max |g64|, g64 the float64 gradient on the same (rounded) scores."""
    forward_backward(which, inputs)
    rounded = inputs["scores"].detach().double().requires_grad_()
    ours_loss(rounded, inputs["labels"].double()).backward()
    error = (inputs["scores"].grad.double() - rounded.grad).abs().max()
    return float(error / rounded.grad.abs().max())


def main() -> None:
    n = 4096 if quick_flag() else 12288
    repeats, rounds = 21, 5  # calls take milliseconds: many repeats, rounds interleaved
    setup = functools.partial(make_inputs, n, "float32")
    runs = {which: functools.partial(forward_backward, which) for which in LOSSES}
    peaks = {which: peak_memory_bytes(setup, runs[which]) for which in LOSSES}
    inputs = setup()
    seconds = {which: [] for which in LOSSES}
    for _ in range(rounds):  # alternating, so that a busy moment hits both sides alike
        for which in LOSSES:
            seconds[which].append(time_call(functools.partial(runs[which], inputs),
                                            repeats=repeats))
    measured = {which: {"time_s": round(statistics.median(seconds[which]), 5),
                        "peak_bytes": peaks[which]} for which in LOSSES}
    half = make_inputs(n, "bfloat16")
    errors = {which: {"bf16_grad_rel_error": gradient_error(which, half)} for which in LOSSES}
    cases = [
        case(f"cpu N={n} float32 forward+backward", baseline=measured["baseline"],
             ours=measured["ours"], baseline_name="sentence-transformers CoSENTLoss math",
             ours_name="logitkit cosent_loss", targets={"time_s": 1.5, "peak_bytes": 1.5}),
        case(f"cpu N={n} bfloat16 scores: gradient error vs float64", baseline=errors["baseline"],
             ours=errors["ours"], baseline_name="sentence-transformers CoSENTLoss math",
             ours_name="logitkit cosent_loss", targets={"bf16_grad_rel_error": 2.0}),
    ]
    emit("matching", config={"n_pairs": n, "labels": "26 values (0, 0.2, ..., 5)",
                             "scale": SCALE, "repeats": repeats, "interleaved_rounds": rounds},
         cases=cases, table=True)


if __name__ == "__main__":
    main()
