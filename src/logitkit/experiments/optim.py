"""Tiger's +-1/weight_decay pile-up of rare embedding rows, and three fixes.

Claim: with a sign-of-momentum optimizer and decoupled decay ``wd``, the input-embedding rows of
rare tokens keep being pushed by stale momentum (their gradient is zero, their momentum decays
but keeps its sign) and settle at +-1/wd; lazy rows, tied input/output embeddings or AdamW for the
embeddings avoid it.

Data: a synthetic token stream with Zipf-distributed unigrams over a large vocabulary and a
learnable bigram rule (with probability ``copy_prob`` the next token is ``perm[current]``), so most
of the vocabulary is rare. A rare row only moves by ``lr`` per step, and a row pushed with a fixed
sign follows ``|p_t| = (1 - (1 - lr wd)^t) / wd``: it is within 5% of 1/wd after about
``3 / (lr wd)`` steps. To see that within a CPU budget the embedding group gets a large step size
(``embedding_lr``), the rest of the model a usual one (``lr``); the settings are in the report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from logitkit.experiments._framework import Claim, Context, Result
from logitkit.experiments._tiny_lm import TinyLM, TinyLMConfig
from logitkit.optim import SaturationMonitor, make_optimizer

TITLE = "Tiger piles rare embedding rows up at +-1/weight_decay; lazy rows, tying or AdamW fix it"
THREADS = 1
MINUTES = {"smoke": 0.1, "quick": 1, "full": 5}  # on 2 idle CPU cores

SETTINGS = {
    "smoke": {"vocab": 400, "steps": 150, "embedding_lr": 2.0, "every": 10},
    "quick": {"vocab": 5000, "steps": 1500, "embedding_lr": 0.5, "every": 50},
    "full": {"vocab": 16000, "steps": 6000, "embedding_lr": 0.2, "every": 200},
}
COMMON = {"weight_decay": 0.01, "lr": 1e-3, "adamw_lr": 3e-3, "beta": 0.965, "batch": 8,
          "context": 8, "d_model": 32, "n_layer": 1, "n_head": 2, "zipf_exponent": 1.1,
          "copy_prob": 0.5, "tolerance": 0.05, "fraction": 0.9}
REAL_CORPUS = "lm/wikitext2_valid.txt"
REAL_METHODS = ("tiger", "lazy_tiger")
METHODS = {  # name -> (tie_embeddings, embeddings mode of make_optimizer)
    "tiger": (False, "dense"),
    "lazy_tiger": (False, "lazy"),
    "tied_tiger": (True, "dense"),
    "adamw_embeddings": (False, "adamw"),
}


def zipf_bigram_stream(n_tokens: int, vocab: int, *, exponent: float, copy_prob: float,
                       seed: int) -> torch.Tensor:
    """Tokens ``x_t``: with probability ``copy_prob`` ``perm[x_{t-1}]``, else a Zipf draw
    (``P(rank r) ~ r^-exponent`` over ``vocab`` ids, id = rank - 1)."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, vocab + 1, dtype=np.float64) ** -exponent
    fresh = rng.choice(vocab, size=n_tokens, p=weights / weights.sum()).tolist()
    copy = (rng.random(n_tokens) < copy_prob).tolist()
    perm = rng.permutation(vocab).tolist()
    tokens = [fresh[0]]
    for t in range(1, n_tokens):
        tokens.append(perm[tokens[-1]] if copy[t] else fresh[t])
    return torch.tensor(tokens, dtype=torch.long)


def _windows(stream: torch.Tensor, starts: torch.Tensor, length: int) -> tuple[torch.Tensor, ...]:
    index = starts[:, None] + torch.arange(length)
    return stream[index], stream[index + 1]


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run tiny-model training on one intra-op thread (faster than 2 at these sizes), restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_one(method: str, stream: torch.Tensor, held_out: torch.Tensor, cfg: dict[str, Any],
              seed: int, ctx: Context) -> dict[str, Any]:
    """Train TinyLM with one method; return loss, saturation history and the final embedding."""
    tie, embeddings = METHODS[method]
    torch.manual_seed(seed)
    model = TinyLM(TinyLMConfig(vocab_size=cfg["vocab"], context=cfg["context"],
                                d_model=cfg["d_model"], n_layer=cfg["n_layer"],
                                n_head=cfg["n_head"], tie_embeddings=tie))
    optimizer = make_optimizer(model, lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                               embeddings=embeddings, beta=cfg["beta"],
                               embedding_lr=cfg["adamw_lr"] if embeddings == "adamw"
                               else cfg["embedding_lr"])
    monitor = SaturationMonitor({"embed": model.embed.weight}, cfg["weight_decay"],
                                every=cfg["every"], tolerance=cfg["tolerance"],
                                fraction=cfg["fraction"])
    generator = torch.Generator().manual_seed(seed + 1)
    high = stream.numel() - cfg["context"] - 1
    for _ in ctx.progress(range(cfg["steps"]), desc=method):
        inputs, targets = _windows(stream, torch.randint(0, high, (cfg["batch"],),
                                                         generator=generator), cfg["context"])
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        monitor.step()
    with torch.no_grad():
        starts = torch.arange(0, held_out.numel() - cfg["context"] - 1, cfg["context"])[:64]
        inputs, targets = _windows(held_out, starts, cfg["context"])
        eval_loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten()).item()
    steps, counts = monitor.counts("embed")
    weight = model.embed.weight.detach()
    return {"eval_loss": eval_loss, "steps": steps, "saturated": counts,
            "rows": monitor.latest["embed"], "weight": weight.clone()}


def _plot(results: dict[str, dict[str, Any]], real_results: dict[str, dict[str, Any]],
          cfg: dict[str, Any], ctx: Context) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bound = 1.0 / cfg["weight_decay"]
    fig, axes = plt.subplots(len(results), 1, figsize=(7, 2.2 * len(results)), sharex=True)
    bins = np.linspace(-1.1 * bound, 1.1 * bound, 221)
    for ax, (method, result) in zip(axes, results.items(), strict=True):
        ax.hist(result["weight"].flatten().numpy(), bins=bins, log=True)
        ax.axvline(bound, color="red", lw=0.8, ls="--")
        ax.axvline(-bound, color="red", lw=0.8, ls="--")
        ax.set_ylabel("entries (log)")
        ax.set_title(f"{method}: input-embedding values (synthetic Zipf tokens)", fontsize=9)
    axes[-1].set_xlabel("value (dashed: +-1/weight_decay)")
    fig.tight_layout()
    fig.savefig(ctx.out_dir / "embedding_histogram.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for method, result in results.items():
        ax.plot(result["steps"], result["saturated"], label=method, marker=".")
    for method, result in real_results.items():
        ax.plot(result["steps"], result["saturated"], label=f"{method} (real text)", ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel(f"saturated rows (of {cfg['vocab']})")
    ax.set_title(f"rows with >= {cfg['fraction']:.0%} of entries within "
                 f"{cfg['tolerance']:.0%} of +-1/wd", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(ctx.out_dir / "saturated_rows.png", dpi=110)
    plt.close(fig)
    return ["embedding_histogram.png", "saturated_rows.png"]


def word_stream(text: str, vocab: int) -> torch.Tensor:
    """Whitespace words as ids by frequency rank; words beyond the ``vocab - 1`` most frequent
    share the last id."""
    words = text.split()
    ranked = [w for w, _ in Counter(words).most_common(vocab - 1)]
    index = {w: i for i, w in enumerate(ranked)}
    return torch.tensor([index.get(w, vocab - 1) for w in words], dtype=torch.long)


def _measure(results: dict[str, dict[str, Any]], counts: torch.Tensor,
             cfg: dict[str, Any]) -> list[dict[str, Any]]:
    bound = 1.0 / cfg["weight_decay"]
    rows = []
    for method, result in results.items():
        saturated = result["rows"]
        first = next((s for s, c in zip(result["steps"], result["saturated"], strict=True)
                      if c > 0), None)
        rows.append({
            "method": method,
            "saturated_rows": int(saturated.numel()),
            "saturated_fraction": round(saturated.numel() / cfg["vocab"], 4),
            "median_count_of_saturated_tokens": (int(counts[saturated].median())
                                                 if saturated.numel() else None),
            "first_step_with_saturation": first,
            "entries_at_bound": int(((result["weight"].abs() - bound).abs()
                                     <= cfg["tolerance"] * bound).sum()),
            "max_abs_entry": round(float(result["weight"].abs().max()), 3),
            "eval_loss": round(result["eval_loss"], 4),
        })
    return rows


def _compare(methods: tuple[str, ...], stream: torch.Tensor, held_out: torch.Tensor,
             cfg: dict[str, Any], ctx: Context) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    counts = torch.bincount(stream, minlength=cfg["vocab"])
    with _one_thread():
        results = {m: train_one(m, stream, held_out, cfg, ctx.seed, ctx) for m in methods}
    return results, _measure(results, counts, cfg)


def _verdict(by_method: dict[str, int]) -> tuple[str, list[str]]:
    """Reproduced when plain Tiger has saturated rows and every fix has at most a tenth of them."""
    fixes = [m for m in by_method if m != "tiger"]
    fixed = [m for m in fixes if by_method[m] * 10 <= by_method["tiger"]]
    if by_method["tiger"] == 0:
        return "not reproduced", fixed
    return ("reproduced" if len(fixed) == len(fixes) else "partly"), fixed


def _claim(label: str, rows: list[dict[str, Any]], cfg: dict[str, Any], seed: int,
           counts: torch.Tensor, extra: str = "") -> Claim:
    by_method = {row["method"]: row["saturated_rows"] for row in rows}
    verdict, fixed = _verdict(by_method)
    seen = counts > 0
    notes = (f"{label}: plain Tiger has {by_method['tiger']} of {cfg['vocab']} input-embedding "
             f"rows with >= {cfg['fraction']:.0%} of entries within {cfg['tolerance']:.0%} of "
             f"+-{1 / cfg['weight_decay']:g}; "
             + ", ".join(f"{m} {n}" for m, n in by_method.items() if m != "tiger")
             + f". A fix counts when it has at most a tenth of plain Tiger's rows; fixed: {fixed}. "
             f"Ids seen in training: {int(seen.sum())} of {cfg['vocab']}, "
             f"{int((seen & (counts <= 5)).sum())} of them 5 times or fewer. "
             "entries_at_bound counts single entries within the tolerance. " + extra)
    return Claim(
        claim=f"{label}: Tiger with weight decay piles rare embedding rows up at +-1/wd; the "
              f"fixes ({', '.join(m for m in by_method if m != 'tiger')}) do not",
        verdict=verdict, measured=rows, settings=dict(cfg), seeds=[seed], notes=notes)


def run(ctx: Context) -> Result:
    cfg = {**COMMON, **SETTINGS[ctx.size]}
    tokens_needed = cfg["steps"] * cfg["batch"] * cfg["context"] // 4 + 10_000
    stream = zipf_bigram_stream(tokens_needed + 5_000, cfg["vocab"], exponent=cfg["zipf_exponent"],
                                copy_prob=cfg["copy_prob"], seed=ctx.seed)
    train, held_out = stream[:tokens_needed], stream[tokens_needed:]
    results, rows = _compare(tuple(METHODS), train, held_out, cfg, ctx)
    claims = [_claim("Synthetic Zipf tokens", rows, cfg, ctx.seed,
                     torch.bincount(train, minlength=cfg["vocab"]))]
    numbers: dict[str, Any] = {
        "saturated_rows": {row["method"]: row["saturated_rows"] for row in rows},
        "eval_loss": {row["method"]: row["eval_loss"] for row in rows},
        "saturation_curve": {m: r["saturated"] for m, r in results.items()},
        "curve_steps": results["tiger"]["steps"],
    }
    data = (f"synthetic Zipf({cfg['zipf_exponent']}) bigram stream, vocabulary {cfg['vocab']}, "
            f"{train.numel()} training tokens (built offline)")
    real_file = ctx.data_file(REAL_CORPUS)
    real_results = {}
    if real_file is not None and ctx.size != "smoke":
        words = word_stream(real_file.read_text(encoding="utf-8"), cfg["vocab"])
        split = int(0.95 * words.numel())
        real_results, real_rows = _compare(REAL_METHODS, words[:split], words[split:], cfg, ctx)
        claims.append(_claim(f"{REAL_CORPUS} words (top {cfg['vocab'] - 1} + one id for the rest)",
                             real_rows, cfg, ctx.seed,
                             torch.bincount(words[:split], minlength=cfg["vocab"]),
                             extra="Only plain and lazy Tiger are run on the real corpus."))
        numbers["real_saturated_rows"] = {r["method"]: r["saturated_rows"] for r in real_rows}
        numbers["real_eval_loss"] = {r["method"]: r["eval_loss"] for r in real_rows}
        data += f"; and {real_file.name}, {split} training words"
    else:
        reason = ("smoke size" if real_file is not None else "no data folder given"
                  if ctx.data_dir is None else f"no {REAL_CORPUS} in {ctx.data_dir}")
        data += f"; real corpus skipped ({reason})"
    plots = _plot(results, real_results, cfg, ctx)
    return Result(name="optim", title=TITLE, data=data, claims=claims, numbers=numbers,
                  plots=plots)
