"""`logitkit audit PATH`: can each class of a checkpoint's output layer win the argmax?

    logitkit audit PATH [--classes 0,5,10-20] [--box B [--min-radius R]] [--tol T]
                        [--json out.json [--evidence]]
                        [--plot margins.png] [--fail-on unargmaxable[,tie,unknown]]
                        [--sample N [--seed S]]
    logitkit audit PATH --verify RESULT.json [--key NAME] [--no-bias]

Exit status: 0, or 1 when a class has a status named by ``--fail-on`` (a pipeline can stop on
it), or 2 on a usage error. Output files are checked before the audit starts: their folders
must exist and be writable (none is created). ``--verify RESULT.json`` audits nothing: it checks
every witness and certificate of a saved result (written with ``--evidence``) against the head
from scratch (:mod:`~logitkit.audit.reverify`) and exits 1 if one fails.

The command reads the head with :func:`~logitkit.audit.read_head` and audits it with
:func:`~logitkit.audit.check_argmaxable` (the statuses, evidence and tolerance are explained
there); this module imports neither until the command runs, so ``--help`` stays light.

Reference:
    Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory but
    Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
    Probability: A Structural Weakness of Neural Language Models", ACL 2020.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

from logitkit.audit.statuses import METHODS, STATUSES

FAILED = 1


def parse_classes(text: str) -> list[int]:
    """The ids of ``--classes``: ``"0,5,10-20"`` -> ``[0, 5, 10, ..., 20]`` (inclusive ranges).

    Ids are not sorted or checked against the head here; :func:`~logitkit.audit.check_argmaxable`
    rejects ids out of range and repeated ids.

    Args:
        text: comma-separated ids and ``low-high`` ranges; no default.

    Returns:
        The ids, in the order written.

    Raises:
        ValueError: a part is not an integer or a range, or a range runs backwards (``5-3``).

    Reference:
        Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory
        but Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
        Probability: A Structural Weakness of Neural Language Models", ACL 2020.

    Example:
        >>> parse_classes("0,5,10-12")
        [0, 5, 10, 11, 12]
    """
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
    """The statuses of ``--fail-on``: ``"unargmaxable,tie"`` -> ``["unargmaxable", "tie"]``.

    A class with one of these statuses makes ``logitkit audit`` exit with status 1.

    Args:
        text: comma-separated names among "tie", "unargmaxable" and "unknown"; no default.

    Returns:
        The names, stripped, in the order written.

    Raises:
        ValueError: an unknown name (``"argmaxable"`` included), or no name at all.

    Reference:
        Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory
        but Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
        Probability: A Structural Weakness of Neural Language Models", ACL 2020.

    Example:
        >>> parse_statuses("unargmaxable, tie")
        ['unargmaxable', 'tie']
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    wrong = [name for name in names if name not in STATUSES[1:]]
    if wrong or not names:
        raise ValueError(f"--fail-on: expected a comma-separated list of {', '.join(STATUSES[1:])}"
                         f"; got {text!r}")
    return names


_AVAILABLE = re.compile(r"available keys: (\[.*\])\s*$", re.DOTALL)


def short_key_message(error: KeyError, key: str | None) -> str:
    """The message of a "tensor not found" error with its list of every tensor name (a model has
    hundreds) cut to the closest names to ``--key``, how many there are and a few of them."""
    message = str(error.args[0]) if error.args else str(error)
    message = message.replace("pass key=...", "pass --key NAME").replace("Pass key=...",
                                                                          "Pass --key NAME")
    names = getattr(error, "names", None)
    found = _AVAILABLE.search(message)
    if names is None and found is not None:
        try:
            names = ast.literal_eval(found.group(1))
        except (ValueError, SyntaxError):
            names = None
    if not isinstance(names, (list, tuple, set)) or found is None:
        return message
    from logitkit._utils import describe_names

    return (message[: found.start()].rstrip("; ") + "; "
            + describe_names([str(n) for n in names], key, what="tensors"))


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``logitkit audit`` to ``parser`` and set :func:`run` as its handler.

    Options (defaults in brackets): ``path``; ``--key`` [the output head]; ``--classes``
    [all]; ``--method`` exact|fast|frank_wolfe [exact]; ``--box`` [unbounded]; ``--min-radius``
    [none: a strict win anywhere]; ``--tol`` [1e-9];
    ``--jobs`` [1]; ``--no-bias``; ``--json``; ``--evidence``; ``--plot``; ``--fail-on`` [none];
    ``--sample`` [every class]; ``--seed`` [0, with ``--sample``]; ``--verify`` [none].

    Args:
        parser: the (sub)parser of the ``audit`` verb; no default.

    Returns:
        None; ``parser.parse_args(...)`` then gives a namespace with ``handler=run``.

    Raises:
        argparse.ArgumentError: an option is already defined on ``parser``.

    Reference:
        Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory
        but Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
        Probability: A Structural Weakness of Neural Language Models", ACL 2020.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="logitkit audit")
        >>> configure(parser)
        >>> args = parser.parse_args(["head.npy", "--box", "2", "--fail-on", "unargmaxable"])
        >>> args.path, args.box, args.tol, args.method, args.handler is run
        ('head.npy', 2.0, 1e-09, 'exact', True)
    """
    parser.add_argument("path", help="checkpoint: .safetensors, .gguf, HF model folder (sharded "
                                     "or not), .pt/.bin, .npy/.npz")
    parser.add_argument("--key", help="name of the weight tensor (default: the output head)")
    parser.add_argument("--classes", help="audit only these ids, e.g. 0,5,10-20")
    parser.add_argument("--method", choices=METHODS, default="exact",
                        help="exact (default): cheap witnesses, then an exact certificate for "
                             "every class left, so every class is decided; fast: the witness "
                             "stage only (classes it cannot settle are 'unknown'); frank_wolfe: "
                             "the blog's method, for comparison (may leave 'unknown')")
    parser.add_argument("--box", type=float, help="bound the inputs: |z|_inf <= BOX")
    parser.add_argument("--min-radius", type=float, dest="min_radius",
                        help="the question of Grivas et al. (ACL 2022): argmaxable only where a "
                             "ball of this radius fits in the class's winning region inside the "
                             "box (theirs: --box 100 --min-radius 1e-8); needs --box")
    parser.add_argument("--tol", type=float, default=1e-9,
                        help="relative tolerance that separates ties (default 1e-9)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes for the exact stage (default 1)")
    parser.add_argument("--no-bias", action="store_true", help="ignore the bias if there is one")
    parser.add_argument("--json", type=Path, help="write the result (statuses, margins) to this "
                                                  "file (its folder must exist)")
    parser.add_argument("--evidence", action="store_true",
                        help="with --json: also write every witness and certificate (an "
                             "interior class's certificate may list every row of the head)")
    parser.add_argument("--plot", type=Path, help="write a PNG of each class's margin to this "
                                                  "file (its folder must exist)")
    parser.add_argument("--fail-on", default="",
                        metavar="STATUS[,STATUS]",
                        help="exit with status 1 if a class is unargmaxable, tie or unknown")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="audit N classes drawn at random (exactly) and estimate each "
                             "status's share of the head with a 95%% interval; not with --classes")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="with --sample: the seed of the draw (default 0)")
    parser.add_argument("--verify", type=Path, metavar="RESULT.json",
                        help="audit nothing: check every witness and certificate of a result "
                             "saved with --json --evidence against this head from scratch "
                             "(exit 1 if one fails)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``logitkit audit``: read the head, audit it, print the summary, write the outputs.

    The summary (:func:`~logitkit.audit.report.summary`) goes to stdout; ``--json`` gets
    :meth:`~logitkit.audit.argmaxable.AuditResult.to_json` (witnesses and certificates only with
    ``--evidence``), ``--plot`` a PNG of the margins. Output files are checked first: their
    folders must exist and be writable. With ``--sample N`` only N random classes are audited
    (:func:`~logitkit.audit.estimate.estimate_statuses`, seed ``--seed``): the summary of those
    is followed by :meth:`~logitkit.audit.estimate.Estimate.summary` (each status's share of the
    head with an exact 95% interval), and ``--json`` gets an ``"estimate"`` object too.

    Args:
        args: the namespace parsed by a parser set up with :func:`configure`; no default.

    Returns:
        0, or 1 (``FAILED``) when a class has a status named by ``--fail-on`` (with
        ``--verify``: when a witness or certificate fails the check).

    Raises:
        ValueError: ``--evidence`` without ``--json``, a bad ``--classes`` or ``--fail-on``,
            ``--sample`` with ``--classes``, ``--seed`` without ``--sample``, ``--verify`` with
            ``--json``/``--plot``/``--sample`` or on a JSON without evidence, and the
            ``ValueError`` of :func:`~logitkit.audit.read_head`,
            :func:`~logitkit.audit.check_argmaxable` and
            :func:`~logitkit.audit.estimate.estimate_statuses` (``--sample`` outside [1, V]).
        OSError: an output cannot be written (its folder is missing, say), or the checkpoint
            is missing.
        KeyError: :class:`~logitkit.audit.checkpoint.HeadNotFoundError`.
        ImportError: matplotlib (``--plot``) or a checkpoint format's package is not installed.

    Reference:
        Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory
        but Rarely in Practice", ACL 2022, arXiv 2203.06462. Demeter, Kimmel and Downey, "Stolen
        Probability: A Structural Weakness of Neural Language Models", ACL 2020.

    Example:
        >>> import argparse, pathlib, tempfile
        >>> import numpy as np
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = pathlib.Path(tmp.name) / "head.npy"
        >>> np.save(path, np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float))
        >>> parser = argparse.ArgumentParser(prog="logitkit audit")
        >>> configure(parser)
        >>> run(parser.parse_args([str(path), "--fail-on", "unargmaxable"]))  # doctest: +ELLIPSIS
        audited 5 classes of a 5 x 2 head: array (float64) in head.npy
        ...
          unargmaxable ids: 4 (margin -5.00e-01, certificate: depth over 4 rows, residual ...)
        ...
        1
        >>> tmp.cleanup()
    """
    from logitkit._utils import atomic_output, check_output_file
    from logitkit.audit.argmaxable import check_argmaxable
    from logitkit.audit.checkpoint import read_head
    from logitkit.audit.distributed import (
        check_argmaxable_distributed,
        launched_distributed,
        reports,
    )
    from logitkit.audit.report import plot_margins, summary

    fail_on = parse_statuses(args.fail_on) if args.fail_on else []
    if args.evidence and args.json is None:
        raise ValueError("--evidence needs --json PATH (the evidence goes into that file)")
    if args.sample is not None and args.classes:
        raise ValueError("--sample draws its own classes; it cannot be combined with --classes")
    if args.seed is not None and args.sample is None:
        raise ValueError("--seed needs --sample N (it seeds the draw of the sampled classes)")
    if args.verify is not None and (args.json or args.plot or args.sample is not None):
        raise ValueError("--verify checks a saved result and audits nothing: it takes no --json, "
                         "--plot or --sample")
    if launched_distributed() and (args.sample is not None or args.verify is not None):
        raise ValueError("--sample and --verify run in one process: launch them without torchrun")
    for flag, output in (("--json", args.json), ("--plot", args.plot)):
        if output is not None and reports():  # under torchrun only rank 0 writes
            check_output_file(output, flag=flag)
    if args.plot is not None:
        from logitkit._utils import require

        require("matplotlib", extra="plots", purpose="--plot")
    try:
        head = read_head(args.path, key=args.key)
    except KeyError as error:
        raise type(error)(short_key_message(error, args.key)) from None
    bias = None if args.no_bias else head.bias
    if args.verify is not None:
        from logitkit.audit.reverify import verify_file

        return 0 if verify_file(args.verify, head.weight, bias, source=head.source) else FAILED
    classes = parse_classes(args.classes) if args.classes else None
    options = {"method": args.method, "box": args.box, "tol": args.tol,
               "min_radius": args.min_radius,
               "keep_witnesses": args.evidence, "jobs": max(1, args.jobs),
               "copy": False}  # the head read here is ours: scaled in place, not copied
    estimate = None
    if args.sample is not None:
        from logitkit.audit.estimate import estimate_statuses

        estimate = estimate_statuses(head.weight, bias, sample=args.sample, seed=args.seed or 0,
                                     **options)
        result = estimate.result
    elif launched_distributed():  # torchrun: the ranks share the classes (audit/distributed.py)
        merged = check_argmaxable_distributed(head.weight, bias, classes=classes, **options)
        if merged is None:  # not rank 0: rank 0 prints and writes the merged result
            return 0
        result = merged
    else:
        result = check_argmaxable(head.weight, bias, classes=classes, **options)
    result.settings["source"] = head.source + (" (bias ignored)" if args.no_bias and
                                               head.bias is not None else "")
    print(summary(result, head.tokenizer, source=result.settings["source"]))
    if estimate is not None:
        print(estimate.summary())
    if args.json:
        written = result if estimate is None else estimate
        with atomic_output(args.json) as tmp, open(tmp, "w") as file:  # evidence: streamed
            written.write_json(file, include_evidence=args.evidence)
            file.write("\n")
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
