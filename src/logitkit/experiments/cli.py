"""``logitkit reproduce [NAME ...|all] [--quick|--smoke] [--out DIR] [--data DIR] [--threads N]``.

Every flag is checked before the first experiment starts (a bad ``--seed``, ``--threads``,
``--data`` or ``--out`` is a one-line error, exit status 2). ``configure`` imports nothing heavy
(``_framework`` imports torch and numpy only where it uses them), so ``--help`` starts at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from logitkit._utils import check_input_folder, check_output_folder
from logitkit.experiments import _framework
from logitkit.experiments._framework import SEED_LIMIT, Context, check_seed, run_experiments


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", default=["all"],
                        help=f"experiments ({', '.join(_framework.available())}) or all")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick",
                      help="minutes on a laptop CPU (what `make demo` runs)")
    size.add_argument("--smoke", dest="size", action="store_const", const="smoke",
                      help="seconds; checks that everything runs, numbers mean little")
    size.add_argument("--full", dest="size", action="store_const", const="full",
                      help="the default: seeds and sizes behind the verdicts (about an hour "
                           "or more on 2 CPU cores; each experiment prints its estimate)")
    parser.set_defaults(size="full", handler=run)
    parser.add_argument("--out", type=Path, default=Path("reproduce-out"),
                        help="output folder, created (with its parents) if needed "
                             "(default: reproduce-out)")
    parser.add_argument("--data", type=Path, default=None,
                        help="real data folder (layout of ../shared/data: lm/*.txt, "
                             "stsb/stsbenchmark.tsv.gz); default: embedded data")
    parser.add_argument("--seed", type=int, default=0,
                        help=f"random seed, an integer from 0 to {SEED_LIMIT - 1} (default 0); "
                             "experiments with several seeds use SEED, SEED+1, ...; results "
                             "saved with another seed are rerun")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for every experiment (default: each experiment's "
                             "own choice, 1 for small models)")
    parser.add_argument("--force", action="store_true", help="rerun experiments already done")


def run(args: argparse.Namespace) -> int:
    check_seed(args.seed, name="--seed")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    if args.data is not None:
        check_input_folder(args.data, flag="--data")
    known = _framework.available()  # looked up on the module: tests replace it
    names = known if args.names == ["all"] else args.names
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; available: {known}")
    check_output_folder(args.out, flag="--out")
    ctx = Context(size=args.size, out_dir=args.out, data_dir=args.data, seed=args.seed,
                  threads=args.threads)
    results = run_experiments(names, ctx, force=args.force)
    print(f"wrote {args.out / 'report.md'} and report.json ({len(results)} experiment(s) run "
          "or loaded; the report covers every result in that folder)")
    return 0
