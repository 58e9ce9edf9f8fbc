"""Helpers of the tailr experiment: window corruption, scoring, label noise, verdicts."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("sklearn")

from logitkit.experiments import _label_noise as noise  # noqa: E402
from logitkit.experiments import _lm_finetune as lm  # noqa: E402
from logitkit.experiments import _tailr_generation as generation  # noqa: E402
from logitkit.experiments import tailr as experiment  # noqa: E402


def _windows(count=20, length=9, vocab=50, seed=0):
    return torch.randint(0, vocab, (count, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", generation.CORRUPTIONS)
@pytest.mark.parametrize("share", [0.0, 0.35, 0.4, 1.0])
def test_corruption_changes_the_share_asked_for_and_keeps_shape_and_vocabulary(mode, share):
    windows = _windows()
    corrupted, mask = generation.corrupt_windows(windows, share, mode, 50,
                                                 torch.Generator().manual_seed(1))
    assert corrupted.shape == windows.shape and corrupted.dtype == windows.dtype
    assert int(mask.sum()) == round(share * windows.shape[0])
    for row in range(windows.shape[0]):
        if not mask[row]:
            assert torch.equal(corrupted[row], windows[row])
        elif mode == "shuffle":  # the row's own tokens, in another order
            assert sorted(corrupted[row].tolist()) == sorted(windows[row].tolist())
        else:
            assert all(0 <= token < 50 for token in corrupted[row].tolist())
    if share > 0:  # something did change
        assert not torch.equal(corrupted[mask], windows[mask])
    again, mask_again = generation.corrupt_windows(windows, share, mode, 50,
                                                   torch.Generator().manual_seed(1))
    assert torch.equal(again, corrupted) and torch.equal(mask_again, mask)


def test_random_corruption_draws_ids_uniformly_from_the_whole_vocabulary():
    windows = torch.zeros(400, 25, dtype=torch.long)
    corrupted, mask = generation.corrupt_windows(windows, 1.0, "random", 10,
                                                 torch.Generator().manual_seed(2))
    counts = [int((corrupted == token).sum()) for token in range(10)]
    assert all(abs(c / 10_000 - 0.1) < 0.01 for c in counts)


def test_corruption_rejects_an_unknown_mode_or_share():
    with pytest.raises(ValueError, match="mode"):
        generation.corrupt_windows(_windows(), 0.4, "reverse", 50, torch.Generator())
    with pytest.raises(ValueError, match="share"):
        generation.corrupt_windows(_windows(), 1.5, "random", 50, torch.Generator())


@pytest.mark.parametrize("n", [1, 2, 3])
def test_distinct_n_against_a_loop(n):
    samples = torch.tensor([[1, 2, 1, 2, 3], [1, 2, 4, 4, 4], [3, 1, 2, 1, 2]])
    grams = [tuple(row[i:i + n]) for row in samples.tolist() for i in range(len(row) - n + 1)]
    assert lm.distinct_n(samples, n) == pytest.approx(len(set(grams)) / len(grams))


def test_mean_nll_scores_only_the_marked_tokens_like_the_whole_model():
    model, _ = lm.tiny_random_llama(seed=3)
    split = lm.split_model(model, trainable_layers=1)
    ids = torch.randint(0, 256, (3, 11), generator=torch.Generator().manual_seed(4))
    targets = ids[:, 1:].clone()
    targets[:, :4] = -100  # e.g. a prompt
    cached = lm.cache_lower(split, ids[:, :-1], batch=2)
    with torch.no_grad():
        log_p = torch.log_softmax(model(ids[:, :-1]).logits.double(), -1)
    scored = [-float(log_p[r, t, targets[r, t]]) for r in range(3) for t in range(10)
              if targets[r, t] != -100]
    expected = sum(scored) / len(scored)
    assert generation.mean_nll(split, cached, targets, batch=2) == pytest.approx(expected,
                                                                                 rel=1e-4)


def test_the_arms_losses_are_ce_and_tailr_with_and_without_the_threshold():
    cfg = experiment.SETTINGS["smoke"].generation
    gen = torch.Generator().manual_seed(5)
    hidden, head = torch.randn(6, 4, generator=gen), torch.randn(7, 4, generator=gen)
    target = torch.randint(0, 7, (6,), generator=gen)
    p = torch.softmax((hidden @ head.T).double(), -1)[torch.arange(6), target]
    weight = p / (cfg.gamma + (1 - cfg.gamma) * p)
    expected = {
        "ce clean": -p.log().mean(),
        "ce": -p.log().mean(),
        "tailr b": (-torch.clamp(weight, min=cfg.threshold) * p.log()).mean(),
        "tailr": (-(cfg.gamma + (1 - cfg.gamma) * p).log() / (1 - cfg.gamma)).mean(),
    }
    for arm in generation.ARMS:
        value = generation.arm_loss(arm, cfg)(hidden, head, target)
        assert float(value) == pytest.approx(float(expected[arm]), rel=1e-5), arm


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


def test_sgd_takes_plain_gradient_steps_and_an_unknown_optimiser_is_refused():
    data = noise.noisy_digits(0.4, seed=0)
    start = noise.mlp(8, seed=1)
    trained = noise.train(data, gamma=None, threshold=None, epochs=1, width=8,
                          batch=data.train_x.shape[0], lr=0.5, seed=1, optimizer="sgd")
    loss = torch.nn.functional.cross_entropy(start(data.train_x), data.train_noisy)
    grads = torch.autograd.grad(loss, list(start.parameters()))
    for before, grad, after in zip(start.parameters(), grads, trained.parameters(), strict=True):
        torch.testing.assert_close(after, before - 0.5 * grad, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="optimizer"):
        noise.train(data, gamma=None, threshold=None, epochs=1, width=8, batch=64, lr=0.1,
                    seed=1, optimizer="lion")


@pytest.mark.parametrize("ours,theirs,better,outcome", [
    ([0.8, 0.86, 0.92], [0.7, 0.75, 0.8], "higher", "better"),  # interval above 0
    ([0.9, 0.8, 0.85], [0.7, 0.75, 0.8], "higher", "no difference"),  # interval includes 0
    ([10.0, 11.0, 12.0], [12.0, 13.1, 13.9], "lower", "better"),
    ([10.0, 11.0, 12.0], [12.0, 13.1, 13.9], "higher", "worse"),
    ([10.0], [12.0], "lower", "no difference"),  # one seed: no interval
])
def test_a_difference_is_decided_by_its_paired_interval(ours, theirs, better, outcome):
    assert experiment._difference(ours, theirs, better)[0] == outcome


def _part(perplexity, sample_nll):
    """A fake generation result: per arm, three seeds of the two judged metrics."""
    return {"per_seed": {arm: [{"perplexity": p, "sample_nll": s, "distinct_2": 0.9}
                               for p, s in zip(perplexity[arm], sample_nll[arm], strict=True)]
                         for arm in generation.ARMS},
            "pretrained_perplexity": 60.0, "model": "m", "vocab_size": 9, "corpus": "c",
            "train_windows": 4, "corrupted_windows_per_seed": 2, "heldout_tokens_scored": 8}


@pytest.mark.parametrize("tailr_b,tailr,verdict", [
    (([40.0, 41.0, 42.0], [2.0, 2.1, 2.2]), ([60.0, 61.0, 62.0], [5.0, 5.1, 5.2]), "reproduced"),
    (([40.0, 41.0, 42.0], [5.0, 5.1, 5.2]), ([60.0, 61.0, 62.0], [5.0, 5.1, 5.2]), "partly"),
    (([60.0, 61.0, 62.0], [5.0, 5.1, 5.2]), ([40.0, 41.0, 42.0], [5.0, 5.1, 5.2]), "partly"),
    (([60.0, 61.0, 62.0], [5.0, 5.1, 5.2]), ([60.0, 61.0, 62.0], [5.0, 5.1, 5.2]),
     "not reproduced"),
])
def test_the_generation_verdict_follows_the_rule_in_its_notes(tailr_b, tailr, verdict):
    ce = ([50.0, 51.0, 52.0], [3.0, 3.1, 3.2])
    clean = ([45.0, 46.0, 47.0], [2.5, 2.6, 2.7])
    arms = {"ce clean": clean, "ce": ce, "tailr b": tailr_b, "tailr": tailr}
    part = _part({a: v[0] for a, v in arms.items()}, {a: v[1] for a, v in arms.items()})
    claim = experiment.generation_claim(part, experiment.SETTINGS["smoke"].generation, [0, 1, 2])
    assert claim.verdict == verdict and claim.training
    assert "hurts CE" in claim.notes  # the control: CE is worse than CE on clean windows


def test_the_label_noise_verdict_is_per_optimiser():
    ce = {"memorised": 0.9, "test_accuracy": 0.7, "test_nll": 2.0, "test_ece": 0.2}
    better = {"memorised": 0.2, "test_accuracy": 0.9, "test_nll": 0.5, "test_ece": 0.05}

    def seeds(values):
        return [{k: v + 0.01 * i for k, v in values.items()} | {"overconfidence": 0.1}
                for i in range(3)]

    results = {"adam 40%": {"ce": seeds(ce), "tailr": seeds(ce)},
               "sgd 40%": {"ce": seeds(ce), "tailr": seeds(better)}}
    cfg = experiment.SETTINGS["quick"].noise
    adam = experiment.noise_claim(results, cfg, "adam", [0, 1, 2])
    sgd = experiment.noise_claim(results, cfg, "sgd", [0, 1, 2])
    assert (adam.verdict, sgd.verdict) == ("not reproduced", "reproduced")
    assert "the TaiLr authors' optimiser" in adam.claim and "they use Adam" in sgd.claim
    assert all(row["noise"] == "40%" for row in sgd.measured)
    under_confident = {**better, "test_ece": 0.4}  # less over-fitting, worse calibration
    results["sgd 40%"]["tailr"] = seeds(under_confident)
    assert experiment.noise_claim(results, cfg, "sgd", [0, 1, 2]).verdict == "partly"


def test_every_size_uses_the_authors_gamma_and_threshold_and_enough_seeds():
    for size, settings in experiment.SETTINGS.items():
        generation_setting = (settings.generation.gamma, settings.generation.threshold)
        assert generation_setting == experiment.AUTHORS_STORIES
        assert settings.seeds >= (1 if size == "smoke" else 3)
        assert math.isclose(settings.generation.corrupt_share, 0.4)
