"""The ``logitkit`` command line: ``logitkit <verb> ...``.

argparse, not click/typer: it is in the standard library (no extra dependency for a tool that is
mostly a library), and each verb is a small set of flags that argparse sub-parsers express directly.
A capability that has a verb provides ``logitkit.<capability>.cli.configure(parser)``, which adds
its flags and sets ``handler``; this module only wires the verbs together.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from logitkit import __version__

VERBS = {
    "audit": ("logitkit.audit.cli", "can each class ever win the argmax of W z + b? (exact)"),
    "thresholds": ("logitkit.thresholds.cli", "fit or apply per-class decision weights"),
    "reproduce": ("logitkit.experiments.cli", "run the experiments and write report.md"),
    "bench": ("logitkit.bench", "run benchmark scripts; each prints one JSON object"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logitkit",
        description="Tools for the output layer of classifiers and language models.",
    )
    parser.add_argument("--version", action="version", version=f"logitkit {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, (module_name, help_text) in VERBS.items():
        sub = verbs.add_parser(verb, help=help_text, description=help_text)
        importlib.import_module(module_name).configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"logitkit {args.verb}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
