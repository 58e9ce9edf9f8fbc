import functools

import torch

from logitkit.benchmarks import harness


def _allocate(megabytes: int) -> int:
    return megabytes


def _touch(megabytes: int) -> None:
    block = torch.ones(megabytes * 1024 * 1024 // 4)
    assert block.sum().item() > 0


def test_peak_memory_sees_a_large_allocation_and_not_a_small_one():
    big = harness.peak_memory_bytes(functools.partial(_allocate, 200), _touch)
    small = harness.peak_memory_bytes(functools.partial(_allocate, 1), _touch)
    assert 180 * 2**20 <= big <= 260 * 2**20
    assert small < 40 * 2**20


def test_peak_memory_is_not_hidden_by_a_large_parent():
    # ru_maxrss survives fork and exec: a child would start at the parent's peak and see no growth
    ballast = torch.ones(600 * 2**20 // 4)
    big = harness.peak_memory_bytes(functools.partial(_allocate, 200), _touch)
    assert ballast.sum().item() > 0
    assert 180 * 2**20 <= big <= 260 * 2**20


def test_case_reports_ratios_and_checks_targets():
    result = harness.case(
        "x", baseline={"time_s": 2.0, "peak_bytes": 100}, ours={"time_s": 1.0, "peak_bytes": 20},
        targets={"time_s": 0.6, "peak_bytes": 0.1, "min_speedup": 3},
    )
    assert result["ratio"] == {"time_s": 0.5, "peak_bytes": 0.2, "speedup": 2.0}
    assert result["met"] == {"time_s": True, "peak_bytes": False, "min_speedup": False}


def test_time_call_returns_the_median_of_repeats():
    calls = []
    seconds = harness.time_call(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5
    assert 0 <= seconds < 0.1


def test_emit_prints_one_json_line(capsys):
    import json

    harness.emit("demo", config={"n": 1}, cases=[harness.case("c", baseline={"a": 1.0},
                                                              ours={"a": 2.0}, targets={"a": 1.0})])
    payload = json.loads(capsys.readouterr().out.strip())
    assert payload["benchmark"] == "demo"
    assert payload["all_targets_met"] is False
