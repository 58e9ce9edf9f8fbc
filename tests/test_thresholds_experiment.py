"""The decision-weights experiment: its data, paired runs and verdict rule."""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from logitkit.experiments import thresholds as experiment  # noqa: E402
from logitkit.experiments._framework import Context  # noqa: E402


def test_data_follow_the_balanced_and_zipf_priors():
    data = experiment.draw_data(seed=1, largest=3000)
    n = experiment.N_CLASSES
    train_counts = np.bincount(data["train"][1], minlength=n)
    assert train_counts.tolist() == [experiment.TRAIN_PER_CLASS] * n
    test_share = np.bincount(data["test"][1], minlength=n) / experiment.TEST_ROWS
    np.testing.assert_allclose(test_share, experiment.deployment_prior(), atol=0.015)
    val = data["val"][1]
    assert val.size == 3000
    # prefixes are random samples of the same prior (the first class stays the most frequent)
    assert np.bincount(val[:300], minlength=n).argmax() == 0


def test_without_a_shift_training_follows_the_zipf_prior_too():
    data = experiment.draw_data(seed=2, largest=1000, scenario="no_shift")
    n = experiment.N_CLASSES
    train = np.bincount(data["train"][1], minlength=n)
    assert train.sum() == experiment.TRAIN_PER_CLASS * n
    np.testing.assert_allclose(train / train.sum(), experiment.deployment_prior(), atol=0.03)
    assert train[0] > 4 * train[-1]  # imbalanced, as the post's setting asks
    # the rows of the three parts are distinct rows of the pool
    rows = np.concatenate([data[p][0] for p in ("train", "val", "test")])
    assert np.unique(rows, axis=0).shape[0] == rows.shape[0]
    with pytest.raises(ValueError, match="scenario"):
        experiment.draw_data(seed=2, largest=10, scenario="drift")


def test_one_seed_scores_every_method_on_the_same_rows():
    out = experiment.one_seed("naive_bayes", 0, (100, 300))
    for size in (100, 300):
        for method in experiment.METHODS:
            for part in ("val", "test"):
                assert 0.0 <= out[(size, method, part)] <= 1.0
        # argmax does not depend on the validation size; the tuned rule reaches at least
        # argmax's validation accuracy (it starts there)
        assert out[(size, "argmax", "test")] == out[(100, "argmax", "test")]
        assert out[(size, "ours", "val")] >= out[(size, "argmax", "val")]
        assert out[(size, "ours", "val")] >= out[(size, "powell", "val")]


def test_verdict_rule_follows_the_intervals():
    up = {"mean": 0.02, "ci95": [0.01, 0.03]}
    unsure = {"mean": 0.01, "ci95": [-0.01, 0.03]}
    down = {"mean": -0.01, "ci95": [-0.02, 0.0]}
    assert experiment._verdict([up, up]) == "reproduced"
    assert experiment._verdict([up, unsure]) == "partly"
    assert experiment._verdict([down, down]) == "not reproduced"


@pytest.mark.slow
def test_smoke_run_writes_claims_and_a_plot(tmp_path):
    result = experiment.run(Context(size="smoke", out_dir=tmp_path))
    assert [c.verdict in ("reproduced", "partly", "not reproduced") for c in result.claims] == [
        True, True, True]
    assert all(c.seed_quote and c.training for c in result.claims)
    assert (tmp_path / result.plots[0]).stat().st_size > 0
    assert {s: set(m) for s, m in result.numbers.items()} == {"no_shift": {"naive_bayes"},
                                                               "shift": {"naive_bayes"}}
