"""Training runs for the optimizer experiment: a small word-level language model trained with the
released Tiger's rule (and Lion, and Tiger with each remedy), then measured.

One run = one (method, seed, settings): train ``TinyLM`` on the training words, watch the input
embedding with ``SaturationMonitor``, then report the pile-up (entries and rows at +-1/wd, and in
which tokens), the training loss, and the held-out loss by how often each position's input token
was seen in training. Runs are independent and seeded, so they may run in worker processes in any
order; each job carries its own settings, so runs at different learning rates or weight decays
share one pool.
"""

from __future__ import annotations

import ctypes
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from logitkit.experiments._tiny_lm import TinyLM, TinyLMConfig
from logitkit.optim import HalfSwapTiedHead, SaturationMonitor, make_optimizer

# method -> optimizer, embedding treatment, tying of the output layer
METHODS: dict[str, dict[str, str]] = {
    "tiger": {"optimizer": "tiger", "embeddings": "dense", "tie": "none"},
    "lion": {"optimizer": "lion", "embeddings": "dense", "tie": "none"},
    "tiger_lazy": {"optimizer": "tiger", "embeddings": "lazy", "tie": "none"},
    "tiger_tied": {"optimizer": "tiger", "embeddings": "dense", "tie": "plain"},
    "tiger_half_swap_tied": {"optimizer": "tiger", "embeddings": "dense", "tie": "half_swap"},
    "tiger_adamw_embeddings": {"optimizer": "tiger", "embeddings": "adamw", "tie": "none"},
}
SIGN_METHODS = ("tiger", "lion")
REMEDIES = ("tiger_lazy", "tiger_tied", "tiger_half_swap_tied", "tiger_adamw_embeddings")
WORD = re.compile(r"\S+")


@dataclass
class Corpus:
    """Training and held-out word ids over one vocabulary (the ``vocab - 1`` most frequent words
    of both texts, and one id for every other word), and each id's count in training."""

    train: torch.Tensor
    held_out: torch.Tensor
    counts: torch.Tensor
    vocab: int


def build_corpus(train_text: str, held_out_text: str, vocab: int,
                 train_words: int | None = None) -> Corpus:
    """``train_words``: keep only the first that many training words (small runs)."""
    train_words, held_words = WORD.findall(train_text)[:train_words], WORD.findall(held_out_text)
    ranked = [w for w, _ in Counter(train_words + held_words).most_common(vocab - 1)]
    index = {w: i for i, w in enumerate(ranked)}
    train = torch.tensor([index.get(w, vocab - 1) for w in train_words], dtype=torch.long)
    held_out = torch.tensor([index.get(w, vocab - 1) for w in held_words], dtype=torch.long)
    return Corpus(train=train, held_out=held_out, counts=torch.bincount(train, minlength=vocab),
                  vocab=vocab)


def build_model(method: str, cfg: dict[str, Any], seed: int, vocab: int) -> TinyLM:
    """TinyLM with embeddings drawn from N(0, 1/d) (the initialisation kexue.fm/archives/9698
    analyses, fair to the tied variants) and the method's output layer."""
    torch.manual_seed(seed)
    tie = METHODS[method]["tie"]
    model = TinyLM(TinyLMConfig(vocab_size=vocab, context=cfg["context"], d_model=cfg["d_model"],
                                n_layer=cfg["n_layer"], n_head=cfg["n_head"],
                                tie_embeddings=tie == "plain"))
    for embedding in (model.embed, model.position):
        nn.init.normal_(embedding.weight, std=cfg["d_model"] ** -0.5)
    if tie == "half_swap":
        model.head = HalfSwapTiedHead(model.embed.weight)
    return model


def build_optimizer(method: str, model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """The released Tiger's rule (relative step sizes, 0.5 lr and no decay for vectors, NaN shrink)
    for Tiger and Lion; AdamW (absolute lr ``adamw_lr``) for the embeddings where the method says
    so."""
    spec = METHODS[method]
    options = {"beta": cfg["beta"]} if spec["optimizer"] == "tiger" else {"betas": cfg["betas"]}
    return make_optimizer(model, optimizer=spec["optimizer"], lr=cfg["lr"],
                          weight_decay=cfg["weight_decay"], embeddings=spec["embeddings"],
                          embedding_lr=cfg["adamw_lr"] if spec["embeddings"] == "adamw" else None,
                          relative_lr=True, nonfinite="shrink", **options)


def _windows(stream: torch.Tensor, starts: torch.Tensor, length: int) -> tuple[torch.Tensor, ...]:
    index = starts[:, None] + torch.arange(length)
    return stream[index], stream[index + 1]


def _at_bound(weight: torch.Tensor, bound: float, tolerance: float) -> torch.Tensor:
    return ((weight.abs() - bound).abs() <= tolerance * bound)


def _held_out_losses(model: nn.Module, corpus: Corpus, cfg: dict[str, Any]) -> dict[str, Any]:
    """Mean held-out cross-entropy over all positions and over positions grouped by the training
    count of their input token (the token whose embedding the prediction reads first)."""
    length, total = cfg["context"], cfg["eval_tokens"]
    usable = min(total, corpus.held_out.numel() - 1) // length * length
    starts = torch.arange(0, usable, length)
    losses, counts = [], []
    with torch.no_grad():
        for batch in starts.split(256):
            inputs, targets = _windows(corpus.held_out, batch, length)
            logits = model(inputs)
            losses.append(F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                          reduction="none"))
            counts.append(corpus.counts[inputs.flatten()])
    loss, count = torch.cat(losses), torch.cat(counts)
    bands = {"rare": (count >= 1) & (count <= cfg["rare_max_count"]),
             "frequent": count >= cfg["frequent_min_count"]}
    out: dict[str, Any] = {"eval_loss": float(loss.mean()), "eval_positions": int(loss.numel())}
    for name, mask in bands.items():
        out[f"eval_loss_{name}"] = float(loss[mask].mean()) if bool(mask.any()) else None
        out[f"eval_positions_{name}"] = int(mask.sum())
    return out


def _pile_up(model: nn.Module, corpus: Corpus, monitor: SaturationMonitor,
             cfg: dict[str, Any]) -> dict[str, Any]:
    """Entries at +-1/wd (entry tolerance ``entry_tolerance``) in the input embedding, by how often
    their token was seen in training (bands, and the rarer half of the seen tokens: count at most
    the median count), and in every other weight; saturated rows (``find_saturated_rows`` at the
    monitor's settings) and how often their tokens were seen."""
    bound = 1.0 / cfg["weight_decay"]
    embed = model.embed.weight.detach()
    at_bound = _at_bound(embed, bound, cfg["entry_tolerance"])
    rows = monitor.latest["embed"]
    row_counts = corpus.counts[rows]
    others = sum(int(_at_bound(p.detach(), bound, cfg["entry_tolerance"]).sum())
                 for p in model.parameters() if p is not model.embed.weight)
    rows_with_entries = at_bound.any(dim=1)
    counts = corpus.counts
    rare = (counts >= 1) & (counts <= cfg["rare_max_count"])
    median = int(counts[counts > 0].float().median())
    bands = {"0": (0, 0), "1-5": (1, 5), "6-10": (6, 10), "11-100": (11, 100),
             ">100": (101, int(counts.max()))}
    per_token = at_bound.sum(dim=1)
    return {
        "entries_at_bound": int(at_bound.sum()),
        "entries_at_bound_rare_tokens": int(at_bound[rare].sum()),
        "rarer_half_max_count": median,
        "entries_at_bound_rarer_half": int(per_token[(counts >= 1) & (counts <= median)].sum()),
        "entries_at_bound_by_training_count": {
            band: int(per_token[(counts >= low) & (counts <= high)].sum())
            for band, (low, high) in bands.items()},
        "tokens_with_entries_at_bound": int(rows_with_entries.sum()),
        "median_count_of_tokens_with_entries_at_bound":
            float(corpus.counts[rows_with_entries].float().median())
            if bool(rows_with_entries.any()) else None,
        "entries_at_bound_other_weights": others,
        "saturated_rows": int(rows.numel()),
        "saturated_rows_rare": int(((row_counts >= 1) & (row_counts <= cfg["rare_max_count"]))
                                   .sum()),
        "median_count_of_saturated_rows": float(row_counts.float().median())
            if rows.numel() else None,
        "max_abs_embedding": float(embed.abs().max()),
    }


def train_run(method: str, seed: int, cfg: dict[str, Any], corpus: Corpus) -> dict[str, Any]:
    """Train one method with one seed; return its measurements (plain numbers and lists) and the
    final input embedding (for histograms)."""
    model = build_model(method, cfg, seed, corpus.vocab)
    optimizer = build_optimizer(method, model, cfg)
    monitor = SaturationMonitor({"embed": model.embed.weight}, cfg["weight_decay"],
                                every=cfg["every"], tolerance=cfg["row_tolerance"],
                                fraction=cfg["row_fraction"], warn_drift=cfg["warn_drift"])
    monitor.attach(optimizer)
    generator = torch.Generator().manual_seed(seed + 1)
    high = corpus.train.numel() - cfg["context"] - 1
    train_losses = []
    for _ in range(cfg["steps"]):
        starts = torch.randint(0, high, (cfg["batch"],), generator=generator)
        inputs, targets = _windows(corpus.train, starts, cfg["context"])
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        train_losses.append(loss.item())
    tail = train_losses[-max(1, len(train_losses) // 10):]
    steps, saturated = monitor.counts("embed")
    _, drifting = monitor.counts("embed", "drifting")
    first = {name: next((s for s, c in zip(steps, values, strict=True) if c > 0), None)
             for name, values in (("saturated", saturated), ("drifting", drifting))}
    return {
        "method": method, "seed": seed,
        "train_loss_first": train_losses[0], "train_loss": sum(tail) / len(tail),
        "train_curve": _every(train_losses, cfg["every"]),
        "curve_steps": steps, "saturated_curve": saturated, "drifting_curve": drifting,
        "first_step_saturated": first["saturated"], "first_step_drifting": first["drifting"],
        **_pile_up(model, corpus, monitor, cfg),
        **_held_out_losses(model, corpus, cfg),
        "embedding": model.embed.weight.detach().clone(),
    }


def _every(values: Sequence[float], every: int) -> list[float]:
    """Means of consecutive blocks of ``every`` values."""
    return [sum(values[i:i + every]) / len(values[i:i + every])
            for i in range(0, len(values), every)]


Job = tuple[str, int, dict[str, Any]]  # (method, seed, settings)
_WORKER_DATA: dict[str, Corpus] = {}


def _init_worker(corpus: Corpus) -> None:
    torch.set_num_threads(1)
    _keep_freed_memory()
    _WORKER_DATA["corpus"] = corpus


def _keep_freed_memory() -> None:
    """glibc only, worker processes only: keep freed memory in the heap (trim and mmap thresholds
    at 256 and 64 MiB) instead of returning it, so a small model's per-step temporaries do not
    page-fault on every step (measured: a fifth of the CPU time went to the kernel)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, 256 << 20)
    libc.mallopt(m_mmap_threshold, 64 << 20)


def _worker_run(method: str, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    return train_run(method, seed, cfg, _WORKER_DATA["corpus"])


def run_all(jobs: Sequence[Job], corpus: Corpus, workers: int,
            progress: Callable[..., Iterable[Any]]) -> list[dict[str, Any]]:
    """Every (method, seed, settings) job, on ``workers`` processes of one torch thread each
    (``workers=1``: in this process); results in the order of ``jobs``. Jobs are handed out in
    that order, so put the longest first."""
    if workers <= 1:
        return [train_run(m, s, c, corpus) for m, s, c in progress(jobs, desc="optim runs")]
    context = get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(corpus,)) as pool:
        futures = {pool.submit(_worker_run, *job): i for i, job in enumerate(jobs)}
        results: list[dict[str, Any] | None] = [None] * len(jobs)
        for future in progress(as_completed(futures), total=len(futures), desc="optim runs"):
            results[futures[future]] = future.result()
    return [r for r in results if r is not None]


def expected_saturation_steps(lr: float, weight_decay: float, start: float,
                              fraction: float = 0.95) -> float:
    """Steps for an entry pushed with a constant sign under the relative rule
    (``dp/dt = lr |p| (1 - wd |p|)`` when every entry of the row has the same size) to go from
    ``start`` to ``fraction / wd``: ``(logit(fraction) - logit(wd start)) / lr``."""
    x0 = weight_decay * start
    return (math.log(fraction / (1 - fraction)) - math.log(x0 / (1 - x0))) / lr
