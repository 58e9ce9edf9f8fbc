"""Registry, runner (with resume) and report writer for ``logitkit reproduce``."""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from logitkit._utils import progress

SIZES = ("smoke", "quick", "full")
VERDICTS = ("reproduced", "not reproduced", "partly")
# "all" runs experiments in this order (cheap first); any other module found runs after them.
PREFERRED_ORDER = ("thresholds", "audit", "losses", "optim", "matching")


@dataclass
class Context:
    size: str
    out_dir: Path
    data_dir: Path | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {self.size!r}")

    def progress(self, iterable: Any = None, **kwargs: Any) -> Any:
        return progress(iterable, **kwargs)

    def data_file(self, relative: str) -> Path | None:
        """``data_dir / relative`` if a data folder was given and the file exists, else None."""
        if self.data_dir is None:
            return None
        path = self.data_dir / relative
        return path if path.exists() else None


@dataclass
class Claim:
    claim: str
    verdict: str
    measured: list[dict[str, Any]]
    settings: dict[str, Any]
    seeds: list[int]
    notes: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass
class Result:
    name: str
    title: str
    data: str
    claims: list[Claim]
    numbers: dict[str, Any]
    plots: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Result:
        claims = [Claim(**claim) for claim in payload.pop("claims")]
        return cls(claims=claims, **payload)


def available() -> list[str]:
    """Names of the experiment modules in this package, in report order."""
    folder = str(Path(__file__).parent)
    found = [m.name for m in pkgutil.iter_modules([folder]) if not m.name.startswith("_")]
    found = [name for name in found if name != "cli"]
    ordered = [name for name in PREFERRED_ORDER if name in found]
    return ordered + sorted(set(found) - set(ordered))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_experiments(
    names: list[str], ctx: Context, *, force: bool = False, log: Any = sys.stderr
) -> list[Result]:
    """Run each named experiment, or load its saved result; then write report.md and report.json.

    Each experiment's result is saved in ``ctx.out_dir/<name>/result.json`` as soon as it finishes,
    so an interrupted run resumes where it stopped; ``force=True`` reruns finished ones.
    A result saved at another size or seed is rerun.
    """
    known = available()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; available: {known}")
    results = []
    for name in names:
        folder = ctx.out_dir / name
        saved = folder / "result.json"
        stamp = {"size": ctx.size, "seed": ctx.seed, "data_dir": str(ctx.data_dir)}
        if saved.exists() and not force:
            payload = json.loads(saved.read_text())
            if payload.pop("_run", None) == stamp:
                print(f"[{name}] already done ({saved}); --force reruns it", file=log)
                results.append(Result.from_json(payload))
                continue
        folder.mkdir(parents=True, exist_ok=True)
        print(f"[{name}] running ({ctx.size})", file=log, flush=True)
        seed_everything(ctx.seed)
        module = importlib.import_module(f"logitkit.experiments.{name}")
        start = time.perf_counter()
        sub_ctx = Context(size=ctx.size, out_dir=folder, data_dir=ctx.data_dir, seed=ctx.seed)
        result = module.run(sub_ctx)
        result.timings.setdefault("total_s", round(time.perf_counter() - start, 2))
        check_finite(result.numbers, where=f"{name}.numbers")
        saved.write_text(json.dumps({**asdict(result), "_run": stamp}, indent=2) + "\n")
        print(f"[{name}] done in {result.timings['total_s']:.1f} s", file=log, flush=True)
        results.append(result)
    write_report(results, ctx)
    return results


def check_finite(value: Any, *, where: str) -> None:
    """Raise ValueError if any number nested in ``value`` is NaN or infinite."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, where=f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_finite(item, where=f"{where}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"non-finite number at {where}: {value}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)\n"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(results: list[Result], ctx: Context) -> None:
    """Write ``report.md`` (a table per claim, plots inline) and ``report.json`` (all numbers)."""
    lines = [
        "# logitkit reproduce report",
        "",
        f"Size: `{ctx.size}`, seed: {ctx.seed}, data: "
        + (f"`{ctx.data_dir}`" if ctx.data_dir else "embedded defaults (no --data given)"),
        "",
        "| experiment | claim | verdict |",
        "|---|---|---|",
    ]
    for result in results:
        for claim in result.claims:
            lines.append(f"| {result.name} | {_cell(claim.claim)} | **{claim.verdict}** |")
    for result in results:
        lines += ["", f"## {result.name}: {result.title}", "", f"Data: {result.data}", ""]
        for claim in result.claims:
            lines += [f"### Claim: {claim.claim}", "", f"Verdict: **{claim.verdict}**", ""]
            lines.append(markdown_table(claim.measured))
            lines.append(f"Settings: `{json.dumps(claim.settings, sort_keys=True)}`  ")
            lines.append(f"Seeds: {claim.seeds}")
            if claim.notes:
                lines += ["", claim.notes]
            lines.append("")
        for plot in result.plots:
            lines += [f"![{plot}]({result.name}/{plot})", ""]
        timing = ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
        lines.append(f"Timings (s, not part of the reproducible numbers): {timing}")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "report.md").write_text("\n".join(lines) + "\n")
    payload = {
        "size": ctx.size,
        "seed": ctx.seed,
        "data_dir": str(ctx.data_dir) if ctx.data_dir else None,
        "experiments": {r.name: asdict(r) for r in results},
    }
    (ctx.out_dir / "report.json").write_text(json.dumps(payload, indent=2) + "\n")
