"""The anchor's question (Grivas et al. 2022): a ball of radius r_min in the winning region inside
the box. Compared with a Chebyshev LP over all rows written here (scipy's HiGHS), and every piece
of evidence checked again naively."""

import json

import numpy as np
import pytest
from scipy.optimize import linprog

from logitkit.audit import check_argmaxable
from logitkit.audit.reverify import verify_saved_result
from logitkit.cli import main


def largest_ball(weight, bias, k, box):
    """max r s.t. (w_k - w_i) . z + b_k - b_i >= r |w_k - w_i|_2 for all i != k, |z|_inf <= box."""
    others = np.array([i for i in range(len(weight)) if i != k])
    diffs = weight[k] - weight[others]
    gaps = np.zeros(len(others)) if bias is None else bias[k] - bias[others]
    a_ub = np.hstack([-diffs, np.linalg.norm(diffs, axis=1)[:, None]])
    cost = np.zeros(weight.shape[1] + 1)
    cost[-1] = -1.0
    res = linprog(cost, A_ub=a_ub, b_ub=gaps,
                  bounds=[(-box, box)] * weight.shape[1] + [(None, None)], method="highs")
    assert res.status == 0
    return -res.fun


def naive_radius(weight, bias, k, z):
    diffs = weight[k] - weight
    values = diffs @ z + (0.0 if bias is None else bias[k] - bias)
    lengths = np.linalg.norm(diffs, axis=1)
    lengths[k] = 1.0
    values[k] = np.inf
    return float((values / lengths).min())


@pytest.mark.parametrize(("seed", "with_bias", "box"), [(0, True, 100.0), (1, True, 0.7),
                                                        (2, False, 2.0), (3, True, 0.25)])
def test_verdicts_match_the_largest_ball_lp(seed, with_bias, box):
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(90, 5)) * np.exp(0.7 * rng.normal(size=(90, 1)))
    bias = rng.normal(size=90) if with_bias else None
    best = np.array([largest_ball(weight, bias, k, box) for k in range(len(weight))])
    positive = best[best > 0]
    min_radius = float(np.median(positive))  # about half the winners fall short of it
    result = check_argmaxable(weight, bias, box=box, min_radius=min_radius, show_progress=False)
    assert result.settings["min_radius"] == min_radius
    for k, status in enumerate(result.status.tolist()):
        if best[k] > min_radius * (1 + 1e-6):
            assert status == "argmaxable", (k, best[k], min_radius)
        elif best[k] < min_radius * (1 - 1e-6):
            assert status == "unargmaxable", (k, best[k], min_radius)
        if status == "argmaxable":
            z = result.witnesses[k]
            assert np.abs(z).max() <= box
            assert naive_radius(weight, bias, k, z) >= min_radius * (1 - 1e-12)
        if status == "unargmaxable":
            cert = result.certificates[k]
            assert cert.kind == "ball" and best[k] <= cert.bound + 1e-9 * abs(cert.bound) + 1e-12
            assert cert.bound < min_radius
    counts = result.counts
    assert counts["argmaxable"] > 5 and counts["unargmaxable"] > 5 and counts["unknown"] == 0
    payload = json.loads(result.to_json(include_evidence=True))
    assert verify_saved_result(weight, bias, payload).ok


def test_a_thin_strip_holds_balls_up_to_its_half_width():
    weight, bias = np.array([[1.0, 0], [0, 1], [0.5, 0.5]]), np.array([0.0, 0.0, 1e-7])
    half_width = 1e-7 / np.linalg.norm([0.5, 0.5])  # 1.414e-7: class 2 wins for |z1 - z2| < 2e-7
    statuses = [check_argmaxable(weight, bias, classes=[2], box=100, min_radius=r,
                                 show_progress=False).status_of(2)
                for r in (1e-8, 0.99 * half_width, 1.01 * half_width, 1e-6)]
    assert statuses == ["argmaxable", "argmaxable", "unargmaxable", "unargmaxable"]
    assert check_argmaxable(weight, bias, classes=[2], show_progress=False).status_of(2) == \
        "argmaxable"  # the default question: any strict win


def test_a_class_that_wins_only_outside_the_box_is_unargmaxable_there():
    weight, bias = np.array([[1.0, 0], [0, 1], [0.4, 0.4]]), np.array([0.0, 0.0, -0.1])
    # class 2 beats z_1 and z_2 only at z = (-t, -t) with t > 0.5
    assert check_argmaxable(weight, bias, show_progress=False).status_of(2) == "argmaxable"
    inside = check_argmaxable(weight, bias, box=0.4, min_radius=1e-8, show_progress=False)
    assert inside.status_of(2) == "unargmaxable"
    assert inside.certificates[2].bound < 0  # not even a point: the best "radius" is negative
    wider = check_argmaxable(weight, bias, box=1.0, min_radius=1e-8, show_progress=False)
    assert wider.status_of(2) == "argmaxable"


def test_tampered_ball_evidence_is_caught():
    rng = np.random.default_rng(5)
    weight, bias = rng.normal(size=(40, 4)), rng.normal(size=40)
    result = check_argmaxable(weight, bias, box=1.0, min_radius=0.05, show_progress=False)
    payload = json.loads(result.to_json(include_evidence=True))
    winner = next(k for k in payload["witnesses"])
    payload["witnesses"][winner] = [1.0, 1.0, 1.0, 1.0]  # a corner: some rival wins there
    loser = str(payload["unargmaxable"][0])
    payload["certificates"][loser]["weights"] = [1.0] + [0.0] * (
        len(payload["certificates"][loser]["weights"]) - 1)
    failures = verify_saved_result(weight, bias, payload).failures
    assert any(f"class {winner} (argmaxable)" in line for line in failures)
    assert any(f"class {loser} (unargmaxable)" in line and "ball bound" in line
               for line in failures), failures


@pytest.mark.parametrize("options", [{"min_radius": 1e-8}, {"min_radius": 1e-8, "box": 1.0,
                                                               "method": "fast"},
                                     {"min_radius": 2.0, "box": 1.0}, {"min_radius": -1.0,
                                                                       "box": 1.0}])
def test_the_ball_question_needs_a_box_the_exact_method_and_a_radius_inside_it(options):
    with pytest.raises(ValueError, match="min_radius"):
        check_argmaxable(np.eye(3), show_progress=False, **options)


def test_cli_min_radius(tmp_path, capsys):
    rng = np.random.default_rng(6)
    np.save(tmp_path / "w.npy", rng.normal(size=(30, 4)))
    out = tmp_path / "out.json"
    assert main(["audit", str(tmp_path / "w.npy"), "--box", "1", "--min-radius", "0.2",
                 "--json", str(out)]) == 0
    settings = json.loads(out.read_text())["settings"]
    assert settings["min_radius"] == 0.2 and settings["box"] == 1.0
