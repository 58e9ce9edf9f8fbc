"""``logitkit bench [NAME ...|all] [--quick] [--out DIR]``: run the bundled benchmarks.

The benchmarks are the modules of ``logitkit.benchmarks`` (they ship with the package); each
measures logitkit and its baselines in the same process and prints one JSON object (see
``logitkit.benchmarks.harness``). This verb runs the chosen ones in fresh interpreters
(``python -m logitkit.benchmarks.NAME``), one after another, and saves each object to
``OUT/<name>.json``: ``--out`` is always a folder (created if needed), never a file name; an
``--out`` that is an existing file or ends in ``.json`` is refused before anything runs. Each
benchmark also prints a table of its cases (ratios, targets, met) on stderr as it finishes; with
``--quick`` a target that the smaller sizes cannot test says so instead of "not met". The baselines
come with the ``bench`` extra: ``pip install "logitkit[bench]"``. ``--dir`` runs the scripts of
another folder instead (``NAME.py`` each).
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

from logitkit._utils import (
    MissingExtra,
    atomic_write_text,
    check_input_folder,
    check_output_folder,
)

PACKAGE = "logitkit.benchmarks"


def available(directory: Path | None = None) -> list[str]:
    """Benchmark names: bundled modules, or a folder's scripts; ``_*`` and the harness excluded."""
    if directory is None:
        folder = Path(__file__).parent / "benchmarks"
        names = [module.name for module in pkgutil.iter_modules([str(folder)])]
    else:
        names = [path.stem for path in directory.glob("*.py")]
    return sorted(name for name in names if not name.startswith("_") and name != "harness")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", default=["all"],
                        help=f"benchmarks to run ({', '.join(available())}) or all")
    parser.add_argument("--quick", action="store_true",
                        help="smaller shapes, for a quick look; targets those shapes cannot test "
                             "are marked so in the table")
    parser.add_argument("--out", type=Path, default=Path("bench-out"), metavar="DIR",
                        help="folder (created if needed) that receives NAME.json for each "
                             "benchmark run (default: bench-out)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="run NAME.py scripts from this folder instead of the bundled ones")
    parser.set_defaults(handler=run)


def check_baselines(name: str) -> None:
    """Import a bundled benchmark (its main part does not run): a missing baseline is named."""
    try:
        importlib.import_module(f"{PACKAGE}.{name}")
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] == "logitkit":
            raise
        raise MissingExtra(f"benchmark {name!r} needs the Python package {error.name!r}, which "
                           'is not installed: pip install "logitkit[bench]"') from error


def command(name: str, directory: Path | None, quick: bool) -> list[str]:
    """The interpreter command that runs one benchmark."""
    target = ["-m", f"{PACKAGE}.{name}"] if directory is None else [str(directory / f"{name}.py")]
    return [sys.executable, *target, *(["--quick"] if quick else [])]


def check_out(out: Path) -> None:
    """``--out`` names a folder: a file, or a ``.json`` name that is no folder, is refused."""
    if out.suffix.lower() == ".json" and not out.is_dir():
        raise ValueError(f"--out {out} looks like a file name, but --out is a folder: each "
                         f"benchmark's JSON is saved in it as NAME.json (e.g. --out "
                         f"{out.with_suffix('')} writes {out.with_suffix('')}/NAME.json)")
    check_output_folder(out, flag="--out")


def run(args: argparse.Namespace) -> int:
    if args.dir is not None:
        check_input_folder(args.dir, flag="--dir")
    names = available(args.dir)
    chosen = names if args.names == ["all"] else args.names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; available: {names}")
    check_out(args.out)
    for name in chosen:
        if (args.out / f"{name}.json").is_dir():
            raise IsADirectoryError(f"{args.out / f'{name}.json'} is a folder; move it away, "
                                    f"it is where benchmark {name!r} saves its JSON")
        if args.dir is None:
            check_baselines(name)
    failed = []
    for name in chosen:
        print(f"== benchmark {name}", file=sys.stderr, flush=True)
        done = subprocess.run(command(name, args.dir, args.quick), stdout=subprocess.PIPE,
                              text=True)
        if done.returncode != 0:
            failed.append(name)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        atomic_write_text(args.out / f"{name}.json", json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0
