"""Fine-tuning a pretrained LM on text with corrupted windows: CE against TaiLr.

TaiLr's argument (Ji et al., ICLR 2023; https://kexue.fm/archives/9526): cross-entropy gives a
training token of low probability a huge loss, so it chases noisy ("dirty") training text; TaiLr
weights each token's log-likelihood gradient by ``w = p / (gamma + (1 - gamma) p)`` (clipped
below at ``b``), so it follows improbable tokens less. Here a real corpus is made partly
low-quality: a share of the training windows is corrupted (``corrupt_windows``: every token
replaced by a uniformly drawn vocabulary id, or the window's tokens shuffled), and the model is
scored on the clean held-out text.

* Data. Training windows are drawn once from the first 90% of the corpus (the same clean windows
  for every seed, so the frozen layers' outputs are computed once); each seed picks which windows
  are corrupted, how, and the training order. Every arm of a seed sees the same windows in the
  same order from the same pretrained start (paired seeds).
* Arms (``ARMS``): ``ce clean`` (the control: cross-entropy on the same windows uncorrupted),
  ``ce``, ``tailr b`` (TaiLr with the threshold ``b``) and ``tailr`` (the same gamma, no threshold),
  all fused on the frozen (tied) output layer (``logitkit.losses``).
* Metrics. ``perplexity``: clean held-out perplexity (last 10% of the corpus). ``sample_nll``: the
  mean NLL of sampled continuations of held-out prompts (ancestral sampling, temperature 1) under
  the seed's ``ce clean`` model, the model of the clean data, as the TaiLr paper's PPL_oracle
  scores samples under the data's oracle (``ce clean`` itself is not sampled). ``distinct_2``:
  the share of distinct token bigrams in the samples (diversity: a
  low sample NLL from repetitive samples would show here).

Only the top layers train (``_lm_finetune``); the lower layers' outputs are cached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from logitkit.experiments import _lm_finetune as lm
from logitkit.experiments._framework import Context
from logitkit.losses import linear_cross_entropy, linear_tailr_loss

CORPUS = "lm/grimm_tales.txt"
CORRUPTIONS = ("random", "shuffle")
ARMS = ("ce clean", "ce", "tailr b", "tailr")
METRICS = {"perplexity": "lower", "sample_nll": "lower", "distinct_2": "higher"}


@dataclass(frozen=True)
class GenerationSettings(lm.FineTuneSettings):
    corrupt_share: float
    corruption: str  # one of CORRUPTIONS
    gamma: float
    threshold: float


def corrupt_windows(windows: Tensor, share: float, mode: str, vocab_size: int,
                    generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A copy of ``windows`` (n, T) with ``round(share * n)`` rows, chosen at random, corrupted;
    and the boolean mask of those rows.

    ``mode="random"``: every token of a corrupted row is a uniformly drawn id in
    ``[0, vocab_size)``; ``"shuffle"``: the row's own tokens in a random order.
    """
    if mode not in CORRUPTIONS:
        raise ValueError(f"mode must be one of {CORRUPTIONS}, got {mode!r}")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    count, length = windows.shape
    rows = torch.randperm(count, generator=generator)[:round(share * count)]
    corrupted = windows.clone()
    if mode == "random":
        corrupted[rows] = torch.randint(0, vocab_size, (rows.numel(), length), generator=generator)
    else:
        order = torch.rand(rows.numel(), length, generator=generator).argsort(dim=1)
        corrupted[rows] = windows[rows].gather(1, order)
    mask = torch.zeros(count, dtype=torch.bool)
    mask[rows] = True
    return corrupted, mask


@torch.no_grad()
def mean_nll(split: lm.SplitLM, cached: Tensor, targets: Tensor, batch: int) -> float:
    """Mean next-token NLL of ``targets`` (``-100`` = not scored) from cached lower-layer outputs,
    under the model's current top layers."""
    total, count = 0.0, 0
    for start in range(0, cached.shape[0], batch):
        hidden = lm.top_hidden(split, cached[start:start + batch])
        target = targets[start:start + batch]
        total += float(linear_cross_entropy(hidden, split.head, target, reduction="sum"))
        count += int((target != -100).sum())
    return total / count


def arm_loss(arm: str, cfg: GenerationSettings) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The fused loss of an arm: cross-entropy, or TaiLr with or without the threshold."""
    if arm in ("ce clean", "ce"):
        return linear_cross_entropy
    threshold = cfg.threshold if arm == "tailr b" else None
    return partial(linear_tailr_loss, gamma=cfg.gamma, threshold=threshold)


def _sample_scores(split: lm.SplitLM, prompts: Tensor, samples: Tensor, batch: int,
                   progress: Callable) -> tuple[Tensor, Tensor]:
    """Lower-layer cache of prompt + sample, and targets that score only the sampled tokens."""
    sequences = torch.cat([prompts, samples], dim=1)
    targets = sequences[:, 1:].clone()
    targets[:, :prompts.shape[1] - 1] = -100
    return lm.cache_lower(split, sequences[:, :-1], batch, progress), targets


def run_generation(ctx: Context, cfg: GenerationSettings,
                   seeds: list[int]) -> tuple[dict, float]:
    """Fine-tune every arm for every seed: per-seed metrics and what was run, and the model's
    loading time in seconds."""
    started = time.perf_counter()
    model, tokenizer = lm.load_smollm2() if cfg.real_model else lm.tiny_random_llama(ctx.seed)
    load_s = time.perf_counter() - started
    train_text, heldout_text, corpus_label = lm.split_corpus(ctx, CORPUS)
    train_ids = torch.tensor(tokenizer.encode(train_text))
    heldout_ids = torch.tensor(tokenizer.encode(heldout_text))
    split = lm.split_model(model, cfg.trainable_layers)
    vocab_size = int(split.head.shape[0])
    count = cfg.steps * cfg.batch
    pool = lm.windows(train_ids, count, cfg.context + 1, torch.Generator().manual_seed(ctx.seed))
    heldout = lm.windows(heldout_ids, cfg.eval_windows, cfg.context + 1, None)
    prompts = lm.windows(heldout_ids[heldout.numel():], cfg.prompts, cfg.prompt_tokens, None)
    progress = ctx.progress
    clean_cache = lm.cache_lower(split, pool[:, :-1], 16, progress)
    eval_cache = lm.cache_lower(split, heldout[:, :-1], 16, progress)
    pretrained_state = lm.snapshot(split)
    pretrained_ppl = math.exp(mean_nll(split, eval_cache, heldout[:, 1:], 16))
    per_seed: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        corrupted, mask = corrupt_windows(pool, cfg.corrupt_share, cfg.corruption, vocab_size,
                                          generator)
        corrupted_cache = clean_cache.clone()
        corrupted_cache[mask] = lm.cache_lower(split, corrupted[mask, :-1], 16, progress)
        order = torch.randperm(count, generator=generator)
        samples, judge_state = {}, None
        for arm in ARMS:
            cache, windows = (clean_cache, pool) if arm == "ce clean" else (corrupted_cache,
                                                                            corrupted)
            lm.restore(split, pretrained_state)
            losses = lm.train_top(split, cache, windows[:, 1:], order, cfg.batch, cfg.lr,
                                  arm_loss(arm, cfg), progress, desc=f"{arm} seed {seed}")
            per_seed[arm].append({
                "perplexity": math.exp(mean_nll(split, eval_cache, heldout[:, 1:], 16)),
                "final_train_loss": losses[-1]})
            if arm == "ce clean":  # the judge: its own samples are not needed
                judge_state = lm.snapshot(split)
            else:
                samples[arm] = lm.sample_continuations(split.model, prompts, cfg.new_tokens,
                                                       seed, batch=cfg.prompts)
        lm.restore(split, judge_state)
        for arm, arm_samples in samples.items():
            cached, targets = _sample_scores(split, prompts, arm_samples, 16, progress)
            per_seed[arm][-1]["sample_nll"] = mean_nll(split, cached, targets, 16)
            per_seed[arm][-1]["distinct_2"] = lm.distinct_n(arm_samples, 2)
    lm.restore(split, pretrained_state)
    return ({
        "model": ("SmolLM2-135M-Instruct (GGUF Q4_1, float32)" if cfg.real_model
                  else "tiny random Llama over bytes (smoke: not a test of the claim)"),
        "vocab_size": vocab_size, "layers": split.cut + cfg.trainable_layers,
        "corpus": corpus_label, "train_windows": count,
        "corrupted_windows_per_seed": round(cfg.corrupt_share * count),
        "heldout_tokens_scored": int(heldout[:, 1:].numel()),
        "pretrained_perplexity": pretrained_ppl, "per_seed": per_seed,
    }, load_s)
