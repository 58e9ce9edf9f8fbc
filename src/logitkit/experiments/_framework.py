"""Registry, runner (with resume) and report writer for ``logitkit reproduce``.

numpy and torch are imported where they are used, not here: ``logitkit reproduce --help`` imports
this module (through ``logitkit.experiments``) to list the experiments, and must start at once.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import json
import math
import numbers
import os
import pkgutil
import platform
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from logitkit import __version__
from logitkit._utils import MissingExtra, atomic_write_text, check_writable, progress

SIZES = ("smoke", "quick", "full")
# No "inconclusive": a claim the demo size cannot decide gets a design that can.
VERDICTS = ("reproduced", "not reproduced", "partly")
# The five source posts (Su Jianlin, Scientific Spaces; the originals are in ../shared/seeds/).
POSTS = {
    "emo": "https://kexue.fm/archives/9797",
    "optim": "https://kexue.fm/archives/9736",
    "matching": "https://kexue.fm/archives/8860",
    "tailr": "https://kexue.fm/archives/9526",
    "audit": "https://kexue.fm/archives/9046",
}
# A claim about training is decided by paired differences over at least this many seeds (at the
# quick and full sizes; smoke only checks that everything runs).
MIN_PAIRED_SEEDS = 3
# Saved results of another format are rerun (and left out of the report until they are).
RESULT_FORMAT = 2
# "all" runs experiments in this order (cheap first); any other module found runs after them.
PREFERRED_ORDER = ("thresholds", "audit", "emo", "tailr", "optim", "matching")
DEFAULT_THREADS = 2
# seeds are 0 <= seed < SEED_LIMIT: numpy and scikit-learn take seeds below 2**32, and experiments
# derive their further seeds as seed + 1, seed + 2, ...; 2**31 leaves room for those.
SEED_LIMIT = 2**31


def check_seed(seed: Any, *, name: str = "seed") -> int:
    """``seed`` if it is an integer in ``[0, SEED_LIMIT)``, else a ValueError that says so."""
    if (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
            or not 0 <= seed < SEED_LIMIT):
        raise ValueError(f"{name} must be an integer from 0 to {SEED_LIMIT - 1} (2**31 - 1), got "
                         f"{seed!r}")
    return int(seed)


@dataclass
class Context:
    size: str
    out_dir: Path
    data_dir: Path | None = None
    seed: int = 0
    threads: int | None = None  # None: each experiment's own THREADS

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {self.size!r}")
        check_seed(self.seed)
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

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
    """One tested claim: the post's sentence (``seed_quote``, translated, from ``source``), the
    claim as tested here, its verdict and the numbers behind it.

    ``training=True`` marks a claim about training, which needs ``MIN_PAIRED_SEEDS`` paired seeds
    at the quick and full sizes (checked by :func:`check_claims`).
    """

    claim: str
    verdict: str
    measured: list[dict[str, Any]]
    settings: dict[str, Any]
    seeds: list[int]
    seed_quote: str
    source: str
    training: bool = False
    notes: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if not self.seed_quote.strip():
            raise ValueError(f"claim {self.claim!r} needs the post's sentence it tests "
                             "(seed_quote)")
        if self.source not in POSTS.values():
            raise ValueError(f"source must be one of the posts {sorted(POSTS.values())}, got "
                             f"{self.source!r}")


def check_claims(claims: list[Claim], size: str) -> None:
    """Raise ValueError if a training claim rests on fewer than ``MIN_PAIRED_SEEDS`` seeds (quick
    and full sizes)."""
    if size == "smoke":
        return
    for claim in claims:
        if claim.training and len(set(claim.seeds)) < MIN_PAIRED_SEEDS:
            raise ValueError(f"training claim {claim.claim!r} has {len(set(claim.seeds))} seed(s); "
                             f"size {size} needs at least {MIN_PAIRED_SEEDS} paired seeds")


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
        payload = {k: v for k, v in payload.items() if not k.startswith("_")}
        claims = [Claim(**claim) for claim in payload.pop("claims")]
        return cls(claims=claims, **payload)


def available() -> list[str]:
    """Names of the experiment modules in this package, in report order."""
    folder = str(Path(__file__).parent)
    found = [m.name for m in pkgutil.iter_modules([folder]) if not m.name.startswith("_")]
    found = [name for name in found if name != "cli"]
    ordered = [name for name in PREFERRED_ORDER if name in found]
    return ordered + sorted(set(found) - set(ordered))


def experiment_module(name: str) -> Any:
    """The experiment's module; a missing optional package raises :class:`MissingExtra`."""
    try:
        return importlib.import_module(f"logitkit.experiments.{name}")
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] == "logitkit":
            raise
        raise _missing(name, error.name) from error


def _missing(experiment: str, package: str) -> MissingExtra:
    return MissingExtra(f"experiment {experiment!r} needs the Python package {package!r}, which "
                        'is not installed: pip install "logitkit[reproduce]"')


def check_needs(names: list[str]) -> None:
    """Fail before any work if an experiment's optional packages (its ``NEEDS``) are missing."""
    for name in names:
        for package in getattr(experiment_module(name), "NEEDS", ()):
            if importlib.util.find_spec(package) is None:
                raise _missing(name, package)


def estimated_minutes(name: str, size: str) -> float | None:
    """The experiment's own estimate (its ``MINUTES[size]``, on 2 idle cores), if it gives one."""
    return getattr(experiment_module(name), "MINUTES", {}).get(size)


def threads_for(name: str, ctx: Context) -> int:
    """Torch threads for one experiment: ``--threads`` if given, else the module's ``THREADS``."""
    if ctx.threads is not None:
        return ctx.threads
    return int(getattr(experiment_module(name), "THREADS", DEFAULT_THREADS))


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the body with ``count`` torch intra-op threads, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def git_commit() -> str | None:
    """The commit of the source checkout this package runs from (``+dirty`` if edited), or None."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "--short=10", "HEAD"],
                                capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment(threads: int) -> dict[str, Any]:
    """What produced a result: versions, commit, date, threads and machine."""
    import torch

    return {
        "logitkit": __version__,
        "git_commit": git_commit(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "threads": threads,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
    }


def describe_plan(names: list[str], ctx: Context) -> str:
    """One line: what will run, at which size, and the experiments' own time estimates."""
    estimates = [estimated_minutes(name, ctx.size) for name in names]
    known = [m for m in estimates if m is not None]
    total = f"about {sum(known):.3g} min on 2 idle CPU cores" if known else "time unknown"
    if len(known) < len(estimates):
        total += " for those that give an estimate"
    hint = {"full": "; --quick takes minutes, --smoke seconds",
            "quick": "; the default (full) size is the real test"}.get(ctx.size, "")
    return f"size {ctx.size}: {', '.join(names)} ({total}{hint})"


def run_experiments(
    names: list[str], ctx: Context, *, force: bool = False, log: TextIO | None = None
) -> list[Result]:
    """Run each named experiment, or load its saved result; then write report.md and report.json.

    Each experiment's result is saved atomically in ``ctx.out_dir/<name>/result.json`` as soon as
    it finishes, so an interrupted run resumes where it stopped; ``force=True`` reruns finished
    ones. A result saved at another size, seed or data folder is rerun. The report covers every
    result saved in ``ctx.out_dir``, not only those of this call; it is written even when a run is
    interrupted. Returns the results of ``names``.
    """
    known = available()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; available: {known}")
    log = sys.stderr if log is None else log
    check_writable(ctx.out_dir / "report.md")
    check_needs(names)
    print(describe_plan(names, ctx), file=log, flush=True)
    results = []
    try:
        for name in names:
            results.append(_run_or_load(name, ctx, force=force, log=log))
    finally:
        write_report(ctx.out_dir)
    return results


def _run_or_load(name: str, ctx: Context, *, force: bool, log: TextIO) -> Result:
    folder = ctx.out_dir / name
    saved = folder / "result.json"
    stamp = {"size": ctx.size, "seed": ctx.seed, "data_dir": str(ctx.data_dir),
             "format": RESULT_FORMAT}
    if saved.exists() and not force:
        payload = json.loads(saved.read_text())
        if payload.get("_run") == stamp:
            print(f"[{name}] already done ({saved}); --force reruns it", file=log)
            return Result.from_json(payload)
    folder.mkdir(parents=True, exist_ok=True)
    threads = threads_for(name, ctx)
    minutes = estimated_minutes(name, ctx.size)
    estimate = f", about {minutes:g} min on 2 idle cores" if minutes is not None else ""
    print(f"[{name}] running ({ctx.size}, {threads} thread(s){estimate})", file=log, flush=True)
    seed_everything(ctx.seed)
    sub_ctx = Context(size=ctx.size, out_dir=folder, data_dir=ctx.data_dir, seed=ctx.seed,
                      threads=threads)
    start = time.perf_counter()
    with torch_threads(threads):
        result = experiment_module(name).run(sub_ctx)
    result.timings.setdefault("total_s", round(time.perf_counter() - start, 2))
    check_claims(result.claims, ctx.size)
    check_finite(result.numbers, where=f"{name}.numbers")
    payload = {**asdict(result), "_run": stamp, "_environment": environment(threads)}
    atomic_write_text(saved, json.dumps(payload, indent=2) + "\n")
    print(f"[{name}] done in {result.timings['total_s']:.1f} s", file=log, flush=True)
    return result


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


def saved_results(out_dir: Path) -> list[dict[str, Any]]:
    """Every ``<name>/result.json`` in ``out_dir`` for a known experiment and of this
    ``RESULT_FORMAT``, in report order."""
    payloads = []
    for name in available():
        path = out_dir / name / "result.json"
        if path.is_file():
            payload = json.loads(path.read_text())
            if payload.get("_run", {}).get("format") == RESULT_FORMAT:
                payloads.append(payload)
    return payloads


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        value = json.dumps(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)\n"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def settings_lines(settings: dict[str, Any]) -> list[str]:
    """Settings as a bullet list, one ``key: value`` a line, nested dicts indented."""
    lines = []
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            lines.append(f"- {key}:")
            lines += ["  " + line for line in settings_lines(value)]
        else:
            lines.append(f"- {key}: {_cell(value)}")
    return lines


def _run_line(payload: dict[str, Any]) -> str:
    run, env = payload.get("_run", {}), payload.get("_environment", {})
    commit = f" (git {env['git_commit']})" if env.get("git_commit") else ""
    data = run.get("data_dir")
    parts = [
        f"size `{run.get('size', '?')}`",
        f"seed {run.get('seed', '?')}",
        f"data `{data}`" if data not in (None, "None") else "embedded data (no --data)",
        f"logitkit {env.get('logitkit', '?')}{commit}",
        f"torch {env.get('torch', '?')}",
        f"{env.get('threads', '?')} thread(s)",
        env.get("machine", ""),
        env.get("date_utc", "") + " UTC" if env.get("date_utc") else "",
    ]
    return "Run: " + ", ".join(p for p in parts if p)


def _seed_words(claim: Claim) -> str:
    count = len(claim.seeds)
    paired = "paired " if claim.training and count > 1 else ""
    return f"{count} {paired}seed{'s' if count != 1 else ''}"


def render_report(payloads: list[dict[str, Any]]) -> str:
    """``report.md`` for saved results: a verdict summary, then a section per experiment."""
    lines = ["# logitkit reproduce report", ""]
    if not payloads:
        return "\n".join(lines + ["No experiment has finished in this folder yet.", ""])
    lines += ["| experiment | size | seeds | claim | verdict |", "|---|---|---|---|---|"]
    for payload in payloads:
        size = payload.get("_run", {}).get("size", "?")
        for claim in payload["claims"]:
            lines.append(f"| {payload['name']} | {size} | {len(claim['seeds'])} "
                         f"| {_cell(claim['claim'])} | **{claim['verdict']}** |")
    for payload in payloads:
        result = Result.from_json(payload)
        lines += ["", f"## {result.name}: {result.title}", "", _run_line(payload), "",
                  f"Data: {result.data}", ""]
        shown: list[list[dict[str, Any]]] = []
        size = payload.get("_run", {}).get("size", "?")
        for claim in result.claims:
            lines += [f"### Claim: {claim.claim}", "",
                      f"> {claim.seed_quote}", ">",
                      f"> (the post, translated: <{claim.source}>)", "",
                      f"Verdict: **{claim.verdict}** (size `{size}`, {_seed_words(claim)})", ""]
            if claim.measured in shown:
                lines.append("Measured: the same table as the claim above.\n")
            else:
                lines.append(markdown_table(claim.measured))
                shown.append(claim.measured)
            seeds = ", ".join(map(str, claim.seeds))
            lines += ["Settings:", "", *settings_lines(claim.settings),
                      f"- seeds: {seeds} ({len(claim.seeds)} seed(s))"]
            if claim.notes:
                lines += ["", claim.notes]
            lines.append("")
        for plot in result.plots:
            lines += [f"![{plot}]({result.name}/{plot})", ""]
        timing = ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items())
        lines.append(f"Timings (s, not part of the reproducible numbers): {timing}")
    return "\n".join(lines) + "\n"


def _report_entry(payload: dict[str, Any]) -> dict[str, Any]:
    """One experiment in ``report.json``: its result, run and environment; each claim also names
    the size its verdict came from."""
    size = payload.get("_run", {}).get("size")
    entry = {k: v for k, v in payload.items() if not k.startswith("_")}
    entry["claims"] = [{**claim, "size": size} for claim in entry["claims"]]
    return {**entry, "run": payload.get("_run"), "environment": payload.get("_environment")}


def write_report(out_dir: Path) -> None:
    """Write ``report.md`` and ``report.json`` covering every result saved in ``out_dir``."""
    payloads = saved_results(out_dir)
    atomic_write_text(out_dir / "report.md", render_report(payloads))
    report = {"experiments": {p["name"]: _report_entry(p) for p in payloads}}
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
