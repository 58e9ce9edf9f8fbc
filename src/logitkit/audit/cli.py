"""`logitkit audit PATH`: can each class of a checkpoint's output layer win the argmax?

    logitkit audit PATH [--classes 0,5,10-20] [--box B] [--tol T] [--json out.json [--evidence]]
                        [--plot margins.png] [--fail-on unargmaxable[,tie,unknown]]

Exit status: 0, or 1 when a class has a status named by ``--fail-on`` (a pipeline can stop on
it), or 2 on a usage error. Outputs are checked for writability before the audit starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from logitkit.audit.statuses import METHODS, STATUSES

FAILED = 1


def parse_classes(text: str) -> list[int]:
    """``"0,5,10-20"`` -> ``[0, 5, 10, ..., 20]`` (ranges are inclusive)."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                if high < low:
                    raise ValueError
                ids.extend(range(low, high + 1))
            else:
                ids.append(int(part))
        except ValueError as error:
            raise ValueError(f"--classes: cannot read {part!r}; expected ids and ranges like "
                             "0,5,10-20") from error
    return ids


def parse_statuses(text: str) -> list[str]:
    """``"unargmaxable,tie"`` -> the statuses that make the command fail."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    wrong = [name for name in names if name not in STATUSES[1:]]
    if wrong or not names:
        raise ValueError(f"--fail-on: expected a comma-separated list of {', '.join(STATUSES[1:])}"
                         f"; got {text!r}")
    return names


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="checkpoint: .safetensors, .gguf, HF model folder (sharded "
                                     "or not), .pt/.bin, .npy/.npz")
    parser.add_argument("--key", help="name of the weight tensor (default: the output head)")
    parser.add_argument("--classes", help="audit only these ids, e.g. 0,5,10-20")
    parser.add_argument("--method", choices=METHODS, default="exact")
    parser.add_argument("--box", type=float, help="bound the inputs: |z|_inf <= BOX")
    parser.add_argument("--tol", type=float, default=1e-9,
                        help="relative tolerance that separates ties (default 1e-9)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes for the exact stage (default 1)")
    parser.add_argument("--no-bias", action="store_true", help="ignore the bias if there is one")
    parser.add_argument("--json", type=Path, help="write the result (statuses, margins) here")
    parser.add_argument("--evidence", action="store_true",
                        help="with --json: also write every witness and certificate (an "
                             "interior class's certificate may list every row of the head)")
    parser.add_argument("--plot", type=Path, help="write a PNG of each class's margin here")
    parser.add_argument("--fail-on", default="",
                        metavar="STATUS[,STATUS]",
                        help="exit with status 1 if a class is unargmaxable, tie or unknown")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from logitkit._utils import atomic_write_text, check_writable
    from logitkit.audit.argmaxable import check_argmaxable
    from logitkit.audit.checkpoint import read_head
    from logitkit.audit.report import plot_margins, summary

    fail_on = parse_statuses(args.fail_on) if args.fail_on else []
    if args.evidence and args.json is None:
        raise ValueError("--evidence needs --json PATH (the evidence goes into that file)")
    for output in (args.json, args.plot):
        if output is not None:
            check_writable(output)
    if args.plot is not None:
        from logitkit._utils import require

        require("matplotlib", extra="plots", purpose="--plot")
    head = read_head(args.path, key=args.key)
    bias = None if args.no_bias else head.bias
    classes = parse_classes(args.classes) if args.classes else None
    result = check_argmaxable(head.weight, bias, classes=classes, method=args.method,
                              box=args.box, tol=args.tol, keep_witnesses=args.evidence,
                              jobs=max(1, args.jobs))
    result.settings["source"] = head.source + (" (bias ignored)" if args.no_bias and
                                               head.bias is not None else "")
    print(summary(result, head.tokenizer, source=result.settings["source"]))
    if args.json:
        atomic_write_text(args.json, result.to_json(include_evidence=args.evidence) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        plot_margins(result, head.weight, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    failing = {name: result.counts[name] for name in fail_on if result.counts[name]}
    if failing:
        print("failing (--fail-on): " + ", ".join(f"{n} {name}" for name, n in failing.items()),
              file=sys.stderr)
        return FAILED
    return 0
