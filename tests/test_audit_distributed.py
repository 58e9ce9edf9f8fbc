"""`check_argmaxable` split across ranks: the merged result is the single-process one.

The unit tests split and merge in one process; the slow ones run 2 gloo processes
(``torch.multiprocessing.spawn``) and the real CLI under ``torchrun --nproc_per_node 2``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from logitkit.audit import AuditResult, check_argmaxable
from logitkit.audit.distributed import (
    check_argmaxable_distributed,
    launched_distributed,
    merge_results,
    reports,
    split_classes,
)
from tests.distributed_helpers import free_port, leave_worker

WORLD = 2
REPO_ROOT = Path(__file__).resolve().parents[1]


def _head() -> tuple[np.ndarray, np.ndarray]:
    """34 x 3 with a bias: argmaxable rows, rows inside the hull, a triple of identical rows."""
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(30, 3))
    weight = np.vstack([weight, weight[:10].mean(0), 0.5 * (weight[3] + weight[4]), weight[7],
                        weight[7]])
    bias = np.zeros(len(weight))
    bias[:30] = 0.01 * rng.normal(size=30)
    bias[30], bias[31], bias[32:] = -1.0, 0.5 * (bias[3] + bias[4]), bias[7]
    return weight, bias


def _assert_same(got: AuditResult, expected: AuditResult) -> None:
    np.testing.assert_array_equal(got.classes, expected.classes)
    np.testing.assert_array_equal(got.status, expected.status)
    np.testing.assert_array_equal(got.stage, expected.stage)
    np.testing.assert_array_equal(got.margin, expected.margin)  # exactly
    assert list(got.witnesses) == list(expected.witnesses)
    for k, z in expected.witnesses.items():
        np.testing.assert_array_equal(got.witnesses[k], z)
    assert list(got.certificates) == list(expected.certificates)
    for k, cert in expected.certificates.items():
        assert got.certificates[k].to_dict() == cert.to_dict()
    assert [g.tolist() for g in got.duplicate_groups] == \
        [g.tolist() for g in expected.duplicate_groups]
    assert {**got.settings, "world_size": None} == {**expected.settings, "world_size": None}


def test_the_test_head_has_every_kind_of_verdict():
    result = check_argmaxable(*_head(), show_progress=False)
    assert result.counts["argmaxable"] and result.counts["unargmaxable"] and result.counts["tie"]
    assert [g.tolist() for g in result.duplicate_groups] == [[7, 32, 33]]


def test_split_is_interleaved_and_covers_every_class_once():
    ids = np.array([5, 3, 9, 0, 7])
    shares = [split_classes(ids, r, 3).tolist() for r in range(3)]
    assert shares == [[5, 0], [3, 7], [9]]
    assert split_classes(ids[:1], 2, 3).tolist() == []
    with pytest.raises(ValueError, match="rank must lie"):
        split_classes(ids, 3, 3)


@pytest.mark.parametrize("world", [2, 3, 5])
@pytest.mark.parametrize("classes", [None, [33, 7, 0, 31, 30, 12, 32, 4]])
def test_merged_shares_equal_one_audit(world, classes):
    weight, bias = _head()
    whole = check_argmaxable(weight, bias, classes=classes, show_progress=False)
    parts = [check_argmaxable(weight, bias, classes=split_classes(whole.classes, r, world),
                              show_progress=False) for r in range(world)]
    merged = merge_results(parts, whole.classes)
    _assert_same(merged, whole)
    assert merged.settings["world_size"] == world
    assert merged.timings["total_s"] == max(p.timings["total_s"] for p in parts)
    assert merged.timings[f"rank{world - 1}_total_s"] == parts[-1].timings["total_s"]
    payload = json.loads(merged.to_json(include_evidence=True))
    expected = json.loads(whole.to_json(include_evidence=True))
    for key in ("timings", "settings"):
        payload.pop(key), expected.pop(key)
    assert payload == expected


def test_merge_refuses_gaps_overlaps_and_different_heads():
    weight, bias = _head()
    parts = [check_argmaxable(weight, bias, classes=[0, 1], show_progress=False),
             check_argmaxable(weight, bias, classes=[2], show_progress=False)]
    with pytest.raises(ValueError, match="exactly once"):
        merge_results(parts, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="exactly once"):
        merge_results(parts + parts[1:], [0, 1, 2])
    other = check_argmaxable(weight, bias, classes=[2], tol=1e-6, show_progress=False)
    with pytest.raises(ValueError, match="different heads or settings"):
        merge_results([parts[0], other], [0, 1, 2])


def test_a_single_process_is_a_plain_audit(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    assert not launched_distributed() and reports()
    weight, bias = _head()
    result = check_argmaxable_distributed(weight, bias, show_progress=False)
    assert result is not None and "world_size" not in result.settings
    _assert_same(result, check_argmaxable(weight, bias, show_progress=False))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("RANK", "1")
    assert launched_distributed() and not reports()


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    weight, bias = _head()
    result = check_argmaxable_distributed(torch.tensor(weight), torch.tensor(bias),
                                          show_progress=False)
    assert not torch.distributed.is_initialized()  # the group it created is gone
    assert (result is None) == (rank != 0)
    if result is not None:
        torch.save(result, out, pickle_protocol=4)
    leave_worker()


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_result(tmp_path):
    out = tmp_path / "merged.pt"
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD)
    merged = torch.load(out, weights_only=False)
    _assert_same(merged, check_argmaxable(*_head(), show_progress=False))
    assert merged.settings["world_size"] == WORLD


@pytest.mark.slow
def test_cli_under_torchrun_writes_the_single_process_json(tmp_path):
    weight, bias = _head()
    head = tmp_path / "head.pt"
    torch.save({"lm_head.weight": torch.tensor(weight), "lm_head.bias": torch.tensor(bias)}, head)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}",
              f"--master_port={free_port()}", "-m", "logitkit", "audit", str(head), "--json",
              str(tmp_path / "split.json"), "--evidence"]
    run = subprocess.run(launch, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("audited 34 classes") == 1  # only rank 0 prints the summary
    single = subprocess.run([sys.executable, "-m", "logitkit", "audit", str(head), "--json",
                             str(tmp_path / "one.json"), "--evidence"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    split = json.loads((tmp_path / "split.json").read_text())
    whole = json.loads((tmp_path / "one.json").read_text())
    assert split["settings"].pop("world_size") == WORLD
    assert set(split.pop("timings")) >= {"total_s", "rank0_total_s", "rank1_total_s"}
    whole.pop("timings")
    assert split == whole
