"""Experiments that reproduce each capability's published claim (``logitkit reproduce``).

An experiment is a module in this package whose name does not start with ``_`` and that defines

    TITLE: str                      # one line, shown in the report
    def run(ctx: Context) -> Result

Each :class:`Claim` quotes the post's sentence it tests (``seed_quote``, translated) with the post's
address (``source``, one of ``POSTS``); a claim about training (``training=True``) rests on at
least ``MIN_PAIRED_SEEDS`` paired seeds at the quick and full sizes, with paired 95% intervals
(``_stats``) and a paired-difference plot (``_plots``).

``ctx.size`` is "smoke" (seconds, used by the tests), "quick" (a few minutes, ``make demo``) or
"full". ``ctx.data_dir`` is the real data folder (``../shared/data`` layout) or None, in which case
the experiment uses data the package builds offline and says so in ``Result.data``. Plots go in
``ctx.out_dir`` and are listed by file name in ``Result.plots``. ``Result.numbers`` must be the same
on a rerun with the same seed: wall-clock figures go in ``Result.timings`` instead.
"""

from logitkit.experiments._framework import (
    MIN_PAIRED_SEEDS,
    POSTS,
    VERDICTS,
    Claim,
    Context,
    Result,
    available,
    run_experiments,
)

__all__ = ["MIN_PAIRED_SEEDS", "POSTS", "VERDICTS", "Claim", "Context", "Result", "available",
           "run_experiments"]
