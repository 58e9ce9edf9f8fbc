"""The `logitkit reproduce` framework, and a smoke run of every experiment."""

import json
import math
import sys
import types

import pytest
import torch

from logitkit.cli import main
from logitkit.experiments import (
    POSTS,
    Claim,
    Context,
    Result,
    _framework,
    available,
    run_experiments,
)

QUOTE = {"seed_quote": "a sentence of the post", "source": POSTS["emo"]}


def _fake_experiment(name, calls, *, threads=None, interrupt=False):
    def run(ctx):
        calls.append((name, ctx.size, torch.get_num_threads()))
        if interrupt:
            raise KeyboardInterrupt
        (ctx.out_dir / "plot.png").write_bytes(b"png")
        table = [{"x": 1.5, "y": 2}]
        return Result(
            name=name, title=f"The {name} claim", data="none",
            claims=[Claim(claim=f"{name}: x beats y", verdict="partly", measured=table,
                          settings={"steps": 3, "model": {"width": 8}}, seeds=[ctx.seed],
                          **QUOTE),
                    Claim(claim=f"{name}: y beats x", verdict="not reproduced", measured=table,
                          settings={}, seeds=[ctx.seed], **QUOTE)],
            numbers={"x": 1.5}, plots=["plot.png"],
        )
    module = types.SimpleNamespace(TITLE=f"The {name} claim", run=run, MINUTES={"smoke": 0.5})
    if threads is not None:
        module.THREADS = threads
    return module


@pytest.fixture
def fakes(monkeypatch):
    """Two fake experiments, "alpha" (THREADS = 1) and "beta" (no THREADS); returns the calls."""
    calls = []
    monkeypatch.setitem(sys.modules, "logitkit.experiments.alpha",
                        _fake_experiment("alpha", calls, threads=1))
    monkeypatch.setitem(sys.modules, "logitkit.experiments.beta", _fake_experiment("beta", calls))
    monkeypatch.setattr(_framework, "available", lambda: ["alpha", "beta"])
    return calls


def test_report_is_written_and_finished_runs_are_skipped(fakes, tmp_path):
    ctx = Context(size="smoke", out_dir=tmp_path)
    run_experiments(["alpha"], ctx)
    run_experiments(["alpha"], ctx)
    assert [c[:2] for c in fakes] == [("alpha", "smoke")]
    report = (tmp_path / "report.md").read_text()
    assert "| alpha | smoke | 1 | alpha: x beats y | **partly** |" in report
    assert "> a sentence of the post" in report and f"<{POSTS['emo']}>" in report
    assert "Verdict: **partly** (size `smoke`, 1 seed)" in report
    assert "![plot.png](alpha/plot.png)" in report
    payload = json.loads((tmp_path / "report.json").read_text())
    assert payload["experiments"]["alpha"]["numbers"] == {"x": 1.5}
    assert payload["experiments"]["alpha"]["run"]["size"] == "smoke"
    assert [c["size"] for c in payload["experiments"]["alpha"]["claims"]] == ["smoke"] * 2
    assert payload["experiments"]["alpha"]["claims"][0]["seed_quote"] == QUOTE["seed_quote"]
    run_experiments(["alpha"], ctx, force=True)
    run_experiments(["alpha"], Context(size="quick", out_dir=tmp_path))
    assert [c[:2] for c in fakes] == [("alpha", "smoke"), ("alpha", "smoke"), ("alpha", "quick")]


def test_the_report_covers_every_result_in_the_folder(fakes, tmp_path):
    run_experiments(["alpha", "beta"], Context(size="smoke", out_dir=tmp_path))
    full = (tmp_path / "report.md").read_text()
    run_experiments(["beta"], Context(size="smoke", out_dir=tmp_path), force=True)
    again = (tmp_path / "report.md").read_text()
    assert "## alpha: The alpha claim" in again and "## beta: The beta claim" in again
    assert len(again.splitlines()) == len(full.splitlines())
    assert set(json.loads((tmp_path / "report.json").read_text())["experiments"]) == {
        "alpha", "beta"}


def test_report_records_the_environment_and_reads_well(fakes, tmp_path):
    run_experiments(["alpha"], Context(size="smoke", out_dir=tmp_path, seed=4))
    report = (tmp_path / "report.md").read_text()
    assert f"torch {torch.__version__}" in report and "1 thread(s)" in report
    assert "logitkit " in report and "seed 4" in report and " UTC" in report
    assert "- steps: 3" in report and "- model:" in report and "  - width: 8" in report
    assert "- seeds: 4 (1 seed(s))" in report
    assert report.count("| x | y |") == 1  # the second claim's identical table is not repeated
    assert "the same table as the claim above" in report
    environment = json.loads((tmp_path / "alpha" / "result.json").read_text())["_environment"]
    assert environment["torch"] == torch.__version__ and environment["threads"] == 1


def test_each_experiment_gets_its_own_thread_count_and_threads_are_restored(fakes, tmp_path):
    before = torch.get_num_threads()
    run_experiments(["alpha", "beta"], Context(size="smoke", out_dir=tmp_path))
    assert [c[2] for c in fakes] == [1, _framework.DEFAULT_THREADS]
    run_experiments(["alpha"], Context(size="smoke", out_dir=tmp_path, threads=3), force=True)
    assert fakes[-1][2] == 3
    assert torch.get_num_threads() == before


def test_the_plan_line_states_the_size_and_the_estimates(fakes, tmp_path, capsys):
    assert main(["reproduce", "alpha", "--smoke", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "size smoke: alpha (about 0.5 min on 2 idle CPU cores" in err
    assert "[alpha] running (smoke, 1 thread(s), about 0.5 min on 2 idle cores)" in err


def test_an_interrupt_keeps_finished_results_reports_them_and_exits_130(monkeypatch, tmp_path,
                                                                        capsys):
    calls = []
    monkeypatch.setitem(sys.modules, "logitkit.experiments.alpha",
                        _fake_experiment("alpha", calls))
    monkeypatch.setitem(sys.modules, "logitkit.experiments.beta",
                        _fake_experiment("beta", calls, interrupt=True))
    monkeypatch.setattr(_framework, "available", lambda: ["alpha", "beta"])
    assert main(["reproduce", "all", "--smoke", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    report = (tmp_path / "report.md").read_text()
    assert "## alpha" in report and "## beta" not in report
    assert not (tmp_path / "beta" / "result.json").exists()


def test_an_unwritable_output_folder_fails_before_any_work(fakes, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["reproduce", "alpha", "--smoke", "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("logitkit reproduce: error: cannot write") and err.count("\n") == 1
    assert fakes == []


def test_a_missing_optional_package_is_named_before_any_work(fakes, monkeypatch, tmp_path,
                                                             capsys):
    monkeypatch.setattr(sys.modules["logitkit.experiments.beta"], "NEEDS",
                        ("json", "no_such_package_for_logitkit"), raising=False)
    assert main(["reproduce", "all", "--smoke", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == ("logitkit reproduce: error: experiment 'beta' needs the Python package "
                   "'no_such_package_for_logitkit', which is not installed: "
                   'pip install "logitkit[reproduce]"\n')
    assert fakes == []


def test_an_experiment_whose_import_fails_on_a_missing_package_says_which(monkeypatch):
    def missing(name, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")

    monkeypatch.setattr(_framework.importlib, "import_module", missing)
    with pytest.raises(_framework.MissingExtra, match="'thresholds' needs the Python package "
                                                      "'sklearn'"):
        _framework.experiment_module("thresholds")


def test_a_crash_while_saving_leaves_the_previous_result_intact(fakes, tmp_path, monkeypatch):
    ctx = Context(size="smoke", out_dir=tmp_path)
    run_experiments(["alpha"], ctx)
    saved = tmp_path / "alpha" / "result.json"
    before = saved.read_text()

    def broken_dumps(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(_framework.json, "dumps", broken_dumps)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_experiments(["alpha"], ctx, force=True)
    assert saved.read_text() == before
    assert sorted(p.name for p in (tmp_path / "alpha").iterdir()) == ["plot.png", "result.json"]


def test_unknown_experiment_and_bad_values_are_rejected(fakes, tmp_path):
    with pytest.raises(ValueError, match="unknown experiment"):
        run_experiments(["nope"], Context(size="smoke", out_dir=tmp_path))
    with pytest.raises(ValueError, match="verdict"):
        Claim(claim="c", verdict="maybe", measured=[], settings={}, seeds=[0], **QUOTE)
    with pytest.raises(ValueError, match="verdict"):
        Claim(claim="c", verdict="inconclusive", measured=[], settings={}, seeds=[0], **QUOTE)
    with pytest.raises(ValueError, match="seed_quote"):
        Claim(claim="c", verdict="partly", measured=[], settings={}, seeds=[0], seed_quote=" ",
              source=POSTS["emo"])
    with pytest.raises(ValueError, match="source must be one of the posts"):
        Claim(claim="c", verdict="partly", measured=[], settings={}, seeds=[0],
              seed_quote="q", source="https://example.com")
    with pytest.raises(ValueError, match="size"):
        Context(size="huge", out_dir=tmp_path)
    with pytest.raises(ValueError, match="threads"):
        Context(size="smoke", out_dir=tmp_path, threads=0)
    with pytest.raises(ValueError, match="non-finite"):
        _framework.check_finite({"a": [1.0, float("nan")]}, where="numbers")


def test_cli_reports_a_missing_data_folder(tmp_path, capsys):
    assert main(["reproduce", "--smoke", "--data", str(tmp_path / "absent")]) == 2
    assert "absent: no such folder" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [-5, 2**31, 2**32, 1.5, True])
def test_a_seed_out_of_range_is_refused_before_any_work(fakes, tmp_path, capsys, seed):
    with pytest.raises(ValueError, match="seed must be an integer from 0 to 2147483647"):
        Context(size="smoke", out_dir=tmp_path, seed=seed)
    if isinstance(seed, int) and not isinstance(seed, bool):
        assert main(["reproduce", "alpha", "--smoke", "--seed", str(seed), "--out",
                     str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err == ("logitkit reproduce: error: --seed must be an integer from 0 to "
                       f"2147483647 (2**31 - 1), got {seed}\n")
        assert fakes == [] and not (tmp_path / "out").exists()
    assert Context(size="smoke", out_dir=tmp_path, seed=2**31 - 1).seed == 2**31 - 1


def test_the_cli_checks_its_flags_before_creating_the_output_folder(fakes, tmp_path, capsys):
    assert main(["reproduce", "nope", "--smoke", "--out", str(tmp_path / "out")]) == 2
    assert "unknown experiment(s) ['nope']" in capsys.readouterr().err
    assert main(["reproduce", "alpha", "--smoke", "--threads", "0", "--out",
                 str(tmp_path / "out")]) == 2
    assert "--threads must be a positive integer, got 0" in capsys.readouterr().err
    assert fakes == [] and not (tmp_path / "out").exists()


def _finite_numbers(value):
    if isinstance(value, dict):
        return all(_finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_numbers(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


@pytest.mark.parametrize("name", available())
def test_every_experiment_runs_at_smoke_size(name, tmp_path):
    assert main(["reproduce", name, "--smoke", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "report.json").read_text())
    result = payload["experiments"][name]
    assert result["claims"], "an experiment must state at least one claim"
    for claim in result["claims"]:
        assert claim["verdict"] in {"reproduced", "not reproduced", "partly"}
        assert claim["measured"] and claim["seeds"]
        assert claim["seed_quote"].strip() and claim["source"] in POSTS.values()
    assert _finite_numbers(result["numbers"])
    for plot in result["plots"]:
        assert (tmp_path / name / plot).stat().st_size > 0


@pytest.mark.parametrize("name", available())
def test_every_experiment_states_its_threads_and_time_estimates(name):
    module = _framework.experiment_module(name)
    assert isinstance(module.THREADS, int) and module.THREADS >= 1
    assert set(module.MINUTES) == {"smoke", "quick", "full"}


@pytest.mark.slow
@pytest.mark.parametrize("name", available())
def test_a_rerun_with_the_same_seed_gives_the_same_numbers(name, tmp_path):
    runs = []
    for attempt in ("first", "second"):
        main(["reproduce", name, "--smoke", "--seed", "3", "--out", str(tmp_path / attempt)])
        payload = json.loads((tmp_path / attempt / "report.json").read_text())
        runs.append(payload["experiments"][name]["numbers"])
    assert runs[0] == runs[1]


def test_a_training_claim_needs_three_paired_seeds_beyond_smoke(fakes, tmp_path):
    one_seed = Claim(claim="c", verdict="partly", measured=[{"x": 1}], settings={}, seeds=[0],
                     training=True, **QUOTE)
    _framework.check_claims([one_seed], "smoke")
    for size in ("quick", "full"):
        with pytest.raises(ValueError, match="has 1 seed.*at least 3 paired seeds"):
            _framework.check_claims([one_seed], size)
    three = Claim(claim="c", verdict="partly", measured=[{"x": 1}], settings={}, seeds=[0, 1, 2],
                  training=True, **QUOTE)
    _framework.check_claims([three], "quick")
    assert "(size `quick`, 3 paired seeds)" in _framework.render_report([{
        "name": "alpha", "title": "t", "data": "d", "claims": [_framework.asdict(three)],
        "numbers": {}, "_run": {"size": "quick"}}])


def test_a_result_of_an_older_format_is_rerun_and_left_out_of_the_report(fakes, tmp_path):
    ctx = Context(size="smoke", out_dir=tmp_path)
    run_experiments(["alpha"], ctx)
    saved = tmp_path / "alpha" / "result.json"
    payload = json.loads(saved.read_text())
    del payload["_run"]["format"]
    del payload["claims"][0]["seed_quote"]
    saved.write_text(json.dumps(payload))
    assert _framework.saved_results(tmp_path) == []
    run_experiments(["alpha"], ctx)
    assert [c[:2] for c in fakes] == [("alpha", "smoke"), ("alpha", "smoke")]
    assert "seed_quote" in json.loads(saved.read_text())["claims"][0]
