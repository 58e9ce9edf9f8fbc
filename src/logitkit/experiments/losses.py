"""EMO and TaiLr vs cross-entropy for fine-tuning a small pretrained language model.

A byte-level TinyLM is pretrained with cross-entropy on one corpus, then fine-tuned on another with
three losses, all through the fused (chunked) output-layer losses of ``logitkit.losses``:

* CE: ``linear_cross_entropy``;
* EMO + MLE: ``linear_emo_loss(..., mle_weight="adaptive")`` with the cost embedding = a frozen
  copy of the pretrained output layer (the EMO authors' recipe);
* TaiLr: ``linear_tailr_loss`` with gamma ramped linearly from 0 to ``TAILR_GAMMA`` over
  fine-tuning (``tailr_gamma_schedule``; our choice, not tuned).

Every method starts from the same pretrained weights and sees the same batches for a given seed.
Held-out metrics on the fine-tuning corpus' last 10%: perplexity, next-token accuracy, expected
calibration error (15 equal-width confidence bins) and over-confidence (mean max-probability minus
accuracy). A metric counts as a win for a method when it beats CE on every seed (paired).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from logitkit.experiments import Claim, Context, Result
from logitkit.experiments._text import encode_bytes, load_text, sample_windows
from logitkit.experiments._tiny_lm import TinyLM, TinyLMConfig
from logitkit.losses import (
    linear_cross_entropy,
    linear_emo_loss,
    linear_tailr_loss,
    tailr_gamma_schedule,
)

TITLE = "EMO (+MLE) and TaiLr vs cross-entropy for fine-tuning a small pretrained LM"
THREADS = 1
MINUTES = {"smoke": 0.1, "quick": 2, "full": 10}  # on 2 idle CPU cores
METHODS = ("ce", "emo_mle", "tailr")
TAILR_GAMMA = 0.5
ECE_BINS = 15
METRICS = {"perplexity": "lower", "accuracy": "higher", "ece": "lower"}


@dataclass(frozen=True)
class Settings:
    d_model: int
    n_layer: int
    context: int
    batch: int
    pretrain_steps: int
    finetune_steps: int
    eval_tokens: int
    seeds: int
    pretrain_lr: float = 1e-3
    finetune_lr: float = 3e-4


SETTINGS = {
    "smoke": Settings(d_model=32, n_layer=1, context=32, batch=8, pretrain_steps=12,
                      finetune_steps=5, eval_tokens=2048, seeds=1),
    "quick": Settings(d_model=96, n_layer=2, context=64, batch=16, pretrain_steps=800,
                      finetune_steps=250, eval_tokens=16384, seeds=3),
    "full": Settings(d_model=128, n_layer=2, context=64, batch=32, pretrain_steps=2000,
                     finetune_steps=500, eval_tokens=65536, seeds=3),
}


def _train(model: TinyLM, ids: torch.Tensor, steps: int, settings: Settings, lr: float, seed: int,
           method: str, cost_embedding: torch.Tensor | None, ctx: Context, desc: str) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    for step in ctx.progress(range(steps), desc=desc):
        inputs, targets = sample_windows(ids, batch=settings.batch, length=settings.context,
                                         generator=generator)
        hidden, weight = model.hidden_states(inputs), model.head.weight
        if method == "ce":
            loss = linear_cross_entropy(hidden, weight, targets)
        elif method == "emo_mle":
            loss = linear_emo_loss(hidden, weight, targets, cost_embedding, mle_weight="adaptive")
        else:
            gamma = tailr_gamma_schedule(step, steps, end=TAILR_GAMMA)
            loss = linear_tailr_loss(hidden, weight, targets, gamma=gamma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()


def calibration(confidence: torch.Tensor, correct: torch.Tensor,
                bins: int = ECE_BINS) -> tuple[float, list[dict[str, float]]]:
    """ECE = sum_b (n_b / n) |accuracy_b - confidence_b| over equal-width bins, and the bins."""
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=confidence.dtype)
    which = torch.bucketize(confidence, edges[1:-1], right=True)
    ece, table = 0.0, []
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        if count == 0:
            continue
        accuracy = float(correct[members].float().mean())
        mean_confidence = float(confidence[members].mean())
        ece += count / confidence.numel() * abs(accuracy - mean_confidence)
        table.append({"bin": b, "count": count, "accuracy": accuracy,
                      "confidence": mean_confidence})
    return ece, table


@torch.no_grad()
def evaluate(model: TinyLM, ids: torch.Tensor, settings: Settings) -> dict:
    """Held-out metrics over consecutive windows (each token predicted once)."""
    model.eval()
    length = settings.context
    usable = min(ids.numel() - 1, settings.eval_tokens) // length * length
    inputs = ids[:usable].view(-1, length)
    targets = ids[1:usable + 1].view(-1, length)
    log_probs = torch.log_softmax(model(inputs).double(), dim=-1).reshape(-1, 256)
    targets = targets.reshape(-1)
    nll = -log_probs.gather(1, targets[:, None]).mean()
    confidence, predicted = log_probs.exp().max(dim=1)
    correct = predicted == targets
    ece, table = calibration(confidence, correct)
    accuracy = float(correct.double().mean())
    return {"perplexity": math.exp(float(nll)), "accuracy": accuracy, "ece": ece,
            "overconfidence": float(confidence.mean()) - accuracy, "reliability": table}


def _corpora(ctx: Context) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    pretrain_file = ctx.data_file("lm/wikitext2_valid.txt")
    finetune_file = ctx.data_file("lm/grimm_tales.txt")
    if pretrain_file is None or finetune_file is None:
        pretrain_file = finetune_file = None  # both real or both embedded
    pretrain_text, pretrain_label = load_text(pretrain_file, "pretrain")
    finetune_text, finetune_label = load_text(finetune_file, "finetune")
    finetune_ids = encode_bytes(finetune_text)
    split = int(finetune_ids.numel() * 0.9)
    label = (f"pretrain: {pretrain_label}; fine-tune: {finetune_label} (first 90% train, "
             "last 10% held out); byte-level tokens")
    return encode_bytes(pretrain_text), finetune_ids[:split], finetune_ids[split:], label


def _wins(per_seed: dict[str, list[dict]], method: str) -> dict[str, bool]:
    """Metric -> whether ``method`` beats CE on every seed."""
    wins = {}
    for metric, better in METRICS.items():
        pairs = zip(per_seed[method], per_seed["ce"], strict=True)
        if better == "lower":
            wins[metric] = all(ours[metric] < ce[metric] for ours, ce in pairs)
        else:
            wins[metric] = all(ours[metric] > ce[metric] for ours, ce in pairs)
    return wins


def _verdict(wins: dict[str, bool]) -> str:
    count = sum(wins.values())
    return "reproduced" if count == len(wins) else "partly" if count else "not reproduced"


def _summary_rows(per_seed: dict[str, list[dict]], pretrained: dict) -> list[dict]:
    rows = [{"method": "pretrained (no fine-tuning)",
             **{k: round(pretrained[k], 4) for k in (*METRICS, "overconfidence")}}]
    for method in METHODS:
        row = {"method": method}
        for metric in (*METRICS, "overconfidence"):
            values = [result[metric] for result in per_seed[method]]
            row[metric] = round(statistics.fmean(values), 4)
            if len(values) > 1:
                row[f"{metric}_std"] = round(statistics.stdev(values), 4)
        rows.append(row)
    return rows


def _plot(per_seed: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    colors = {"ce": "tab:gray", "emo_mle": "tab:blue", "tailr": "tab:orange"}
    for ax, metric in zip(axes[:3], METRICS, strict=True):
        means = [statistics.fmean(r[metric] for r in per_seed[m]) for m in METHODS]
        errors = [statistics.stdev([r[metric] for r in per_seed[m]])
                  if len(per_seed[m]) > 1 else 0.0 for m in METHODS]
        ax.bar(METHODS, means, yerr=errors, capsize=4, color=[colors[m] for m in METHODS])
        low, high = min(means) - 2 * max(errors), max(means) + 2 * max(errors)
        pad = max((high - low) * 0.3, 1e-3)
        ax.set_ylim(low - pad, high + pad)
        ax.set_title(f"held-out {metric} ({METRICS[metric]} is better)")
    ax = axes[3]
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    for method in METHODS:
        table = per_seed[method][0]["reliability"]
        ax.plot([b["confidence"] for b in table], [b["accuracy"] for b in table], "o-",
                color=colors[method], label=method)
    ax.set_xlabel("confidence (first seed)")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability diagram")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(ctx: Context) -> Result:
    settings = SETTINGS[ctx.size]
    pretrain_ids, train_ids, heldout_ids, data_label = _corpora(ctx)
    config = TinyLMConfig(vocab_size=256, context=settings.context, d_model=settings.d_model,
                          n_layer=settings.n_layer, n_head=4)
    torch.manual_seed(ctx.seed)
    model = TinyLM(config)
    _train(model, pretrain_ids, settings.pretrain_steps, settings, settings.pretrain_lr,
           ctx.seed, "ce", None, ctx, "pretrain (CE)")
    pretrained_state = {k: v.clone() for k, v in model.state_dict().items()}
    cost_embedding = model.head.weight.detach().clone()
    pretrained = evaluate(model, heldout_ids, settings)
    seeds = [ctx.seed + i for i in range(settings.seeds)]
    per_seed: dict[str, list[dict]] = {method: [] for method in METHODS}
    for seed in seeds:
        for method in METHODS:
            model.load_state_dict(pretrained_state)
            _train(model, train_ids, settings.finetune_steps, settings, settings.finetune_lr,
                   seed + 1000, method, cost_embedding, ctx, f"fine-tune {method} seed {seed}")
            per_seed[method].append(evaluate(model, heldout_ids, settings))
    _plot(per_seed, ctx.out_dir / "losses.png")

    rows = _summary_rows(per_seed, pretrained)
    claim_settings = {
        "model": f"TinyLM d={settings.d_model} layers={settings.n_layer} "
                 f"context={settings.context}",
        "pretrain_steps": settings.pretrain_steps, "finetune_steps": settings.finetune_steps,
        "batch": settings.batch, "finetune_lr": settings.finetune_lr,
        "eval_tokens": settings.eval_tokens, "emo_mle_weight": "adaptive",
        "emo_cost_embedding": "frozen copy of the pretrained output layer",
        "tailr_gamma": f"linear ramp 0 -> {TAILR_GAMMA}", "ece_bins": ECE_BINS,
    }
    claims = []
    for method, claim_text in (
        ("emo_mle", "Fine-tuning with EMO (+MLE, adaptive) beats CE on held-out perplexity, "
                    "accuracy and calibration (ECE)"),
        ("tailr", "Fine-tuning with TaiLr beats CE on held-out perplexity, accuracy and "
                  "calibration (ECE), i.e. is less over-confident"),
    ):
        wins = _wins(per_seed, method)
        won = [m for m, w in wins.items() if w] or ["none"]
        claims.append(Claim(
            claim=claim_text, verdict=_verdict(wins), measured=rows, settings=claim_settings,
            seeds=seeds,
            notes=(f"{method} beats CE on every seed in: {', '.join(won)}. A metric counts only "
                   "when it is better on every seed (paired, same batches). std = across seeds. "
                   "Small byte-level model on CPU; not the papers' scale.")))
    numbers = {
        "pretrained": {k: pretrained[k] for k in (*METRICS, "overconfidence")},
        "per_seed": {method: [{k: r[k] for k in (*METRICS, "overconfidence")} for r in results]
                     for method, results in per_seed.items()},
        "wins_vs_ce": {method: _wins(per_seed, method) for method in METHODS if method != "ce"},
    }
    return Result(name="losses", title=TITLE, data=data_label, claims=claims, numbers=numbers,
                  plots=["losses.png"])
