"""`logitkit audit PATH`: can each class of a checkpoint's output layer win the argmax?"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from logitkit.audit.argmaxable import METHODS, check_argmaxable
from logitkit.audit.checkpoint import load_head
from logitkit.audit.report import plot_norms, summary


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


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="checkpoint: .safetensors, HF model folder, .pt, .npy/.npz")
    parser.add_argument("--key", help="name of the weight tensor (default: found by name)")
    parser.add_argument("--classes", help="audit only these ids, e.g. 0,5,10-20")
    parser.add_argument("--method", choices=METHODS, default="exact")
    parser.add_argument("--box", type=float, help="bound the inputs: |z|_inf <= BOX")
    parser.add_argument("--no-bias", action="store_true", help="ignore the bias if there is one")
    parser.add_argument("--json", type=Path, help="write the result (with certificates) here")
    parser.add_argument("--plot", type=Path, help="write a PNG of row norms by status here")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    weight, bias, tokenizer = load_head(args.path, key=args.key)
    if args.no_bias:
        bias = None
    classes = parse_classes(args.classes) if args.classes else None
    result = check_argmaxable(weight, bias, classes=classes, method=args.method, box=args.box,
                              keep_witnesses=False)
    print(summary(result, tokenizer))
    if args.json:
        args.json.write_text(result.to_json() + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        plot_norms(result, weight, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
