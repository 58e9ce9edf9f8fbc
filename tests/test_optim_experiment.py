"""The optimizer experiment's verdicts follow its numbers, and its pieces do what they say."""

import math

import pytest
import torch
from torch import nn

from logitkit.experiments import optim as experiment
from logitkit.experiments._optim_runs import (
    METHODS,
    build_corpus,
    build_model,
    build_optimizer,
    expected_saturation_steps,
)
from logitkit.optim import HalfSwapTiedHead, Tiger

CFG = {**experiment.COMMON, **experiment.SETTINGS["smoke"]}


def _result(method, seed, *, entries=0, rare_entries=None, others=0, rows=0, rare_loss=6.0,
            loss=5.0, train=4.8):
    return {
        "method": method, "seed": seed, "entries_at_bound": entries,
        "entries_at_bound_rarer_half": entries if rare_entries is None else rare_entries,
        "rarer_half_max_count": 11,
        "entries_at_bound_by_training_count": {"1-5": entries, ">100": 0},
        "tokens_with_entries_at_bound": entries // 10,
        "median_count_of_tokens_with_entries_at_bound": 1.0 if entries else None,
        "entries_at_bound_other_weights": others, "saturated_rows": rows,
        "max_abs_embedding": 9.9 if entries else 1.0, "train_loss": train, "eval_loss": loss,
        "eval_loss_rare": rare_loss, "eval_loss_frequent": loss - 0.1,
        "eval_positions": 1000, "eval_positions_rare": 50, "eval_positions_frequent": 500,
    }


def _results(seeds=(0, 1, 2), **overrides):
    """Dense Tiger and Lion pile up (entries on rare tokens, rows saturated, rare loss 7); every
    remedy and AdamW is clean with rare loss 6.3; ``overrides``: method -> keyword changes."""
    out = {}
    for seed in seeds:
        jitter = 0.01 * seed
        for method in METHODS:
            piled = method in ("tiger", "lion")
            options = {"entries": 100 if piled else 0, "rows": 15 if piled else 0,
                       "rare_loss": (7.0 if piled else 6.3) + jitter, "train": 4.8 + jitter}
            options.update(overrides.get(method, {}))
            out[(method, seed)] = _result(method, seed, **options)
    return out


def test_the_seed_story_is_reproduced_when_the_numbers_show_it():
    results, seeds = _results(), [0, 1, 2]
    claims = [f(results, seeds, CFG, "data") for f in (
        experiment._pile_up_claim, experiment._remedies_claim, experiment._hidden_cost_claim)]
    assert [c.verdict for c in claims] == ["reproduced"] * 3


@pytest.mark.parametrize("overrides, verdict", [
    ({"tiger": {"entries": 0, "rows": 0}, "lion": {"entries": 0, "rows": 0}}, "not reproduced"),
    ({"tiger": {"rare_entries": 80}}, "partly"),  # a fifth of the entries on frequent tokens
    ({"lion": {"others": 4}}, "partly"),  # another weight at the bound too
    ({"adamw": {"entries": 3}}, "partly"),  # AdamW does it as well
    ({"tiger": {"train": 5.5}}, "partly"),  # the training loss gives it away
])
def test_pile_up_verdict(overrides, verdict):
    claim = experiment._pile_up_claim(_results(**overrides), [0, 1, 2], CFG, "data")
    assert claim.verdict == verdict


def test_a_remedy_fixes_only_if_rows_and_entries_fall_and_rare_loss_is_not_worse():
    overrides = {"tiger_tied": {"entries": 3000, "rows": 0},  # rows fell, entries did not
                 "tiger_half_swap_tied": {"rare_loss": 7.2},  # clean but worse for rare tokens
                 "tiger_adamw_embeddings": {"rows": 5}}  # a third of the rows remain
    claim = experiment._remedies_claim(_results(**overrides), [0, 1, 2], CFG, "data")
    fixes = {row["remedy"]: row.get("fixes") for row in claim.measured}
    assert fixes == {"tiger_lazy": True, "tiger_tied": False, "tiger_half_swap_tied": False,
                     "tiger_adamw_embeddings": False, "(dense tiger)": None}
    assert claim.verdict == "partly"
    clean = experiment._remedies_claim(_results(tiger={"entries": 0, "rows": 0}), [0, 1, 2], CFG,
                                       "data")
    assert clean.verdict == "inconclusive"  # dense Tiger made no pile-up: nothing to prevent


def test_hidden_cost_needs_an_interval_above_zero_or_one_clear_seed():
    noisy = _results()
    for seed, delta in zip((0, 1, 2), (0.5, -0.4, 0.02), strict=True):
        noisy[("tiger", seed)]["eval_loss_rare"] = noisy[("tiger_lazy", seed)]["eval_loss_rare"] \
            + delta
    assert experiment._hidden_cost_claim(noisy, [0, 1, 2], CFG, "data").verdict == "partly"
    one = _results(seeds=(0,))
    assert experiment._hidden_cost_claim(one, [0], CFG, "data").verdict == "reproduced"
    one[("tiger", 0)]["eval_loss_rare"] = one[("tiger_lazy", 0)]["eval_loss_rare"] - 0.1
    assert experiment._hidden_cost_claim(one, [0], CFG, "data").verdict == "not reproduced"
    for seed in (0, 1, 2):
        noisy[("tiger", seed)]["eval_positions_rare"] = 0
    assert experiment._hidden_cost_claim(noisy, [0, 1, 2], CFG, "data").verdict == \
        "inconclusive"  # no rare-input position held out: nothing measured


def test_half_swap_claim_compares_with_both_untied_models():
    results = _results(tiger_half_swap_tied={"loss": 4.9})
    assert experiment._half_swap_claim(results, [0, 1, 2], CFG, "d").verdict == "reproduced"
    results = _results(tiger_half_swap_tied={"loss": 5.2})
    assert experiment._half_swap_claim(results, [0, 1, 2], CFG, "d").verdict == "not reproduced"


def test_corpus_counts_and_vocabulary():
    corpus = build_corpus("a b a c a b d", "a e b", vocab=3)
    assert corpus.vocab == 3 and corpus.train.tolist() == [0, 1, 0, 2, 0, 1, 2]
    assert corpus.held_out.tolist() == [0, 2, 1] and corpus.counts.tolist() == [3, 2, 2]
    assert build_corpus("a b c d", "a", vocab=4, train_words=2).train.tolist() == [0, 1]


def test_models_and_optimizers_of_each_method():
    cfg = {**CFG, "vocab": 50}
    for method, spec in METHODS.items():
        model = build_model(method, cfg, seed=0, vocab=50)
        optimizer = build_optimizer(method, model, cfg)
        tied = {"none": model.head.weight is not model.embed.weight,
                "plain": model.head.weight is model.embed.weight,
                "half_swap": isinstance(model.head, HalfSwapTiedHead)}
        assert tied[spec["tie"]], method
        by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        embed = by_param[id(model.embed.weight)]
        expected = "adamw" if spec["embeddings"] == "adamw" else "sign"
        assert embed["algorithm"] == expected, method
        if spec["optimizer"] != "adamw":
            assert embed["relative_lr"] == ("row" if expected == "sign" else False)
            assert embed["lazy"] == (spec["embeddings"] == "lazy")
        torch.testing.assert_close(model.embed.weight.std().item(), 32**-0.5, rtol=0.1, atol=0)


def test_expected_saturation_steps_matches_a_simulation():
    """A row of equal entries pushed with a constant sign under the relative rule."""
    lr, wd, start = 0.01, 0.1, 0.5
    row = nn.Parameter(torch.full((1, 4), start, dtype=torch.float64))
    optimizer = Tiger([row], lr=lr, weight_decay=wd, relative_lr="row")
    steps = 0
    while row[0, 0].item() < 0.95 / wd:
        row.grad = -torch.ones_like(row)
        optimizer.step()
        steps += 1
    assert math.isclose(steps, expected_saturation_steps(lr, wd, start), rel_tol=0.02)
