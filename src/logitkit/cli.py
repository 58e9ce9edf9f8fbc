"""The ``logitkit`` command line: ``logitkit <verb> ...`` (also ``python -m logitkit``).

argparse, not click/typer: it is in the standard library (no extra dependency for a tool that is
mostly a library), and each verb is a small set of flags that argparse sub-parsers express directly.
A capability that has a verb provides ``logitkit.<capability>.cli.configure(parser)``, which adds
its flags and sets ``handler``; this module only wires the verbs together. Only the chosen verb's
module is imported, so ``logitkit --help`` does not pay for torch or scipy.

Errors a user can cause (bad values, missing files, unwritable outputs, a missing optional
extra) print one line, ``logitkit VERB: error: ...``, and exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from logitkit import __version__
from logitkit._utils import MissingExtra

VERBS = {
    "audit": ("logitkit.audit.cli", "can each class ever win the argmax of W z + b? (exact)"),
    "thresholds": ("logitkit.thresholds.cli", "fit or apply per-class decision weights"),
    "pairs": ("logitkit.matching.cli", "score sentence pairs (bi- or cross-encoder); tune or "
              "apply a similarity threshold"),
    "reproduce": ("logitkit.experiments.cli", "run the experiments and write report.md"),
    "bench": ("logitkit.bench", "run benchmark scripts; each prints a table of its cases and "
              "saves one JSON object in --out DIR"),
}
INTERRUPTED = 130


def chosen_verb(argv: Sequence[str]) -> str | None:
    """The verb in ``argv``: its first word that is not an option (top flags take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``verb``'s own flags are configured (its module imported), if given."""
    parser = argparse.ArgumentParser(
        prog="logitkit",
        description="Tools for the output layer of classifiers and language models.",
        epilog="`logitkit VERB --help` shows a verb's options.",
    )
    parser.add_argument("--version", action="version", version=f"logitkit {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, (module_name, help_text) in VERBS.items():
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        if name == verb:
            importlib.import_module(module_name).configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = chosen_verb(argv)
    try:
        args = build_parser(verb if verb in VERBS else None).parse_args(argv)
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        resume = "; finished experiments are saved, run the same command again to resume"
        print(f"\nlogitkit {verb}: interrupted{resume if verb == 'reproduce' else ''}",
              file=sys.stderr)
        return INTERRUPTED
    except (ValueError, OSError, KeyError, MissingExtra) as error:
        print(f"logitkit {verb}: error: {_message(error)}", file=sys.stderr)
        return 2


def _message(error: BaseException) -> str:
    """The error's text once: no repr quotes (KeyError), no doubled file names (OSError)."""
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.filename}: {error.strerror}"
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
