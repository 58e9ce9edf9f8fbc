"""Lion/Tiger embedding outliers at +-1/weight_decay, and their remedies (Su, 2023,
kexue.fm/archives/9736).

The seed's observations, training a 7B model with his released Tiger at weight decay 0.01: some
token embeddings have entries at +-100 = 1/wd, others are heading there; they are low-frequency
tokens; the whole embedding matrix lies in [-100, 100]; no other weight shows it; training loss and
generations look normal; Adam does not do it. His explanation: a row whose gradient is zero keeps
moving by ``sign(m)`` with stale momentum until the decay balances it at ``-sign(m)/wd``. Remedies:
lazy rows, a tied embedding (best with the feature channels' halves swapped, which he found "even
slightly better than untied"), or AdamW for the embeddings (from Lion's authors). His worry: the
damage is invisible in the loss but costs rare tokens.

Design (the reproduction): a word-level TinyLM (one block, width 32, vocabulary 4000) trained with
the released Tiger's rule, as its author runs it: step ``lr * RMS`` of each embedding row and of
each other matrix, ``0.5 lr`` and no decay for vectors, at an ordinary relative rate (3e-3; the
released README uses 1.76e-3) and no separate embedding rate. Weight decay 0.1 (AdamW's common
value; Tiger's default 0.01 puts the bound at 100 and needs ~1.5x the steps: a row pushed with
constant sign under the relative rule goes from ``|p|`` to 95% of the bound in
``(logit(0.95) - logit(wd |p|)) / lr`` steps, ~2300 here for rows starting at 1/sqrt(32)). Lion
runs the same rule (betas 0.9, 0.99); the remedies are applied to Tiger; AdamW (lr 3e-3, the same
groups) is the baseline. Data: WikiText-2 validation words for training and test words held out
(``lm/`` of the data folder), or, without one, the embedded standard-library docstrings with a
smaller vocabulary. Measured per run: entries within 2% of +-1/wd (in the input embedding, in
which tokens, and in every other weight), rows with half their entries within 5% (the
``SaturationMonitor`` definition), training loss, and held-out loss overall and at positions whose
input token was seen 1-5 times in training. Seeds: 1 at quick size, 3 at full size (paired).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from logitkit._utils import new_figure, save_figure
from logitkit.experiments._framework import Claim, Context, Result
from logitkit.experiments._optim_runs import (
    METHODS,
    REMEDIES,
    SIGN_METHODS,
    Corpus,
    build_corpus,
    expected_saturation_steps,
    run_all,
)
from logitkit.experiments._stats import (
    fmt_mean_ci,
    interval_excludes_zero,
    mean_ci,
    paired_difference,
)
from logitkit.experiments._text import embedded_text

TITLE = ("Sign optimizers pile rare embedding rows up at +-1/weight_decay; lazy rows, tying or "
         "AdamW embeddings prevent it")
THREADS = 1  # per process; quick and full sizes train in 2 worker processes
MINUTES = {"smoke": 0.2, "quick": 1.2, "full": 7}  # on 2 idle CPU cores (quick measured)
NEEDS = ("matplotlib",)

COMMON = {"d_model": 32, "n_layer": 1, "n_head": 2, "context": 16, "batch": 8, "lr": 3e-3,
          "adamw_lr": 3e-3, "weight_decay": 0.1, "beta": 0.965, "betas": (0.9, 0.99),
          "row_tolerance": 0.05, "row_fraction": 0.5, "entry_tolerance": 0.02, "warn_drift": 0.05,
          "rare_max_count": 5, "frequent_min_count": 100}
SETTINGS = {
    "smoke": {"vocab": 1000, "train_words": 20_000, "steps": 60, "every": 20,
              "eval_tokens": 2048, "n_seeds": 1, "workers": 1},
    "quick": {"vocab": 4000, "train_words": None, "steps": 3000, "every": 100,
              "eval_tokens": 32768, "n_seeds": 1, "workers": 2},
    "full": {"vocab": 4000, "train_words": None, "steps": 5000, "every": 100,
             "eval_tokens": 131072, "n_seeds": 3, "workers": 2},
}
EMBEDDED_VOCAB = 2000  # the docstring corpus has ~15k training words
TRAIN_FILE, HELD_OUT_FILE = "lm/wikitext2_valid.txt", "lm/wikitext2_test.txt"
# tolerances (nats): held-out "not worse" / "no difference" with one seed; training loss "looks
# normal" when dense Tiger's is at most this much above lazy Tiger's (no pile-up there)
LOSS_TOLERANCE = 0.02
TRAIN_LOSS_TOLERANCE = 0.05
# a remedy must cut rows and entries at the bound to at most this share of dense Tiger's
FIX_SHARE = 0.1
RARE_SHARE = 0.9


def _load(ctx: Context, cfg: dict[str, Any]) -> tuple[Corpus, str]:
    train, held_out = ctx.data_file(TRAIN_FILE), ctx.data_file(HELD_OUT_FILE)
    if train is not None and held_out is not None:
        corpus = build_corpus(train.read_text(encoding="utf-8"),
                              held_out.read_text(encoding="utf-8"), cfg["vocab"],
                              train_words=cfg["train_words"])
        label = (f"WikiText-2 words: {Path(TRAIN_FILE).name} ({corpus.train.numel()} words) for "
                 f"training, {Path(HELD_OUT_FILE).name} held out; vocabulary {cfg['vocab']} "
                 "(most frequent words of both, one id for the rest)")
        return corpus, label
    vocab = min(cfg["vocab"], EMBEDDED_VOCAB)
    cfg["vocab"] = vocab
    corpus = build_corpus(embedded_text("pretrain"), embedded_text("finetune"), vocab)
    reason = "no data folder given" if ctx.data_dir is None else f"no {TRAIN_FILE} in the data"
    label = (f"embedded standard-library docstrings ({reason}): {corpus.train.numel()} training "
             f"words, the 'finetune' modules held out; vocabulary {vocab}")
    return corpus, label


def _steps_to_bound(cfg: dict[str, Any]) -> float:
    return expected_saturation_steps(cfg["lr"], cfg["weight_decay"], cfg["d_model"] ** -0.5)


def _values(results: dict[tuple[str, int], dict[str, Any]], method: str, key: str,
            seeds: list[int]) -> list[float]:
    return [results[(method, s)][key] for s in seeds]


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _difference_verdict(summary: dict[str, Any], *, expect_positive: bool) -> str:
    """reproduced / not reproduced / partly for a paired difference expected to be > 0 (or < 0):
    with 2+ seeds by its 95% interval, with one seed by ``LOSS_TOLERANCE``."""
    sign = 1.0 if expect_positive else -1.0
    mean = sign * summary["mean"]
    if summary["ci95"] is not None:
        if interval_excludes_zero(summary):
            return "reproduced" if mean > 0 else "not reproduced"
        return "partly"
    if mean > LOSS_TOLERANCE:
        return "reproduced"
    return "not reproduced" if mean < -LOSS_TOLERANCE else "partly"


def _pile_up_claim(results: dict, seeds: list[int], cfg: dict[str, Any], data: str) -> Claim:
    bound = 1.0 / cfg["weight_decay"]
    rows, checks = [], []
    for method in (*SIGN_METHODS, "adamw"):
        entries = _values(results, method, "entries_at_bound", seeds)
        rare = _values(results, method, "entries_at_bound_rarer_half", seeds)
        others = _values(results, method, "entries_at_bound_other_weights", seeds)
        bands = {band: sum(r["entries_at_bound_by_training_count"][band]
                           for r in (results[(method, s)] for s in seeds))
                 for band in results[(method, seeds[0])]["entries_at_bound_by_training_count"]}
        rows.append({
            "method": method,
            "entries_at_bound (input embedding)": fmt_mean_ci(entries),
            "share on the rarer half of the tokens": round(sum(rare) / sum(entries), 3)
            if sum(entries) else None,
            "entries by training count of the token (all seeds)": bands,
            "tokens with such entries": fmt_mean_ci(
                _values(results, method, "tokens_with_entries_at_bound", seeds)),
            "median training count of those tokens": _mean(_values(
                results, method, "median_count_of_tokens_with_entries_at_bound", seeds)),
            "entries_at_bound in every other weight": sum(others),
            "max |entry| / bound": round(max(_values(results, method, "max_abs_embedding",
                                                     seeds)) / bound, 3),
            "train loss (last 10%)": fmt_mean_ci(_values(results, method, "train_loss", seeds)),
        })
        if method in SIGN_METHODS:
            checks.append({"entries": min(entries) > 0,
                           "rare": sum(entries) > 0 and sum(rare) >= RARE_SHARE * sum(entries),
                           "only_embedding": sum(others) == 0})
    adamw_clean = sum(_values(results, "adamw", "entries_at_bound", seeds)) == 0
    loss_gap = paired_difference(_values(results, "tiger", "train_loss", seeds),
                                 _values(results, "tiger_lazy", "train_loss", seeds))
    rows.append({"method": "tiger - tiger_lazy", "train loss difference": fmt_mean_ci(
        [a - b for a, b in zip(_values(results, "tiger", "train_loss", seeds),
                               _values(results, "tiger_lazy", "train_loss", seeds),
                               strict=True)])})
    loss_normal = loss_gap["mean"] <= TRAIN_LOSS_TOLERANCE
    found = all(c["entries"] for c in checks)
    everything = found and all(c["rare"] and c["only_embedding"] for c in checks)
    verdict = ("reproduced" if everything and adamw_clean and loss_normal
               else "partly" if found else "not reproduced")
    half = results[("tiger", seeds[0])]["rarer_half_max_count"]
    notes = (f"{data}. Entries within {cfg['entry_tolerance']:.0%} of +-1/wd = +-{bound:g}. "
             f"Checked in every seed: Tiger and Lion have such entries ({found}); >= "
             f"{RARE_SHARE:.0%} of them on the rarer half of the tokens seen in training (seen "
             f"1-{half} times, the median count) ({all(c['rare'] for c in checks)}); none in any "
             "other weight "
             f"({all(c['only_embedding'] for c in checks)}); none with AdamW ({adamw_clean}); the "
             f"training loss does not show it: dense Tiger's is at most "
             f"{TRAIN_LOSS_TOLERANCE:g} nats above lazy Tiger's, which has no pile-up "
             f"({loss_normal}). A row pushed with a constant sign under the relative rule needs "
             f"~{_steps_to_bound(cfg):.0f} steps from its initial size to 95% of the bound; runs "
             f"take {cfg['steps']}.")
    return Claim(
        claim=("Tiger and Lion (released Tiger's relative rule, wd 0.1) leave input-embedding "
               "entries at exactly +-1/wd, on rare tokens only, in no other weight and not with "
               "AdamW, while the training loss looks normal"),
        verdict=verdict, measured=rows, settings=dict(cfg), seeds=seeds, notes=notes)


def _rare_measured(results: dict, seeds: list[int]) -> bool:
    """Whether the held-out words contain positions whose input token is rare in training."""
    return results[("tiger", seeds[0])]["eval_positions_rare"] > 0


def _fixes(results: dict, remedy: str, seeds: list[int]) -> dict[str, Any]:
    tiger = {k: _mean(_values(results, "tiger", k, seeds))
             for k in ("entries_at_bound", "saturated_rows")}
    ours = {k: _mean(_values(results, remedy, k, seeds))
            for k in ("entries_at_bound", "saturated_rows")}
    falls = {k: tiger[k] > 0 and ours[k] <= FIX_SHARE * tiger[k] for k in tiger}
    not_worse = _rare_measured(results, seeds) and paired_difference(
        _values(results, remedy, "eval_loss_rare", seeds),
        _values(results, "tiger", "eval_loss_rare", seeds))["mean"] <= LOSS_TOLERANCE
    return {"falls": falls, "fixes": all(falls.values()) and not_worse}


def _remedies_claim(results: dict, seeds: list[int], cfg: dict[str, Any], data: str) -> Claim:
    rows, fixed = [], []
    for remedy in REMEDIES:
        outcome = _fixes(results, remedy, seeds)
        if outcome["fixes"]:
            fixed.append(remedy)
        rows.append({
            "remedy": remedy,
            "entries_at_bound": fmt_mean_ci(_values(results, remedy, "entries_at_bound", seeds)),
            "saturated rows": fmt_mean_ci(_values(results, remedy, "saturated_rows", seeds)),
            "held-out loss, rare-input positions": fmt_mean_ci(
                _values(results, remedy, "eval_loss_rare", seeds)),
            "minus dense Tiger": _difference_text(results, remedy, "tiger", "eval_loss_rare",
                                                  seeds),
            "fixes": outcome["fixes"],
        })
    rows.append({"remedy": "(dense tiger)",
                 "entries_at_bound": fmt_mean_ci(_values(results, "tiger", "entries_at_bound",
                                                         seeds)),
                 "saturated rows": fmt_mean_ci(_values(results, "tiger", "saturated_rows", seeds)),
                 "held-out loss, rare-input positions": fmt_mean_ci(
                     _values(results, "tiger", "eval_loss_rare", seeds))})
    verdict = ("reproduced" if len(fixed) == len(REMEDIES)
               else "partly" if fixed else "not reproduced")
    piled_up = _mean(_values(results, "tiger", "entries_at_bound", seeds)) > 0
    nothing_to_prevent = "" if piled_up else (
        "Inconclusive: dense Tiger left no entry at the bound in this run, so no remedy had "
        "anything to prevent. ")
    if not piled_up:
        verdict = "inconclusive"
    notes = (f"{data}. {nothing_to_prevent}A remedy fixes the pile-up only if its entries at "
             "+-1/wd AND its saturated "
             f"rows (>= {cfg['row_fraction']:.0%} of a row within {cfg['row_tolerance']:.0%}) "
             f"fall to at most {FIX_SHARE:.0%} of dense Tiger's (mean over seeds) AND its held-out "
             f"loss at positions whose input token was seen 1-{cfg['rare_max_count']} times is not "
             f"worse than dense Tiger's by more than {LOSS_TOLERANCE} nats (paired mean). "
             f"Fixed: {fixed or 'none'}.")
    return Claim(
        claim=("Each remedy (lazy rows, plain tied embedding, half-swap tied embedding, AdamW for "
               "the embeddings) prevents the pile-up without hurting rare tokens"),
        verdict=verdict, measured=rows, settings=dict(cfg), seeds=seeds, notes=notes)


def _difference_text(results: dict, a: str, b: str, key: str, seeds: list[int]) -> str | None:
    """``fmt_mean_ci`` of the paired differences a - b, or None where ``key`` was not measured."""
    first, second = _values(results, a, key, seeds), _values(results, b, key, seeds)
    if None in first or None in second:
        return None
    return fmt_mean_ci([x - y for x, y in zip(first, second, strict=True)])


def _hidden_cost_claim(results: dict, seeds: list[int], cfg: dict[str, Any], data: str) -> Claim:
    keys = ("eval_loss_rare", "train_loss", "eval_loss", "eval_loss_frequent")
    rows = [{"quantity": key,
             "dense Tiger": _mean(_values(results, "tiger", key, seeds)),
             "lazy Tiger": _mean(_values(results, "tiger_lazy", key, seeds)),
             "dense - lazy (paired)": _difference_text(results, "tiger", "tiger_lazy", key, seeds)}
            for key in keys]
    verdict = "inconclusive"  # no held-out position with a rare input token: nothing measured
    if _rare_measured(results, seeds):
        rare = paired_difference(_values(results, "tiger", "eval_loss_rare", seeds),
                                 _values(results, "tiger_lazy", "eval_loss_rare", seeds))
        train = paired_difference(_values(results, "tiger", "train_loss", seeds),
                                  _values(results, "tiger_lazy", "train_loss", seeds))
        verdict = _difference_verdict(rare, expect_positive=True)
        if verdict == "reproduced" and train["mean"] > TRAIN_LOSS_TOLERANCE:
            verdict = "partly"  # the cost would show in the training loss
    positions = results[("tiger", seeds[0])]
    notes = (f"{data}. Held-out positions: {positions['eval_positions']}, of which "
             f"{positions['eval_positions_rare']} have an input token seen 1-"
             f"{cfg['rare_max_count']} times in training and {positions['eval_positions_frequent']}"
             f" one seen >= {cfg['frequent_min_count']} times. Reproduced when dense minus lazy "
             "is > 0 at rare-input positions (95% interval above 0 with 2+ seeds; > "
             f"{LOSS_TOLERANCE} nats with one) while the training losses differ by at most "
             f"{TRAIN_LOSS_TOLERANCE:g} nats.")
    return Claim(
        claim=("The pile-up costs rare tokens: dense Tiger's held-out loss at positions with a "
               "rare input token is higher than lazy Tiger's, although its training loss is not"),
        verdict=verdict, measured=rows, settings=dict(cfg), seeds=seeds, notes=notes)


def _half_swap_claim(results: dict, seeds: list[int], cfg: dict[str, Any], data: str) -> Claim:
    rows, verdicts = [], []
    for other in ("tiger", "tiger_lazy"):
        summary = paired_difference(_values(results, "tiger_half_swap_tied", "eval_loss", seeds),
                                    _values(results, other, "eval_loss", seeds))
        verdicts.append(_difference_verdict(summary, expect_positive=False))
        rows.append({"untied model": other,
                     "half-swap tied held-out loss": fmt_mean_ci(
                         _values(results, "tiger_half_swap_tied", "eval_loss", seeds)),
                     "untied held-out loss": fmt_mean_ci(_values(results, other, "eval_loss",
                                                                 seeds)),
                     "tied - untied (paired)": fmt_mean_ci([a - b for a, b in zip(
                         _values(results, "tiger_half_swap_tied", "eval_loss", seeds),
                         _values(results, other, "eval_loss", seeds), strict=True)])})
    verdict = (verdicts[0] if verdicts[0] == verdicts[1] else "partly")
    notes = (f"{data}. Compared with the untied model under dense Tiger (the seed's setting) and "
             "under lazy Tiger; reproduced when the tied model's held-out loss is lower against "
             f"both (95% interval below 0 with 2+ seeds; by > {LOSS_TOLERANCE} nats with one).")
    return Claim(
        claim=("The tied embedding with the two halves of the channels swapped works slightly "
               "better than an untied one"),
        verdict=verdict, measured=rows, settings=dict(cfg), seeds=seeds, notes=notes)


def _plots(results: dict, seeds: list[int], cfg: dict[str, Any], data: str,
           out_dir: Path) -> list[str]:
    bound = 1.0 / cfg["weight_decay"]
    seed = seeds[0]
    short = data.split(":")[0]
    fig, axes = new_figure(len(METHODS), 1, figsize=(7, 1.6 * len(METHODS)), sharex=True)
    bins = np.linspace(-1.1 * bound, 1.1 * bound, 221)
    for ax, method in zip(axes, METHODS, strict=True):
        values = results[(method, seed)]["embedding"].flatten().numpy()
        ax.hist(values, bins=bins, log=True)
        for x in (-bound, bound):
            ax.axvline(x, color="red", lw=0.8, ls="--")
        ax.set_ylabel("entries")
        ax.set_title(f"{method}: {int(results[(method, seed)]['entries_at_bound'])} entries within "
                     f"{cfg['entry_tolerance']:.0%} of +-1/wd", fontsize=8)
    axes[-1].set_xlabel(f"input-embedding entry (dashed: +-1/wd = +-{bound:g})")
    fig.suptitle(f"{short}, V={cfg['vocab']}, {cfg['steps']} steps, seed {seed}", fontsize=9)
    save_figure(fig, out_dir / "embedding_values.png")

    fig, ax = new_figure(figsize=(8, 4))
    methods = list(METHODS)
    panels = [("eval_loss", "all positions")]
    if _rare_measured(results, seeds):
        panels.insert(0, ("eval_loss_rare", "input token seen 1-5 times"))
    for offset, (key, label) in enumerate(panels):
        summaries = [mean_ci(_values(results, m, key, seeds)) for m in methods]
        means = [s["mean"] for s in summaries]
        errors = None
        if len(seeds) > 1:
            errors = [[s["mean"] - s["ci95"][0] for s in summaries],
                      [s["ci95"][1] - s["mean"] for s in summaries]]
        ax.bar(np.arange(len(methods)) + 0.4 * offset, means, width=0.4, yerr=errors,
               label=label, capsize=3)
    ax.set_xticks(np.arange(len(methods)) + 0.2, methods, rotation=25, fontsize=7)
    ax.set_ylabel("held-out cross-entropy (nats)")
    ax.set_title(f"Held-out loss by input-token frequency ({short}; bars from 0; "
                 f"{len(seeds)} seed(s), 95% intervals when > 1)", fontsize=8)
    ax.legend(fontsize=7)
    save_figure(fig, out_dir / "held_out_loss.png")

    fig, ax = new_figure(figsize=(7, 4))
    for method in (*SIGN_METHODS, "adamw"):
        run = results[(method, seed)]
        line, = ax.plot(run["curve_steps"], run["drifting_curve"], ls="--",
                        label=f"{method}: rows drifting without gradient (early warning)")
        if method in SIGN_METHODS:
            ax.plot(run["curve_steps"], run["saturated_curve"], color=line.get_color(),
                    label=f"{method}: saturated rows")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("step")
    ax.set_ylabel(f"rows of the input embedding (of {cfg['vocab']}; symlog)")
    ax.set_title(f"Saturated rows and the drift warning (growth of a row's norm while its "
                 f"gradient is 0 >= {cfg['warn_drift']:.0%} of the saturated norm; {short}, "
                 f"seed {seed})", fontsize=7)
    ax.legend(fontsize=7)
    save_figure(fig, out_dir / "saturation.png")
    return ["embedding_values.png", "held_out_loss.png", "saturation.png"]


NUMBER_KEYS = ("train_loss", "eval_loss", "eval_loss_rare", "eval_loss_frequent",
               "entries_at_bound", "entries_at_bound_rare_tokens", "entries_at_bound_other_weights",
               "saturated_rows", "saturated_rows_rare", "max_abs_embedding",
               "first_step_drifting", "first_step_saturated")


def run(ctx: Context) -> Result:
    cfg = {**COMMON, **SETTINGS[ctx.size]}
    corpus, data = _load(ctx, cfg)
    seeds = [ctx.seed + i for i in range(cfg["n_seeds"])]
    jobs = [(method, seed) for seed in seeds for method in METHODS]
    runs = run_all(jobs, corpus, cfg, cfg["workers"], ctx.progress)
    results = {(r["method"], r["seed"]): r for r in runs}
    claims = [_pile_up_claim(results, seeds, cfg, data),
              _remedies_claim(results, seeds, cfg, data),
              _hidden_cost_claim(results, seeds, cfg, data),
              _half_swap_claim(results, seeds, cfg, data)]
    numbers: dict[str, Any] = {
        key: {m: _values(results, m, key, seeds) for m in METHODS} for key in NUMBER_KEYS}
    numbers["seeds"] = seeds
    numbers["early_warning_before_saturation"] = {
        m: [results[(m, s)]["first_step_drifting"] for s in seeds] for m in SIGN_METHODS}
    numbers["steps_to_95_percent_of_bound_constant_sign"] = round(_steps_to_bound(cfg))
    plots = _plots(results, seeds, cfg, data, ctx.out_dir)
    return Result(name="optim", title=TITLE, data=data, claims=claims, numbers=numbers,
                  plots=plots)
