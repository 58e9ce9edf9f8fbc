"""`logitkit audit --verify`: a saved result re-checked from the head, tampering caught."""

import json

import numpy as np
import pytest

from logitkit.audit import check_argmaxable
from logitkit.audit.reverify import EVIDENCE_CONVENTION, verify_saved_result
from logitkit.cli import main

# Row 4 is a duplicate of row 0 (tie), row 2 lies on the facet of rows 0, 1 (tie without a
# bias), row 3 lies inside the hull (unargmaxable without a bias).
W = np.array([[1, 0], [0, 1], [0.5, 0.5], [0.3, 0.3], [1, 0], [-1, -1]], dtype=float)
B = np.array([0, 0, -0.1, -0.5, 0, 0.0])


def _payload(bias=None, box=None, weight=W):
    result = check_argmaxable(weight, bias, box=box, show_progress=False)
    return result, json.loads(result.to_json(include_evidence=True))


@pytest.mark.parametrize(("bias", "box"), [(None, None), (None, 0.25), (B, None), (B, 0.25)])
def test_saved_evidence_verifies(bias, box):
    result, payload = _payload(bias, box)
    assert payload["evidence_convention"] == EVIDENCE_CONVENTION
    report = verify_saved_result(W, bias, payload)
    assert report.ok, report.lines()
    assert report.verified == {k: v for k, v in result.counts.items() if k != "unknown"}
    assert result.counts["tie"] >= 2 and result.counts["argmaxable"] >= 1


def test_every_status_and_kind_is_covered():
    kinds = set()
    for bias, box in [(None, None), (B, 0.25)]:
        result, payload = _payload(bias, box)
        kinds |= {c["kind"] for c in payload["certificates"].values()}
        assert verify_saved_result(W, bias, payload).ok
    assert kinds == {"hull", "depth", "box"}


def test_scaled_head_with_a_masked_token_verifies():
    weight = np.vstack([W, [[0.2, 0.1]]]) * 2.0**20
    bias = np.r_[B, -1e9] * 2.0**20
    _, payload = _payload(bias, None, weight)
    assert verify_saved_result(weight, bias, payload).ok


def test_tampered_witness_fails():
    _, payload = _payload()
    payload["witnesses"]["1"] = [1.0, 0.0]  # row 0 wins there
    report = verify_saved_result(W, None, payload)
    assert not report.ok
    assert report.failures[0].startswith("class 1 (argmaxable): the witness does not win")


def test_tampered_certificate_fails():
    _, payload = _payload()
    cert = payload["certificates"]["3"]
    assert cert["kind"] == "depth"
    cert["weights"] = [1.0] + [0.0] * (len(cert["weights"]) - 1)
    report = verify_saved_result(W, None, payload)
    assert any(f.startswith("class 3 (unargmaxable): certificate: |g + s|_1") for f in
               report.failures)
    cert["weights"] = [-1.0] + [2.0] + [0.0] * (len(cert["weights"]) - 2)
    assert "weights must be >= 0" in " ".join(verify_saved_result(W, None, payload).failures)


def test_tampered_box_bound_and_dropped_bias_fail():
    _, payload = _payload(B, 0.25)
    box_ids = [k for k, c in payload["certificates"].items() if c["kind"] == "box"]
    payload["certificates"][box_ids[0]]["bound"] = -10.0  # understated
    assert "recorded bound" in " ".join(verify_saved_result(W, B, payload).failures)
    _, payload = _payload(B, None)
    report = verify_saved_result(W, None, payload)  # the bias dropped: settings disagree
    assert not report.ok and "bias True in the JSON" in report.settings_problems[0]


def test_missing_witness_and_no_evidence():
    _, payload = _payload()
    del payload["witnesses"]["1"]
    assert "1 argmaxable class(es) have no witness" in verify_saved_result(W, None,
                                                                          payload).failures
    del payload["witnesses"]
    with pytest.raises(ValueError, match="no evidence"):
        verify_saved_result(W, None, payload)


def test_cli_writes_then_verifies(tmp_path, capsys):
    path, out = tmp_path / "w.npz", tmp_path / "out.json"
    np.savez(path, weight=W, bias=B)
    args = ["audit", str(path), "--key", "weight"]
    code = main([*args, "--json", str(out), "--evidence", "--box", "0.25"])
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    assert main([*args, "--verify", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "all evidence verified" in printed and "verified: argmaxable" in printed
    payload = json.loads(out.read_text())
    payload["witnesses"]["1"] = [0.25, 0.0]
    out.write_text(json.dumps(payload))
    assert main([*args, "--verify", str(out)]) == 1
    assert "FAILED class 1 (argmaxable)" in capsys.readouterr().out
    assert main([*args, "--no-bias", "--verify", str(out)]) == 1
    assert "settings mismatch: bias True" in capsys.readouterr().out
    assert main([*args, "--json", str(out)]) == 0  # no evidence
    capsys.readouterr()
    assert main([*args, "--verify", str(out)]) == 2
    assert "no evidence" in capsys.readouterr().err
    assert main([*args, "--verify", str(out), "--json", str(out)]) == 2
