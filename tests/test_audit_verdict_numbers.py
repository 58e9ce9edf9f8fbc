"""The numbers an audit reports: tie margins, witness margins, box limits, Marian .npz heads."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from logitkit.audit import argmaxable, check_argmaxable
from logitkit.audit.checkpoint import read_head
from logitkit.audit.report import summary

# (weight, bias, box, the tie classes each head must report)
TIE_HEADS = {
    "duplicate rows": (np.array([[1, 0], [0, 1], [-1, -1], [1, 0]], float), None, None, [0, 3]),
    "duplicate rows, equal bias": (np.array([[1, 0], [0, 1], [-1, -1], [1, 0]], float),
                                   np.array([0.5, 0.0, 0.0, 0.5]), None, [0, 3]),
    "duplicate rows, scaled head": (1e-3 * np.array([[2, 1], [0, 3], [-1, -1], [2, 1]], float),
                                    None, None, [0, 3]),
    "midpoint of a facet": (np.array([[1, 0], [0, 1], [0.5, 0.5]]), np.zeros(3), None, [2]),
    "a row tied at a scale": (np.array([[2, 0], [0, 2], [-2, -2], [1, 1]], float), None, None,
                              [3]),
    "a tie in a box": (np.array([[1, 0], [0, 1], [0.4, 0.4]]), np.array([0, 0, -0.1]), 0.5, [2]),
}


@pytest.mark.parametrize("name", list(TIE_HEADS))
def test_tie_margins_are_zero_in_every_output(name: str) -> None:
    weight, bias, box, ties = TIE_HEADS[name]
    result = check_argmaxable(weight, bias, box=box, show_progress=False)
    assert result.tie.tolist() == ties
    is_tie = result.status == "tie"
    assert np.all(result.margin[is_tie] == 0.0)
    assert np.all(result.margin[~is_tie] != 0.0)
    margins = json.loads(result.to_json())["margins"]
    assert [margins[str(k)] for k in ties] == [0.0] * len(ties)
    listed = [line for line in summary(result).splitlines() if line.startswith("  tie ids:")]
    assert listed and listed[0].count("margin 0.00e+00") == len(ties)


def test_tie_margin_is_zero_in_the_plot(tmp_path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from logitkit.audit.report import plot_margins

    weight, bias, box, ties = TIE_HEADS["duplicate rows"]
    result = check_argmaxable(weight, bias, box=box, show_progress=False)
    drawn: dict[str, list[float]] = {}
    scatter = plt.Axes.scatter

    def record(self, x, y, *args, label: str = "", **kwargs):
        drawn[label.split()[0]] = np.asarray(y).tolist()
        return scatter(self, x, y, *args, label=label, **kwargs)

    monkeypatch.setattr(plt.Axes, "scatter", record)
    plot_margins(result, weight, tmp_path / "margins.png")
    assert drawn["tie"] == [0.0, 0.0]


BLOG_W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)


def relative_margin(weight: np.ndarray, k: int, z: np.ndarray) -> float:
    """The relative margin of class ``k`` at ``z`` as documented (no bias: ``|z| median|w|``)."""
    logits = weight @ z
    scale = np.linalg.norm(z) * np.median(np.linalg.norm(weight, axis=1))
    return float((logits[k] - np.delete(logits, k).max()) / scale)


def test_margin_is_named_a_witness_margin_a_lower_bound() -> None:
    result = check_argmaxable(BLOG_W, show_progress=False)
    z = np.array([0.0, -1.0])  # class 2, row (1, 0), wins here by far more than at its witness
    best_known = relative_margin(BLOG_W, 2, z)
    assert best_known == pytest.approx(1 / np.sqrt(2))
    assert result.margin[2] < best_known  # the reported number is not the class's best margin
    assert result.margin[2] == pytest.approx(relative_margin(BLOG_W, 2, result.witnesses[2]))
    text = summary(result)
    assert "smallest margin of an argmaxable class" not in text
    assert "smallest witness margin of an argmaxable class" in text
    assert "lower bound" in text
    assert "lower bound" in json.loads(result.to_json())["margins_note"]


@pytest.mark.parametrize("box", [1e300, 1e200, 1e30, 1e20, 1.0000001e15])
def test_boxes_beyond_the_limit_are_refused_before_any_work(box: float, monkeypatch) -> None:
    def no_work(*args, **kwargs):
        raise AssertionError("the audit started before refusing the box")

    monkeypatch.setattr(argmaxable, "certify_fast", no_work)
    weight, bias = np.array([[1, 0], [0, 1], [0.4, 0.4]]), np.array([0, 0, -0.1])
    with pytest.raises(ValueError, match=r"box must lie in \(0, 1e\+15\].*box=None"):
        check_argmaxable(weight, bias, box=box, show_progress=False)
    with pytest.raises(ValueError, match=r"box must lie in"):
        check_argmaxable(weight, box=box, show_progress=False)


@pytest.mark.parametrize("box", [1e15, 1e10, 1e3])
def test_large_accepted_boxes_give_the_right_verdicts(box: float) -> None:
    # class 2 wins only near z = (-t, -t) with t > 0.5; class 3 only where z_2 > 25
    weight = np.array([[1, 0], [0, 1], [0.4, 0.4], [-1, 3]])
    bias = np.array([0, 0, -0.1, -50.0])
    result = check_argmaxable(weight, bias, box=box, show_progress=False)
    assert result.status.tolist() == ["argmaxable"] * 4
    for k, z in result.witnesses.items():
        assert np.abs(z).max() <= box
        logits = weight @ z + bias
        assert logits[k] > np.delete(logits, k).max()
    small = check_argmaxable(weight, bias, classes=[2, 3], box=0.25, show_progress=False)
    assert small.status.tolist() == ["unargmaxable", "unargmaxable"]


# A tiny Marian head: rows 0-3 are the corners of a square, row 4 its centre. Without a bias
# the centre is unargmaxable; the bias 1 on row 4 makes it win at z = 0.
MARIAN_W = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1], [0, 0]], dtype=np.float32)
MARIAN_B = np.array([[0, 0, 0, 0, 1]], dtype=np.float32)  # stored (1, V)


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("name", ["Wemb", "decoder_Wemb"])
def test_marian_tied_head_and_bias_are_read(tmp_path: Path, name: str) -> None:
    path = save_npz(tmp_path / "model.npz", **{name: MARIAN_W, "decoder_ff_logit_out_b": MARIAN_B,
                                               "encoder_l1_self_Wq": np.eye(2, dtype=np.float32)})
    head = read_head(path)
    assert head.weight_key == name and head.tied
    assert head.weight.tolist() == MARIAN_W.tolist()
    assert head.bias.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert head.bias_key == "decoder_ff_logit_out_b"
    assert check_argmaxable(head.weight, head.bias, show_progress=False).counts["argmaxable"] == 5
    assert check_argmaxable(head.weight, show_progress=False).unargmaxable.tolist() == [4]


def test_marian_untied_output_layer_is_read_transposed(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "model.npz", Wemb=np.eye(5, 2, dtype=np.float32),
                    decoder_ff_logit_out_W=MARIAN_W.T.copy(), decoder_ff_logit_out_b=MARIAN_B)
    head = read_head(path)
    assert not head.tied and head.weight.shape == (5, 2)
    assert head.weight.tolist() == MARIAN_W.tolist()
    assert head.bias.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    h = np.array([0.3, -0.7], dtype=np.float32)  # Marian's logits h @ W + b, W stored (d, V)
    assert np.allclose(head.weight @ h + head.bias, h @ MARIAN_W.T + MARIAN_B[0])
    result = check_argmaxable(head.weight, head.bias, show_progress=False)
    assert result.status.tolist() == ["argmaxable"] * 5


def test_transposed_raw_array_warns(tmp_path: Path) -> None:
    transposed = np.random.default_rng(0).normal(size=(3, 8))  # (d, V) = (3, 8)
    np.save(tmp_path / "head.npy", transposed)
    with pytest.warns(UserWarning, match=r"fewer classes \(3\) than dimensions \(8\).*transpose"):
        head = read_head(tmp_path / "head.npy")
    assert head.weight.shape == (3, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_head(save_npz(tmp_path / "ok.npz", weight=transposed.T)).weight.shape == (8, 3)
