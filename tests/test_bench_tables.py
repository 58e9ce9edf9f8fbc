"""The benchmarks' table for a reader (``harness.format_table``), on fake cases: ratios, targets,
met, and targets that a --quick size cannot test; the JSON on stdout stays one object."""

import json
import multiprocessing as mp
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from logitkit.benchmarks import harness
from logitkit.cli import main


@pytest.fixture
def cases():
    return [
        harness.case("fused CE vs torch_ce", baseline={"time_s": 1.0, "peak_bytes": 100},
                     ours={"time_s": 0.5, "peak_bytes": 10},
                     targets={"time_s": 1.0, "peak_bytes": 1.0}),
        harness.case("fused EMO vs fused CE", baseline={"time_s": 1.0}, ours={"time_s": 1.5},
                     targets={"time_s": 1.3}),
        harness.case("cut-cross-entropy", baseline={"time_s": 1.0}, ours={"time_s": 1.1}),
        harness.case("lazy sparse vs dense", baseline={"time_s": 1.0}, ours={"time_s": 0.1},
                     targets={"min_speedup": 20.0}, not_testable="16x the rows at --quick"),
        harness.case("scan memory", baseline={"memory_bytes": 100}, ours={"memory_bytes": 20},
                     targets={"memory_bytes": 0.1},
                     not_testable={"memory_bytes": "fixed buffers"}),
        harness.case("bf16 gradient", baseline={"bf16_grad_rel_error": 1e-3},
                     ours={"bf16_grad_rel_error": 1.5e-3}, targets={"bf16_grad_rel_error": 2}),
    ]


def _row(table: str, name: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(name))
    return re.split(r"\s{2,}", line)


def test_the_table_shows_ratios_targets_and_what_is_met(cases):
    table = harness.format_table(cases, title="== demo")
    lines = table.splitlines()
    assert lines[0] == "== demo"
    assert re.split(r"\s{2,}", lines[2]) == ["case", "time", "speedup", "memory",
                                            "bf16_grad_rel_error", "target", "met"]
    assert _row(table, "fused CE vs torch_ce") == ["fused CE vs torch_ce", "0.5x", "2x", "0.1x",
                                                  "-", "time <= 1x; memory <= 1x", "yes"]
    assert _row(table, "fused EMO")[-2:] == ["time <= 1.3x", "NO"]
    assert _row(table, "cut-cross-entropy")[-2:] == ["-", "- (no target)"]
    assert _row(table, "scan memory")[3] == "0.2x"  # memory_bytes shares the memory column
    assert _row(table, "bf16 gradient")[-3:] == ["1.5x", "bf16_grad_rel_error <= 2x", "yes"]
    assert lines[-1] == "6 target(s): 3 met, 1 not met, 2 not testable in this run"


def test_quick_marks_untestable_targets_instead_of_not_met(cases):
    table = harness.format_table(cases, quick=True)
    assert _row(table, "lazy sparse vs dense")[-2:] == ["speedup >= 20x",
                                                       "not testable at --quick size [1]"]
    assert _row(table, "scan memory")[-1] == "not testable at --quick size [2]"
    assert "[1] 16x the rows at --quick" in table and "[2] fixed buffers" in table
    assert table.splitlines()[-1] == ("6 target(s): 3 met, 1 not met, 2 not testable at --quick "
                                      "size")


def test_untestable_targets_are_kept_out_of_met_and_listed(cases, capsys):
    lazy = cases[3]
    assert lazy["targets"] == {"min_speedup": 20.0} and lazy["met"] == {}
    assert lazy["not_testable"] == {"min_speedup": "16x the rows at --quick"}
    payload = harness.emit("demo", config={}, cases=[cases[0], lazy, cases[4]], quick=True)
    assert payload["all_targets_met"] is True
    assert payload["not_testable"] == ["lazy sparse vs dense: min_speedup",
                                       "scan memory: memory_bytes"]
    assert capsys.readouterr().err == ""  # no table unless asked


def test_emit_prints_the_table_on_stderr_and_one_json_line_on_stdout(cases, capsys):
    harness.emit("demo", config={"n": 1}, cases=cases, table=True, quick=True)
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 1
    assert json.loads(captured.out)["all_targets_met"] is False
    assert "== demo --quick: logitkit vs baseline" in captured.err
    assert "not testable at --quick size [1]" in captured.err


def test_a_target_that_is_not_a_ratio():
    result = harness.case("head", baseline={"time_s": 60.0}, ours={"time_s": 3.0})
    harness.add_target(result, "time_under_target_s", description="whole head < 600 s",
                       met=True)
    assert result["met"] == {"time_under_target_s": True}
    assert _row(harness.format_table([result]), "head")[-2:] == ["whole head < 600 s", "yes"]
    quick = harness.add_target(harness.case("small", baseline={"time_s": 1.0},
                                            ours={"time_s": 0.5}),
                               "time_under_target_s", description="50257x768 head < 600 s",
                               not_testable="a smaller head")
    assert quick["met"] == {} and quick["not_testable"] == {"time_under_target_s":
                                                            "a smaller head"}


@pytest.mark.parametrize("name", ["losses", "optim", "matching", "audit"])
def test_every_benchmark_prints_the_shared_table(name):
    source = (Path(harness.__file__).parent / f"{name}.py").read_text()
    assert "table=True" in source


def test_optim_quick_marks_the_targets_tied_to_the_full_sizes():
    optim = pytest.importorskip("logitkit.benchmarks.optim")
    result = optim.lazy_embedding_case(256, 8, 16, repeats=1, not_testable="too small")
    assert result["met"] == {} and result["not_testable"] == {"min_speedup": "too small"}
    assert "min_speedup" in optim.lazy_embedding_case(256, 8, 16, repeats=1)["met"]


def test_audit_quick_marks_its_targets_not_testable(capsys):
    audit = pytest.importorskip("logitkit.benchmarks.audit")
    weight = audit.lognormal_head(60, 4, 1.0)
    result = audit.audit_case("tiny", weight, target_s=None, sample=1,
                              untestable=("50257x768 head < 600 s", "a smaller head"))
    capsys.readouterr()
    assert result["not_testable"] == {"time_under_target_s": "a smaller head"}
    assert "time_under_target_s" not in result["met"]
    assert result["ours"]["certificates_on_disk_gb"] == 0.0  # a tiny head's fit in memory
    assert result["ours"]["certificates_in_memory_gb"] < 0.001
    table = harness.format_table([result], quick=True)
    assert "50257x768 head < 600 s" in table and "not testable at --quick size [1]" in table


def _hold_256_mib(_: int) -> float:
    block = np.ones(2**25)  # 256 MiB, touched
    time.sleep(0.8)
    return float(block[-1])


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc")
def test_peak_memory_of_the_audit_counts_its_forked_workers():
    audit = pytest.importorskip("logitkit.benchmarks.audit")
    with audit.PeakMemory(interval=0.05) as idle:
        time.sleep(0.2)
    with audit.PeakMemory(interval=0.05) as memory, mp.get_context("fork").Pool(2) as pool:
        assert pool.map(_hold_256_mib, [0, 1]) == [1.0, 1.0]
    assert memory.peak_gb - idle.peak_gb >= 0.45  # two workers holding 0.25 GiB each
    assert memory.peak_gb - idle.peak_gb < 1.0


def test_logitkit_bench_shows_the_table_and_saves_only_the_json(tmp_path, capfd):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "demo.py").write_text(
        "from logitkit.benchmarks.harness import case, emit\n"
        "emit('demo', config={}, cases=[case('c', baseline={'time_s': 2.0}, "
        "ours={'time_s': 1.0}, targets={'min_speedup': 20}, not_testable='small')], table=True)\n")
    assert main(["bench", "demo", "--quick", "--dir", str(scripts), "--out",
                 str(tmp_path / "out")]) == 0
    captured = capfd.readouterr()
    assert "not testable at --quick size [1]" in captured.err
    assert "not testable" not in captured.out.replace('"not_testable"', "")
    saved = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert saved["cases"][0]["not_testable"] == {"min_speedup": "small"}
    assert np.isclose(saved["cases"][0]["ratio"]["speedup"], 2.0)


def test_losses_cases_have_the_floor_and_every_peer_with_finite_ratios():
    losses = pytest.importorskip("logitkit.benchmarks.losses")
    skips = losses.peer_skips()
    assert "liger" in skips and "GPU" in skips["liger"]  # this suite runs on CPU
    methods = [m for m in losses.available_methods() if m != "cce"]  # no compile: keep it fast
    cases = []
    for dtype in ("float32", "bfloat16"):
        config = (64, 512, 32, dtype, "zipf")
        targets = losses.make_inputs(*config)["target"]
        assert targets.unique().numel() < 64 and 0 <= int(targets.min()) <= int(targets.max()) < 512
        results = losses.measure(config, methods, repeats=1, memory=False)
        assert all("time_s" in results[m] for m in losses.OURS + ("floor",))
        cases += losses.cases_for(config, results, skips)
    table = losses.summary_table(cases)
    for column in ("fused CE / 3-GEMM floor", "fused CE / torch CE", "fused CE / torch native",
                   "fused CE / CCE torch_compile", "fused CE / Liger", "EMO / fused CE",
                   "EMO+0.5 MLE / fused CE", "EMO adaptive / fused CE", "TaiLr / fused CE",
                   "fused CE memory / peer's"):
        assert column in table
    assert "N=64 V=512 d=32 bfloat16 zipf" in table and "Liger: skipped: needs a GPU" in table
    timed = [c for c in cases if "skipped" not in c]
    assert {c["column"] for c in timed} >= {"floor", "torch_ce", *losses.EMO_FORMS, "fused_tailr"}
    assert all(c["config"]["distinct_targets_per_token"] < 1 for c in cases)
    for result in timed:
        assert result["ratio"] and all(np.isfinite(v) for v in result["ratio"].values())
    assert any("skipped" in c and c["column"] == "liger" for c in cases)
    harness.format_table(cases)  # the shared table takes the cases as they are


def test_frontier_memory_is_measured_in_a_fresh_process_without_torch():
    audit = pytest.importorskip("logitkit.benchmarks.audit")
    result = audit.frontier_case("tiny frontier", 3000, 6, 1.0, sample=40, target_s=3600.0,
                                 baseline=True, untestable="a smaller head")
    ours = result["ours"]
    assert ours["torch_imported"] is False and "torch" in sys.modules  # the benchmark has it
    assert sum(ours[f"n_{k}"] for k in ("argmaxable", "tie", "unargmaxable", "unknown")) == 40
    head_gb = 3000 * 6 * 4 / 2**30
    assert ours["peak_over_float32_head"] * head_gb >= ours["process_before_head_gb"]
    assert len(result["baseline"]["side_by_side"]) == min(2, ours["stage_exact"])
    alone = [c["status"] for c in result["baseline"]["side_by_side"]]
    assert all(status in ("argmaxable", "unargmaxable") for status in alone)
    assert set(result["not_testable"]) == {"time_under_target_s", "memory_under_2x_float32_head"}
