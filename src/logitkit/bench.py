"""``logitkit bench``: run the scripts in the repository's ``benchmarks/`` folder.

Each script prints one JSON object (see ``benchmarks/harness.py``); this verb runs the chosen ones
in fresh interpreters, one after another, and saves each object to ``OUT/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def available(directory: Path) -> list[str]:
    """Benchmark names: the scripts in ``directory`` that do not start with ``_`` or ``harness``."""
    return sorted(
        p.stem
        for p in directory.glob("*.py")
        if not p.stem.startswith("_") and p.stem != "harness"
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", default=["all"], help="benchmarks to run, or 'all'")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the benchmarks folder")
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="where JSON goes")
    parser.add_argument("--quick", action="store_true", help="smaller shapes, for a quick look")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.dir.is_dir():
        raise FileNotFoundError(
            f"no benchmarks folder at {args.dir}; benchmarks ship with the source repository, "
            "pass --dir to point at it"
        )
    names = available(args.dir)
    chosen = names if args.names == ["all"] else args.names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; available: {names}")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in chosen:
        print(f"== benchmark {name}", file=sys.stderr, flush=True)
        command = [sys.executable, str(args.dir / f"{name}.py")]
        if args.quick:
            command.append("--quick")
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            failed.append(name)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0
