"""A whole vocabulary's evidence written and read back one entry at a time.

``logitkit audit --json OUT --evidence`` on a 150k-row head writes gigabytes of certificates;
built as one text (or as Python lists first) they would take several times that in memory. The
writer streams them, one per line; the reader indexes those lines and parses an entry only when
asked. These tests compare the streamed JSON with the payload built in the test, check that
other layouts of the same JSON verify alike, and measure the memory of both directions.
"""

import io
import json
import tracemalloc

import numpy as np
import pytest

from logitkit.audit import check_argmaxable
from logitkit.audit.argmaxable import MARGINS_NOTE, AuditResult
from logitkit.audit.estimate import estimate_statuses
from logitkit.audit.evidence_store import CertificateStore
from logitkit.audit.reverify import (
    EVIDENCE_CONVENTION,
    SavedEntries,
    read_saved_result,
    verify_file,
    verify_saved_result,
)
from logitkit.audit.verify import Certificate


def head(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    outer = rng.normal(size=(120, 5)) * np.exp(0.5 * rng.normal(size=(120, 1)))
    inner = 0.9 * rng.dirichlet(np.ones(120), size=12) @ outer
    return np.vstack([outer, inner, outer[:2]])  # interior rows and two duplicates


def expected_payload(result: AuditResult) -> dict:
    """The JSON's content, built here from the result's fields."""
    finite = np.isfinite(result.margin)
    return {
        "settings": result.settings, "n_classes": len(result.classes), "counts": result.counts,
        "stage_counts": result.stage_counts, "timings": result.timings,
        **{name: result.classes[result.status == name].tolist()
           for name in ("tie", "unargmaxable", "unknown")},
        "duplicate_groups": [g.tolist() for g in result.duplicate_groups],
        "margins": {str(k): float(m) for k, m in zip(result.classes[finite],
                                                     result.margin[finite], strict=True)},
        "margins_note": MARGINS_NOTE,
        "witnesses": {str(k): z.tolist() for k, z in result.witnesses.items()},
        "certificates": {str(k): {"support": c.support.tolist(), "weights": c.weights.tolist(),
                                  "kind": c.kind, "residual": c.residual, "bound": c.bound}
                         for k, c in result.certificates.items()},
        "evidence_convention": EVIDENCE_CONVENTION,
    }


@pytest.mark.parametrize("bias", [False, True])
def test_the_streamed_json_holds_what_the_result_holds(bias):
    weight = head()
    b = np.random.default_rng(1).normal(size=len(weight)) if bias else None
    if bias:
        b[-2:] = b[:2]  # the duplicates stay duplicates
    result = check_argmaxable(weight, b, show_progress=False)
    assert len(result.certificates) >= 10 and len(result.witnesses) >= 30
    text = result.to_json(include_evidence=True)
    assert json.loads(text) == expected_payload(result)
    lines = text.splitlines()  # one line per entry, plus the three joints
    assert len(lines) == len(result.witnesses) + len(result.certificates) + 3
    plain = json.loads(result.to_json())
    assert "\n" not in result.to_json() and "witnesses" not in plain
    assert plain == {k: v for k, v in expected_payload(result).items()
                     if k not in ("witnesses", "certificates", "evidence_convention")}


def test_an_estimate_streams_its_sample_with_the_estimate_last():
    estimate = estimate_statuses(head(), sample=40, seed=2, show_progress=False)
    payload = json.loads(estimate.to_json(include_evidence=True))
    assert payload["estimate"] == json.loads(json.dumps(estimate.to_dict()))
    assert payload["certificates"].keys() == {str(k) for k in estimate.result.certificates}
    assert json.loads(estimate.to_json())["estimate"]["sample"] == 40


def test_empty_evidence_sections_are_valid_json():
    result = check_argmaxable(np.eye(3), show_progress=False)  # no certificates at all
    payload = json.loads(result.to_json(include_evidence=True))
    assert payload["certificates"] == {} and len(payload["witnesses"]) == 3


@pytest.mark.parametrize("layout", ["streamed", "one line", "indented"])
def test_saved_evidence_reads_and_verifies_the_same_in_any_layout(tmp_path, layout, capsys):
    weight = head(5)
    result = check_argmaxable(weight, show_progress=False)
    text = result.to_json(include_evidence=True)
    if layout != "streamed":
        text = json.dumps(json.loads(text), indent=None if layout == "one line" else 1)
    path = tmp_path / "out.json"
    path.write_text(text)
    saved = read_saved_result(path)
    lazy = isinstance(saved["certificates"], SavedEntries)
    assert lazy == (layout == "streamed")
    assert json.loads(json.dumps(dict(saved["certificates"]))) == json.loads(text)["certificates"]
    assert dict(saved["witnesses"]) == json.loads(text)["witnesses"]
    report = verify_saved_result(weight, None, saved)
    assert report.ok and report.verified["unargmaxable"] == len(result.unargmaxable) > 0
    assert verify_file(path, weight, None)
    assert "all evidence verified" in capsys.readouterr().out


def test_a_tampered_streamed_certificate_is_still_caught(tmp_path):
    weight = head(6)
    result = check_argmaxable(weight, show_progress=False)
    k = int(result.unargmaxable[0])
    lines = result.to_json(include_evidence=True).splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith(f'"{k}": {{"support"'))
    entry = json.loads("{" + lines[at].rstrip().removesuffix(",") + "}")[str(k)]
    entry["weights"][0] *= 1.5
    lines[at] = f'"{k}": {json.dumps(entry)}' + ("," if lines[at].rstrip().endswith(",") else "")
    lines[at] += "\n"
    path = tmp_path / "out.json"
    path.write_text("".join(lines))
    report = verify_saved_result(weight, None, read_saved_result(path))
    assert not report.ok and any(f"class {k} " in failure for failure in report.failures)


def test_broken_files_are_refused_with_their_name(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"settings": {}, "witnesses": {\n"0": [1.0\n')
    with pytest.raises(ValueError, match="broken.json is not JSON"):
        read_saved_result(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not the JSON object"):
        read_saved_result(path)


def big_result(n: int = 60, rows: int = 10_000) -> AuditResult:
    """``n`` unargmaxable classes with certificates of ``rows`` rows each, kept on disk."""
    store = CertificateStore(memory_budget=0)
    rng = np.random.default_rng(0)
    weights = rng.random(rows)
    for k in range(n):
        store.add(k, Certificate(support=np.arange(n, n + rows), weights=weights / weights.sum(),
                                 kind="depth", residual=1e-15))
    return AuditResult(classes=np.arange(n), status=np.full(n, "unargmaxable"),
                       stage=np.full(n, "exact"), margin=np.full(n, -np.inf), witnesses={},
                       certificates=store, duplicate_groups=[],
                       settings={"tol": 1e-9, "shape": [n + rows, 4]})


def test_writing_and_reading_a_large_evidence_file_holds_one_entry_at_a_time(tmp_path):
    """About 16 MB of certificate text (60 entries); writing and indexing it must each hold a
    few entries' worth (the whole text, or its Python lists, would be the file's size or
    more), and an entry read back is the one written."""
    result = big_result()
    path = tmp_path / "big.json"
    tracemalloc.start()
    with open(path, "w") as file:
        result.write_json(file, include_evidence=True)
    _, writing = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    saved = read_saved_result(path)
    entry = saved["certificates"]["37"]
    _, reading = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    size = path.stat().st_size
    assert size > 10 * 2**20
    assert writing < size / 4 and reading < size / 4
    assert entry["weights"] == result.certificates[37].weights.tolist()
    assert len(saved["certificates"]) == 60 and saved["n_classes"] == 60
    text = io.StringIO()
    result.write_json(text, include_evidence=True)
    assert text.getvalue() == path.read_text()
