"""Lion/Tiger embedding outliers at +-1/weight_decay, and their remedies (Su, 2023,
kexue.fm/archives/9736).

The seed's observations, training a 7B model with his released Tiger at weight decay 0.01: some
token embeddings have entries at +-100 = 1/wd, others are heading there; they are low-frequency
tokens; the whole embedding matrix lies in [-100, 100]; no other weight shows it; training loss and
generations look normal; Adam does not do it. His explanation: a row whose gradient is zero keeps
moving by ``sign(m)`` with stale momentum until the decay balances it at ``-sign(m)/wd``. Remedies:
lazy rows, a tied embedding (best with the feature channels' halves swapped, which he found "even
slightly better than untied"), or Adam for the embeddings (from Lion's authors). His worry: the
damage is invisible in the loss but costs rare tokens.

Design (the reproduction): a word-level TinyLM (one block, width 32, vocabulary 4000) trained with
the released Tiger's rule, as its author runs it: step ``lr * RMS`` of each embedding row and of
each other matrix, ``0.5 lr`` and no decay for vectors, no separate embedding rate. The claims are
tested at weight decay 0.1 and relative rate 6e-3 (0.6% of a weight's RMS a step; Lion's usual
absolute 1e-4..3e-4 on weights of RMS ~0.02 is 0.5-1.5%): a row pushed with a constant sign under
the relative rule goes from ``|p|`` to 95% of the bound in ``(logit(0.95) - logit(wd |p|)) / lr``
steps, ~1160 here for rows starting at 1/sqrt(32), so the pile-up forms within the quick size's
1500 steps; at the seed's own settings (wd 0.01, the released README's 1.76e-3) it needs ~5300
(bound 100). Lion runs the same rule (betas 0.9, 0.99); the remedies are applied to Tiger; "Adam
does not do it" is tested on the embedding itself: Tiger with AdamW (lr 3e-3) for the embeddings,
the Lion authors' remedy. Every method runs on the same paired seeds (3 at quick size, 5 at full;
a seed fixes the initialisation and the batch order, shared by all methods), and every claim
reads paired differences over them with Student-t 95% intervals (``_stats``), drawn per seed in
``paired_differences.png``.

Beside the claims, one seed of dense and lazy Tiger at the seed's own settings (lr 1.76e-3, wd
0.01; 2600 steps at quick size, 6000 at full) is shown, not decided: its pile-up needs more steps
than the demo has, but its rare-token cost and the monitor's drift warning (``SaturationMonitor``:
a row's norm grows while its gradient is 0) show within them. The two runs go first to the two
worker processes, the 18 shorter ones fill in behind them.

Data: WikiText-2 validation words for training and test words held out (``lm/`` of the data
folder), or, without one, the embedded standard-library docstrings with a smaller vocabulary.
Measured per run: entries within 2% of +-1/wd (in the input embedding, in which tokens, and in
every other weight), rows with half their entries within 5% (the ``SaturationMonitor``
definition), training loss, and held-out loss overall and at positions whose input token was seen
1-5 times (rare) or >= 100 times (frequent) in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from logitkit._utils import new_figure, save_figure
from logitkit.experiments._framework import POSTS, Claim, Context, Result
from logitkit.experiments._optim_runs import (
    METHODS,
    REMEDIES,
    SIGN_METHODS,
    Corpus,
    build_corpus,
    expected_saturation_steps,
    run_all,
)
from logitkit.experiments._plots import PairedPanel, plot_paired_differences
from logitkit.experiments._stats import fmt_mean_ci, mean_ci
from logitkit.experiments._text import embedded_text

TITLE = ("Sign optimizers pile rare embedding rows up at +-1/weight_decay; lazy rows, tying or "
         "AdamW embeddings prevent it")
THREADS = 1  # per process; quick and full sizes train in 2 worker processes
MINUTES = {"smoke": 0.2, "quick": 1.6, "full": 7}  # on 2 idle CPU cores (quick measured)
NEEDS = ("matplotlib",)

COMMON = {"d_model": 32, "n_layer": 1, "n_head": 2, "context": 16, "batch": 8, "lr": 6e-3,
          "adamw_lr": 3e-3, "weight_decay": 0.1, "beta": 0.965, "betas": (0.9, 0.99),
          "row_tolerance": 0.05, "row_fraction": 0.5, "entry_tolerance": 0.02, "warn_drift": 0.05,
          "rare_max_count": 5, "frequent_min_count": 100}
# the seed's own settings: the post's weight decay, the released Tiger README's learning rate
SEED_SETTINGS = {"lr": 1.76e-3, "weight_decay": 0.01}
SETTINGS = {
    "smoke": {"vocab": 1000, "train_words": 20_000, "steps": 60, "seed_settings_steps": 60,
              "every": 20, "eval_tokens": 2048, "n_seeds": 1, "workers": 1},
    "quick": {"vocab": 4000, "train_words": None, "steps": 1500, "seed_settings_steps": 2600,
              "every": 100, "eval_tokens": 32768, "n_seeds": 3, "workers": 2},
    "full": {"vocab": 4000, "train_words": None, "steps": 3000, "seed_settings_steps": 6000,
             "every": 100, "eval_tokens": 131072, "n_seeds": 5, "workers": 2},
}
EMBEDDED_VOCAB = 2000  # the docstring corpus has ~15k training words
TRAIN_FILE, HELD_OUT_FILE = "lm/wikitext2_valid.txt", "lm/wikitext2_test.txt"
SOURCE = POSTS["optim"]
# "the training loss looks normal": dense Tiger's training loss is at most this many nats above
# lazy Tiger's (which has no pile-up), at the upper end of the paired 95% interval
TRAIN_LOSS_TOLERANCE = 0.05
# a remedy prevents the pile-up when its rows and entries at the bound fall to at most this share
# of dense Tiger's (means over seeds)
FIX_SHARE = 0.1
# the pile-up is "on rare tokens" when at least this share of its entries is on the rarer half
RARE_SHARE = 0.9
# held-out loss by the training count of the position's input token: key, label
LOSS_BANDS = (("eval_loss", "overall"), ("eval_loss_frequent", "frequent-input"),
              ("eval_loss_rare", "rare-input"))
LABELS = {"tiger": "dense Tiger", "lion": "Lion", "tiger_lazy": "lazy", "tiger_tied": "tied",
          "tiger_half_swap_tied": "half-swap tied", "tiger_adamw_embeddings": "AdamW embeddings"}


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


def _seed_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """The run at the seed's own settings: its lr and wd, ``seed_settings_steps`` steps."""
    return {**cfg, **SEED_SETTINGS, "steps": cfg["seed_settings_steps"]}


def _steps_to_bound(cfg: dict[str, Any]) -> float:
    return expected_saturation_steps(cfg["lr"], cfg["weight_decay"], cfg["d_model"] ** -0.5)


def _values(results: dict, method: str, key: str, seeds: list[int]) -> list[Any]:
    return [results[(method, s)][key] for s in seeds]


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _differences(results: dict, a: str, b: str, key: str, seeds: list[int]) -> list[float] | None:
    """Per-seed ``a - b`` of ``key``, or None where ``key`` was not measured (no such position)."""
    first, second = _values(results, a, key, seeds), _values(results, b, key, seeds)
    if None in first or None in second:
        return None
    return [x - y for x, y in zip(first, second, strict=True)]


def _above(differences: list[float] | None, level: float = 0.0) -> bool:
    """Whether the paired 95% interval lies entirely above ``level`` (no interval: never)."""
    if differences is None:
        return False
    interval = mean_ci(differences, digits=12)["ci95"]
    return interval is not None and interval[0] > level


def _below(differences: list[float] | None, level: float = 0.0) -> bool:
    """Whether the paired 95% interval lies entirely below ``level`` (no interval: never)."""
    return differences is not None and _above([-d for d in differences], -level)


def _text(differences: list[float] | None) -> str | None:
    return None if differences is None else fmt_mean_ci(differences)


def _pile_up_claim(results: dict, seeds: list[int], cfg: dict[str, Any], data: str) -> Claim:
    bound = 1.0 / cfg["weight_decay"]
    adam = "tiger_adamw_embeddings"
    rows, checks = [], []
    for method in (*SIGN_METHODS, adam):
        entries = _values(results, method, "entries_at_bound", seeds)
        rare = _values(results, method, "entries_at_bound_rarer_half", seeds)
        others = _values(results, method, "entries_at_bound_other_weights", seeds)
        bands = {band: sum(r["entries_at_bound_by_training_count"][band]
                           for r in (results[(method, s)] for s in seeds))
                 for band in results[(method, seeds[0])]["entries_at_bound_by_training_count"]}
        rows.append({
            "method": LABELS[method],
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
            "first drift warning (step, per seed)": _values(results, method,
                                                            "first_step_drifting", seeds),
            "train loss (last 10%)": fmt_mean_ci(_values(results, method, "train_loss", seeds)),
        })
        if method in SIGN_METHODS:
            checks.append({"entries": min(entries) > 0,
                           "rare": sum(entries) > 0 and sum(rare) >= RARE_SHARE * sum(entries),
                           "only_embedding": sum(others) == 0})
    adam_clean = sum(_values(results, adam, "entries_at_bound", seeds)) == 0
    gap = _differences(results, "tiger", "tiger_lazy", "train_loss", seeds)
    rows.append({"method": "dense Tiger - lazy Tiger (paired)",
                 "train loss (last 10%)": _text(gap)})
    loss_normal = _below(gap, TRAIN_LOSS_TOLERANCE)
    found = all(c["entries"] for c in checks)
    everything = found and all(c["rare"] and c["only_embedding"] for c in checks)
    verdict = ("reproduced" if everything and adam_clean and loss_normal
               else "partly" if found else "not reproduced")
    half = results[("tiger", seeds[0])]["rarer_half_max_count"]
    notes = (f"{data}. Entries within {cfg['entry_tolerance']:.0%} of +-1/wd = +-{bound:g}. "
             "Rule: reproduced when all of these hold, partly when only the first does: Tiger and "
             f"Lion have such entries in every seed ({found}); >= {RARE_SHARE:.0%} of them are on "
             f"the rarer half of the tokens seen in training (seen 1-{half} times, the median "
             f"count) ({all(c['rare'] for c in checks)}); none in any other weight "
             f"({all(c['only_embedding'] for c in checks)}); none when the embedding is trained by "
             f"AdamW ({adam_clean}); the training loss does not show it: the paired 95% interval "
             f"of dense minus lazy Tiger (no pile-up) lies below +{TRAIN_LOSS_TOLERANCE:g} nats "
             f"({loss_normal}). A row pushed with a constant sign under the relative rule needs "
             f"~{_steps_to_bound(cfg):.0f} steps from its initial size to 95% of the bound; runs "
             f"take {cfg['steps']}.")
    return Claim(
        claim=(f"Tiger and Lion (released Tiger's relative rule, wd {cfg['weight_decay']:g}) "
               "leave input-embedding entries at exactly +-1/wd, on rare tokens only, in no other "
               "weight and not when the embedding is trained by AdamW, while the training loss "
               "looks normal"),
        verdict=verdict, measured=rows, settings=dict(cfg), seeds=seeds, source=SOURCE,
        training=True, notes=notes,
        seed_quote=("What I observed first: 1. some tokens' embedding components have become "
                    "+-100; 2. a small number of other tokens' components are heading towards "
                    "+-100; 3. these tokens all look fairly low-frequency; 4. the maximum of the "
                    "whole embedding matrix is exactly 100 and its minimum exactly -100; 5. apart "
                    "from the embedding, no other weight has this problem; 6. the model's overall "
                    "behaviour (e.g. training loss, generation tests) is normal. ... A similar "
                    "phenomenon does not appear with Adam; it is a problem peculiar to optimizers "
                    "with a sign function, such as Tiger or Lion."))


def _prevents(results: dict, remedy: str, seeds: list[int]) -> bool:
    """Whether the remedy's entries and rows at the bound fall to at most ``FIX_SHARE`` of dense
    Tiger's (means over seeds); never when dense Tiger has none to prevent."""
    for key in ("entries_at_bound", "saturated_rows"):
        dense, ours = (_mean(_values(results, m, key, seeds)) for m in ("tiger", remedy))
        if not (dense > 0 and ours <= FIX_SHARE * dense):
            return False
    return True


def _costs(results: dict, method: str, other: str, seeds: list[int]) -> list[str]:
    """The held-out bands where ``method``'s loss is higher than ``other``'s (paired 95% interval
    above 0), and "<band> (not measured)" where no held-out position falls in a band."""
    costs = []
    for key, label in LOSS_BANDS:
        differences = _differences(results, method, other, key, seeds)
        if differences is None:
            costs.append(f"{label} (not measured)")
        elif _above(differences):
            costs.append(label)
    return costs


def _remedies_claim(results: dict, seeds: list[int], cfg: dict[str, Any], data: str) -> Claim:
    rows, prevented, clean = [], [], []
    for remedy in REMEDIES:
        prevents, costs = _prevents(results, remedy, seeds), _costs(results, remedy, "tiger",
                                                                     seeds)
        prevented += [remedy] if prevents else []
        clean += [remedy] if prevents and not costs else []
        rows.append({
            "remedy": LABELS[remedy],
            "entries_at_bound": fmt_mean_ci(_values(results, remedy, "entries_at_bound", seeds)),
            "saturated rows": fmt_mean_ci(_values(results, remedy, "saturated_rows", seeds)),
            **{f"{label} held-out loss minus dense Tiger": _text(
                _differences(results, remedy, "tiger", key, seeds)) for key, label in LOSS_BANDS},
            "prevents the pile-up": prevents,
            "costs (interval above 0)": ", ".join(costs) or "none",
        })
    rows.append({"remedy": "(dense Tiger)",
                 "entries_at_bound": fmt_mean_ci(_values(results, "tiger", "entries_at_bound",
                                                         seeds)),
                 "saturated rows": fmt_mean_ci(_values(results, "tiger", "saturated_rows", seeds))})
    own = "; ".join(f"{label} {fmt_mean_ci(_values(results, 'tiger', key, seeds))}"
                    for key, label in LOSS_BANDS
                    if None not in _values(results, "tiger", key, seeds))
    verdict = ("reproduced" if len(clean) == len(REMEDIES)
               else "partly" if prevented else "not reproduced")
    nothing = "" if _mean(_values(results, "tiger", "entries_at_bound", seeds)) else (
        "Dense Tiger left no entry at the bound, so no remedy had anything to prevent. ")
    notes = (f"{data}. {nothing}Rule: a remedy prevents the pile-up when its entries at +-1/wd "
             f"AND its saturated rows (>= {cfg['row_fraction']:.0%} of a row within "
             f"{cfg['row_tolerance']:.0%}) fall to at most {FIX_SHARE:.0%} of dense Tiger's (mean "
             "over seeds); it costs a held-out band when the paired 95% interval of its loss minus "
             "dense Tiger's lies above 0 (overall; positions whose input token was seen >= "
             f"{cfg['frequent_min_count']} times in training; seen 1-{cfg['rare_max_count']} "
             "times). Reproduced when every remedy prevents it at no cost in any band; partly "
             f"when some prevent it; not reproduced when none does. Prevent it: "
             f"{[LABELS[r] for r in prevented] or 'none'}; without any cost: "
             f"{[LABELS[r] for r in clean] or 'none'}. A lower loss than dense Tiger's (interval "
             f"below 0) is a gain; see paired_differences.png. Dense Tiger's own held-out loss "
             f"(nats): {own}.")
    return Claim(
        claim=("Each remedy (lazy rows, plain tied embedding, half-swap tied embedding, AdamW for "
               "the embeddings) prevents the pile-up without costing held-out loss (overall, on "
               "frequent or on rare input tokens) against dense Tiger"),
        verdict=verdict, measured=rows, settings=dict(cfg), seeds=seeds, source=SOURCE,
        training=True, notes=notes,
        seed_quote=("A natural solution is to make the embedding's update lazy, i.e. to update a "
                    "token's embedding only when the token has appeared. ... Another idea is to "
                    "make the embedding's gradient no longer sparse, with tied embeddings: since "
                    "the output reuses the whole embedding matrix, the whole matrix has nonzero "
                    "gradients, so m_t does not stay constant for long. ... [Lion's authors'] "
                    "solution is a mixed optimizer, e.g. Adam for the embedding layer and "
                    "Lion/Tiger for the others ... it does solve the problem."))


def _seed_settings_rows(seed_runs: dict[str, dict[str, Any]], cfg: dict[str, Any]
                        ) -> list[dict[str, Any]]:
    """One row per quantity for the run at the seed's own settings (one seed, no interval)."""
    bound = 1.0 / SEED_SETTINGS["weight_decay"]
    dense, lazy = seed_runs["tiger"], seed_runs["tiger_lazy"]
    label = (f"seed settings (lr {SEED_SETTINGS['lr']:g}, wd {SEED_SETTINGS['weight_decay']:g}, "
             f"{cfg['seed_settings_steps']} steps, 1 seed; shown, not in the verdict)")
    rows = [{"run": label, "quantity": key, "dense Tiger": dense[key], "lazy Tiger": lazy[key],
             "dense - lazy (paired)": None if None in (dense[key], lazy[key])
             else round(dense[key] - lazy[key], 4)}
            for key in ("eval_loss_rare", "train_loss", "eval_loss", "eval_loss_frequent")]
    rows += [{"run": label, "quantity": key, "dense Tiger": dense[key], "lazy Tiger": lazy[key]}
             for key in ("entries_at_bound", "saturated_rows", "first_step_drifting")]
    rows.append({"run": label, "quantity": "max |entry| / bound",
                 "dense Tiger": round(dense["max_abs_embedding"] / bound, 3),
                 "lazy Tiger": round(lazy["max_abs_embedding"] / bound, 3)})
    return rows


def _hidden_cost_claim(results: dict, seeds: list[int], cfg: dict[str, Any], data: str,
                       seed_runs: dict[str, dict[str, Any]]) -> Claim:
    keys = ("eval_loss_rare", "train_loss", "eval_loss", "eval_loss_frequent")
    main = f"claim (lr {cfg['lr']:g}, wd {cfg['weight_decay']:g}, {cfg['steps']} steps)"
    rows = [{"run": main, "quantity": key,
             "dense Tiger": fmt_mean_ci(_values(results, "tiger", key, seeds))
             if None not in _values(results, "tiger", key, seeds) else None,
             "lazy Tiger": fmt_mean_ci(_values(results, "tiger_lazy", key, seeds))
             if None not in _values(results, "tiger_lazy", key, seeds) else None,
             "dense - lazy (paired)": _text(_differences(results, "tiger", "tiger_lazy", key,
                                                         seeds))}
            for key in keys]
    rows += _seed_settings_rows(seed_runs, cfg)
    rare = _differences(results, "tiger", "tiger_lazy", "eval_loss_rare", seeds)
    train = _differences(results, "tiger", "tiger_lazy", "train_loss", seeds)
    hidden = _below(train, TRAIN_LOSS_TOLERANCE)
    verdict = ("reproduced" if _above(rare) and hidden
               else "not reproduced" if rare is None or _below(rare) else "partly")
    positions = results[("tiger", seeds[0])]
    seed_rare = seed_runs["tiger"]["eval_loss_rare"], seed_runs["tiger_lazy"]["eval_loss_rare"]
    seed_rare_text = ("" if None in seed_rare else f"dense Tiger's rare-input loss is "
                      f"{seed_rare[0]:.3g} against lazy's {seed_rare[1]:.3g} and ")
    drift = seed_runs["tiger"]["first_step_drifting"]
    drift_text = ("the drift warning does not fire" if drift is None
                  else f"the drift warning fires at step {drift}")
    notes = (f"{data}. Held-out positions: {positions['eval_positions']}, of which "
             f"{positions['eval_positions_rare']} have an input token seen 1-"
             f"{cfg['rare_max_count']} times in training and "
             f"{positions['eval_positions_frequent']} one seen >= {cfg['frequent_min_count']} "
             "times. Rule: reproduced when the paired 95% interval of dense minus lazy Tiger at "
             "rare-input positions lies above 0 while the "
             f"one of the training loss lies below +{TRAIN_LOSS_TOLERANCE:g} nats (the cost does "
             "not show in training); not reproduced when the rare-input interval lies below 0 (or "
             "nothing was measured); partly otherwise. The 'seed settings' rows are one seed at "
             "the post's weight decay and the released README's rate: "
             f"{seed_runs['tiger']['entries_at_bound']} of dense Tiger's entries are at +-100 "
             f"after {cfg['seed_settings_steps']} steps (the bound is 10x farther than at wd "
             f"{cfg['weight_decay']:g}); {seed_rare_text}"
             f"{drift_text} (saturation.png, right).")
    return Claim(
        claim=("The pile-up costs rare tokens: dense Tiger's held-out loss at positions with a "
               "rare input token is higher than lazy Tiger's, although its training loss is not"),
        verdict=verdict, measured=rows, settings={**cfg, "seed_settings": SEED_SETTINGS},
        seeds=seeds, source=SOURCE, training=True, notes=notes,
        seed_quote=("Some abilities do not show in the loss: a Chinese-English pre-trained model, "
                    "for example, usually shows some multilingual ability because its training "
                    "corpus contains a very little multilingual text; this ability clearly depends "
                    "on the quality of the low-frequency tokens' embeddings, and losing it because "
                    "the optimizer dragged them down would be a heavy loss. (Observation 6: the "
                    "model's overall behaviour, e.g. training loss, is normal.)"))


def _half_swap_claim(results: dict, seeds: list[int], cfg: dict[str, Any], data: str) -> Claim:
    rows, verdicts = [], []
    half_swap = "tiger_half_swap_tied"
    for other in ("tiger", "tiger_lazy"):
        overall = _differences(results, half_swap, other, "eval_loss", seeds)
        verdicts.append("reproduced" if _below(overall)
                        else "not reproduced" if _above(overall) else "partly")
        rows.append({"untied model": LABELS[other],
                     "half-swap tied held-out loss": fmt_mean_ci(
                         _values(results, half_swap, "eval_loss", seeds)),
                     "untied held-out loss": fmt_mean_ci(_values(results, other, "eval_loss",
                                                                 seeds)),
                     **{f"tied - untied, {label} (paired)": _text(
                         _differences(results, half_swap, other, key, seeds))
                        for key, label in LOSS_BANDS}})
    prevents = _prevents(results, half_swap, seeds)
    rows.append({"untied model": "pile-up prevented (vs dense Tiger)",
                 "half-swap tied held-out loss": prevents})
    verdict = verdicts[0] if verdicts[0] == verdicts[1] else "partly"
    if verdict == "reproduced" and not prevents:
        verdict = "partly"
    notes = (f"{data}. Rule: reproduced when the half-swap tied model prevents the pile-up (as in "
             "the remedies claim) and the paired 95% interval of its overall held-out loss minus "
             "the untied model's lies below 0 against both untied models (dense Tiger, the seed's "
             "setting, and lazy Tiger); not reproduced when it lies above 0 against both; partly "
             f"otherwise. Seeds: {len(seeds)} paired.")
    return Claim(
        claim=("The tied embedding with the two halves of the channels swapped prevents the "
               "pile-up and works slightly better (lower overall held-out loss) than an untied "
               "one"),
        verdict=verdict, measured=rows, settings=dict(cfg), seeds=seeds, source=SOURCE,
        training=True, notes=notes,
        seed_quote=("In my experiments, a tied embedding with the model's feature channels "
                    "swapped in halves solves the above problem, and its results even seem "
                    "slightly better than an untied embedding's."))


def _paired_plot(results: dict, seeds: list[int], cfg: dict[str, Any], short: str,
                 path: Path) -> None:
    """Per-seed differences (method - dense Tiger, and half-swap - lazy) that the claims read."""
    comparisons = [(LABELS[r], r, "tiger") for r in REMEDIES]
    comparisons.append(("half-swap - lazy", "tiger_half_swap_tied", "tiger_lazy"))
    metrics = [(key, f"{label} held-out loss") for key, label in LOSS_BANDS]
    metrics += [("train_loss", "training loss"), ("entries_at_bound", "entries at +-1/wd")]
    panels = []
    for key, metric in metrics:
        rows = [(f"{name} - dense" if other == "tiger" else name, differences)
                for name, method, other in comparisons
                if (differences := _differences(results, method, other, key, seeds)) is not None
                and not (key == "entries_at_bound" and other != "tiger")]
        if rows:
            panels.append(PairedPanel(metric, "lower", rows))
    plot_paired_differences(path, panels, title=(
        "Per-seed differences, method - dense Tiger (last row: half-swap - lazy); < 0: lower "
        f"than dense Tiger\n{short}, V={cfg['vocab']}, lr {cfg['lr']:g}, wd "
        f"{cfg['weight_decay']:g}, {cfg['steps']} steps, {len(seeds)} paired seed(s)"))


def _saturation_plot(results: dict, seed: int, seed_runs: dict[str, dict[str, Any]],
                     cfg: dict[str, Any], path: Path) -> None:
    """Saturated and drifting rows over training: the claims' run (one seed) and the run at the
    seed's own settings, side by side, with one legend under both."""
    fig, axes = new_figure(1, 2, figsize=(10, 4.2))
    panels = [(axes[0], {m: results[(m, seed)] for m in (*SIGN_METHODS, "tiger_adamw_embeddings")},
               cfg, f"claims' run: lr {cfg['lr']:g}, wd {cfg['weight_decay']:g}, seed {seed}"),
              (axes[1], seed_runs, _seed_cfg(cfg),
               f"seed settings: lr {SEED_SETTINGS['lr']:g}, wd {SEED_SETTINGS['weight_decay']:g}, "
               f"seed {seed}")]
    colors = {m: f"C{i}" for i, m in enumerate(METHODS)}
    for ax, runs, run_cfg, title in panels:
        for method, run in runs.items():
            ax.plot(run["curve_steps"], run["drifting_curve"], ls="--", color=colors[method],
                    label=f"{LABELS[method]}: drifting (no gradient, early warning)")
            ax.plot(run["curve_steps"], run["saturated_curve"], color=colors[method],
                    label=f"{LABELS[method]}: saturated rows (at +-1/wd)")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlabel("step")
        ax.set_title(f"{title}\nbound 1/wd = {1 / run_cfg['weight_decay']:g}, "
                     f"{run_cfg['steps']} steps", fontsize=9)
    axes[0].set_ylabel(f"rows of the input embedding (of {cfg['vocab']}; symlog)")
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle(f"Rows at the bound and the drift warning (a row's norm grew >= "
                 f"{cfg['warn_drift']:.0%} of the bound's norm while its gradient was 0)",
                 fontsize=10)
    save_figure(fig, path)


def _plots(results: dict, seeds: list[int], cfg: dict[str, Any], data: str,
           seed_runs: dict[str, dict[str, Any]], out_dir: Path) -> list[str]:
    bound = 1.0 / cfg["weight_decay"]
    seed = seeds[0]
    short = data.split(":")[0]
    fig, axes = new_figure(len(METHODS), 1, figsize=(7, 1.6 * len(METHODS)), sharex=True)
    bins = np.linspace(-1.1 * bound, 1.1 * bound, 221)
    for ax, method in zip(axes, METHODS, strict=True):
        values = results[(method, seed)]["embedding"].flatten().numpy()
        ax.hist(values, bins=bins, log=True)
        ax.tick_params(axis="y", which="minor", labelleft=False)
        for x in (-bound, bound):
            ax.axvline(x, color="red", lw=0.8, ls="--")
        ax.set_ylabel("entries")
        ax.set_title(f"{LABELS[method]}: {int(results[(method, seed)]['entries_at_bound'])} "
                     f"entries within {cfg['entry_tolerance']:.0%} of +-1/wd", fontsize=8)
    axes[-1].set_xlabel(f"input-embedding entry (dashed: +-1/wd = +-{bound:g})")
    fig.suptitle(f"{short}, V={cfg['vocab']}, {cfg['steps']} steps, seed {seed}", fontsize=9)
    save_figure(fig, out_dir / "embedding_values.png")

    fig, ax = new_figure(figsize=(8, 4))
    methods = list(METHODS)
    bands = [(key, label) for key, label in LOSS_BANDS
             if None not in (v for m in methods for v in _values(results, m, key, seeds))]
    width = 0.8 / len(bands)
    for offset, (key, label) in enumerate(bands):
        summaries = [mean_ci(_values(results, m, key, seeds)) for m in methods]
        means = [s["mean"] for s in summaries]
        errors = None
        if len(seeds) > 1:
            errors = [[s["mean"] - s["ci95"][0] for s in summaries],
                      [s["ci95"][1] - s["mean"] for s in summaries]]
        ax.bar(np.arange(len(methods)) + width * offset, means, width=width, yerr=errors,
               label=label, capsize=3)
    ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, [LABELS[m] for m in methods],
                  fontsize=8)
    ax.set_ylabel("held-out cross-entropy (nats)")
    ax.set_title(f"Held-out loss by input-token frequency (bars from 0)\n{short}; {len(seeds)} "
                 "seed(s); error bars: 95% intervals of the means when > 1", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, out_dir / "held_out_loss.png")

    _saturation_plot(results, seed, seed_runs, cfg, out_dir / "saturation.png")
    _paired_plot(results, seeds, cfg, short, out_dir / "paired_differences.png")
    return ["paired_differences.png", "embedding_values.png", "held_out_loss.png",
            "saturation.png"]


NUMBER_KEYS = ("train_loss", "eval_loss", "eval_loss_rare", "eval_loss_frequent",
               "entries_at_bound", "entries_at_bound_rare_tokens", "entries_at_bound_other_weights",
               "saturated_rows", "saturated_rows_rare", "max_abs_embedding",
               "first_step_drifting", "first_step_saturated")


def run(ctx: Context) -> Result:
    cfg = {**COMMON, **SETTINGS[ctx.size]}
    corpus, data = _load(ctx, cfg)
    seeds = [ctx.seed + i for i in range(cfg["n_seeds"])]
    # the longest runs first, so that the two workers finish together
    seed_jobs = [(method, seeds[0], _seed_cfg(cfg)) for method in ("tiger", "tiger_lazy")]
    jobs = seed_jobs + [(method, seed, cfg) for seed in seeds for method in METHODS]
    runs = run_all(jobs, corpus, cfg["workers"], ctx.progress)
    seed_runs = {r["method"]: r for r in runs[:len(seed_jobs)]}
    results = {(r["method"], r["seed"]): r for r in runs[len(seed_jobs):]}
    claims = [_pile_up_claim(results, seeds, cfg, data),
              _remedies_claim(results, seeds, cfg, data),
              _hidden_cost_claim(results, seeds, cfg, data, seed_runs),
              _half_swap_claim(results, seeds, cfg, data)]
    numbers: dict[str, Any] = {
        key: {m: _values(results, m, key, seeds) for m in METHODS} for key in NUMBER_KEYS}
    numbers["seeds"] = seeds
    numbers["seed_settings"] = {"settings": SEED_SETTINGS, "steps": cfg["seed_settings_steps"],
                                "seed": seeds[0], **{m: {k: r[k] for k in NUMBER_KEYS}
                                                     for m, r in seed_runs.items()}}
    numbers["steps_to_95_percent_of_bound_constant_sign"] = {
        "claims": round(_steps_to_bound(cfg)), "seed_settings": round(_steps_to_bound(
            _seed_cfg(cfg)))}
    plots = _plots(results, seeds, cfg, data, seed_runs, ctx.out_dir)
    return Result(name="optim", title=TITLE, data=data, claims=claims, numbers=numbers,
                  plots=plots)
