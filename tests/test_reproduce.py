"""The `logitkit reproduce` framework, and a smoke run of every experiment."""

import json
import math
import sys
import types

import pytest

from logitkit.cli import main
from logitkit.experiments import Claim, Context, Result, _framework, available, run_experiments


def _fake_experiment(calls):
    def run(ctx):
        calls.append(ctx.size)
        (ctx.out_dir / "plot.png").write_bytes(b"png")
        return Result(
            name="fake", title="A fake claim", data="none",
            claims=[Claim(claim="x beats y", verdict="partly", measured=[{"x": 1.5, "y": 2}],
                          settings={"steps": 3}, seeds=[ctx.seed])],
            numbers={"x": 1.5}, plots=["plot.png"],
        )
    return types.SimpleNamespace(TITLE="A fake claim", run=run)


@pytest.fixture
def fake(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "logitkit.experiments.fake", _fake_experiment(calls))
    monkeypatch.setattr(_framework, "available", lambda: ["fake"])
    return calls


def test_report_is_written_and_finished_runs_are_skipped(fake, tmp_path):
    ctx = Context(size="smoke", out_dir=tmp_path)
    run_experiments(["fake"], ctx)
    run_experiments(["fake"], ctx)
    assert fake == ["smoke"]
    report = (tmp_path / "report.md").read_text()
    assert "| fake | x beats y | **partly** |" in report
    assert "![plot.png](fake/plot.png)" in report
    payload = json.loads((tmp_path / "report.json").read_text())
    assert payload["experiments"]["fake"]["numbers"] == {"x": 1.5}
    run_experiments(["fake"], ctx, force=True)
    run_experiments(["fake"], Context(size="quick", out_dir=tmp_path))
    assert fake == ["smoke", "smoke", "quick"]


def test_unknown_experiment_and_bad_values_are_rejected(fake, tmp_path):
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiments(["nope"], Context(size="smoke", out_dir=tmp_path))
    with pytest.raises(ValueError, match="verdict"):
        Claim(claim="c", verdict="maybe", measured=[], settings={}, seeds=[0])
    with pytest.raises(ValueError, match="size"):
        Context(size="huge", out_dir=tmp_path)
    with pytest.raises(ValueError, match="non-finite"):
        _framework.check_finite({"a": [1.0, float("nan")]}, where="numbers")


def test_cli_reports_a_missing_data_folder(tmp_path, capsys):
    assert main(["reproduce", "--smoke", "--data", str(tmp_path / "absent")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def _finite_numbers(value):
    if isinstance(value, dict):
        return all(_finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_numbers(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


@pytest.mark.parametrize("name", available())
def test_every_experiment_runs_at_smoke_size(name, tmp_path):
    main(["reproduce", name, "--smoke", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "report.json").read_text())
    result = payload["experiments"][name]
    assert result["claims"], "an experiment must state at least one claim"
    for claim in result["claims"]:
        assert claim["verdict"] in {"reproduced", "not reproduced", "partly"}
        assert claim["measured"] and claim["seeds"]
    assert _finite_numbers(result["numbers"])
    for plot in result["plots"]:
        assert (tmp_path / name / plot).stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", available())
def test_a_rerun_with_the_same_seed_gives_the_same_numbers(name, tmp_path):
    runs = []
    for attempt in ("first", "second"):
        main(["reproduce", name, "--smoke", "--seed", "3", "--out", str(tmp_path / attempt)])
        payload = json.loads((tmp_path / attempt / "report.json").read_text())
        runs.append(payload["experiments"][name]["numbers"])
    assert runs[0] == runs[1]
