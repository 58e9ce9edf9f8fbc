"""Fast stage: cheap witnesses for most classes, each proved under a rounding bound (.verify).

1. Nearest-neighbour inputs, ``z = alpha w_k`` with ``alpha`` a power of two (so ``z`` and its
   logits ``alpha (W w_k) + b`` are exact scalings): without a bias ``alpha = 1`` wins for ``k``
   whenever ``|w_k|^2 > w_i . w_k`` for all ``i``, e.g. for every distinct row when all rows have
   the same norm; with a bias a ladder of ``alpha`` lets the weights outweigh the bias. The logits
   of a block of classes are one float64 product ``W W_K^T``; each logit ``alpha G_ik + b_i`` is
   within ``gamma (alpha |w_i| |w_k| + |b_i|)`` of the exact value (Cauchy-Schwarz bounds
   ``|w_i| . |w_k|``), and a class is certified when its margin beats twice the two bounds for
   every rival. Without a bias on a head exact in float32, ``z`` is exact in float32 as well and
   the float32 check of :func:`~logitkit.audit.verify.witness_margins` takes its place: one
   float32 pass gives the proofs and the rivals, where the float64 pass (symmetric, half the
   products) needed a float32 pass for the rivals besides. On heads searched over pools, the
   pools' rows of largest norm screen the classes first: one that some of them beat at ``z``
   by more than the rounding allowance cannot be proved there, so only its margin and rivals
   are wanted, and only if the search leaves it open; they are computed after the search, for
   those classes alone (256000 x 2304 head, 1000 sampled classes: stage 1 from 11.4 to
   3.1 + 1.1 s).
2. Relaxation (Agmon-Motzkin) for the classes left: starting from their best ``z``, project in
   turn onto ``d_i . z + c_i >= target`` for the ``r`` rows that beat ``k`` most, then check the
   new ``z`` against all rows with :func:`~logitkit.audit.verify.witness_margins` (rounded to
   float32 when the head is exact in float32, so that the float32 product can check it).
   Skipped without a bias on heads the smooth search takes over pools (its first pass proves
   those classes for less).
3. Without a bias, the smooth search of :mod:`~logitkit.audit.smooth_witness` for the classes
   still open (L-BFGS on a log-sum-exp bound of the margin, many classes per matrix product).

The rows that still beat ``k`` at its best ``z`` are returned to seed the exact stage, and so are
the points where the smooth search settled (near the minimiser of its bound: the start of an
entropy certificate, :mod:`~logitkit.audit.entropy_certificate`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from logitkit.audit.evidence_store import RowStore
from logitkit.audit.exact_rows import row_squares_of
from logitkit.audit.smooth_witness import (
    SmoothOutcome,
    largest_rows_per_pool,
    pooled_smooth_witnesses,
    rivals_at,
    searched_over_pools,
)
from logitkit.audit.verify import (
    LOGIT_BLOCK_BYTES,
    UNIT_ROUNDOFF_64,
    float32_copy,
    float32_logits,
    holds_exactly,
    homogeneous_into_box,
    in_box,
    inputs_per_product,
    margin_allowance,
    row_norms_of,
    witness_margins,
)

NEAREST_CLASSES = 2048  # classes per progress report of stage 1 by the float32 check


@dataclass
class FastOutcome:
    certified: np.ndarray  # bool per class
    witnesses: np.ndarray  # the best input tried for each class in ``held`` (float32 where the
    # head and every input are exact in float32, else float64)
    margins: np.ndarray  # float64: the margin at that input (verified when certified)
    rivals: np.ndarray  # int32 (n_classes, r): rows beating each class most at its best input
    settled: RowStore  # position -> a point near the minimiser of the smooth bound (on disk
    # until read)
    settled_pool: dict[int, int] = field(default_factory=dict)  # position -> index in pools
    pools: list[np.ndarray] = field(default_factory=list)  # row ids a class settled over
    held: np.ndarray | None = None  # sorted positions whose inputs ``witnesses`` holds, row by
    # row (None: every class); the others, certified by stage 1, were released
    sizes: np.ndarray | None = None  # |z|_2 (float64) of every class's input, where released

    def witness(self, j: int) -> np.ndarray | None:
        """The input of the class at position ``j`` (a view), None where released."""
        if self.held is None:
            return self.witnesses[j]
        at = int(np.searchsorted(self.held, j))
        return self.witnesses[at] if at < len(self.held) and self.held[at] == j else None


def _ladder(weight: np.ndarray, bias: np.ndarray | None, ids: np.ndarray,
            box: float | None) -> np.ndarray:
    """Powers of two ``alpha`` (n_alpha, n_classes) for the inputs ``alpha w_k``."""
    norms2 = np.maximum(row_squares_of(weight, ids), np.finfo(np.float64).tiny)
    if bias is None:
        exponents = np.zeros((1, len(ids)))
    else:
        spread = float(bias.max() - bias.min())
        base = np.log2(max(spread, np.finfo(np.float64).tiny) / norms2) if spread > 0 else \
            np.zeros(len(ids))
        exponents = np.ceil(base)[None, :] + np.arange(-2, 9)[:, None]
    if box is not None:
        peak = np.maximum(np.abs(weight[ids]).max(1), np.finfo(np.float64).tiny)
        largest = np.floor(np.log2(box / peak))  # 2^largest * |w_k|_inf <= box
        exponents = np.minimum(exponents, largest[None, :])
        if bias is None:
            exponents = largest[None, :]
    return np.exp2(exponents)


def _nearest(weight: np.ndarray, bias: np.ndarray | None, ids: np.ndarray, box: float | None,
             n_rivals: int, rough: tuple[np.ndarray, np.ndarray | None], norms: np.ndarray):
    """Stage 1 for one block of classes: margins, proofs, best alpha and rivals.

    ``rough``: ``weight`` and ``bias`` in float32 (for
    :func:`~logitkit.audit.smooth_witness.rivals_at`); ``norms``: ``|w_i|_2``."""
    d = weight.shape[1]
    gamma = 2.0 * (d + 2) * UNIT_ROUNDOFF_64
    gram = weight @ weight[ids].T  # (V, B): gram[i, j] = w_i . w_{k_j}
    columns = np.arange(len(ids))
    alphas = _ladder(weight, bias, ids, box)
    best_margin = np.full(len(ids), -np.inf)
    best_alpha = alphas[0].copy()
    proved = np.zeros(len(ids), dtype=bool)
    for alpha in alphas:
        logits = gram * alpha
        error = np.outer(norms, norms[ids] * alpha)
        if bias is not None:
            logits += bias[:, None]
            error += np.abs(bias)[:, None]
        error *= gamma
        own, own_error = logits[ids, columns].copy(), error[ids, columns].copy()
        logits[ids, columns] = -np.inf
        margin = own - logits.max(0)
        logits += 2.0 * error
        slack = own - 2.0 * own_error - logits.max(0)
        better = ~proved & (margin > best_margin)
        best_margin[better], best_alpha[better] = margin[better], alpha[better]
        proved |= slack > 0
    witnesses = weight[ids] * best_alpha[:, None]
    open_ = np.flatnonzero(~proved)
    rivals = np.zeros((len(ids), n_rivals), dtype=np.int64)
    if len(open_):
        rivals[open_] = rivals_at(*rough, ids[open_], witnesses[open_], n_rivals, len(open_))
    return proved, witnesses, best_margin, rivals


def _nearest_all(weight: np.ndarray, box: float | None, block: int, norms: np.ndarray,
                 on_progress: Callable[[int], None] | None):
    """Stage 1 without a bias for EVERY row: ``z = w_k`` (times a power of two for a box).

    ``W W^T`` is symmetric, so each block of columns ``K`` meets only the rows from ``K`` on:
    the column maxima serve the classes in ``K``, the row maxima the later classes (half the
    products of :func:`_nearest`). ``norms``: ``|w_i|_2``. Returns the proofs, the margins at
    ``z = w_k`` and ``alpha``.
    """
    n_rows, d = weight.shape
    gamma = 2.0 * (d + 2) * UNIT_ROUNDOFF_64
    own = np.empty(n_rows)
    rival = np.full(n_rows, -np.inf)  # max_{i != k} w_i . w_k
    rival_bound = np.full(n_rows, -np.inf)  # the same plus the rounding allowance of the pair
    for start in range(0, n_rows, block):
        stop = min(start + block, n_rows)
        gram = weight[start:] @ weight[start:stop].T  # rows start.., columns start..stop
        diagonal = np.arange(stop - start)
        own[start:stop] = gram[diagonal, diagonal]
        gram[diagonal, diagonal] = -np.inf
        np.maximum(rival[start:stop], gram.max(0), out=rival[start:stop])
        np.maximum(rival[start:], gram.max(1), out=rival[start:])
        gram += (2.0 * gamma) * np.outer(norms[start:], norms[start:stop])
        np.maximum(rival_bound[start:stop], gram.max(0), out=rival_bound[start:stop])
        np.maximum(rival_bound[start:], gram.max(1), out=rival_bound[start:])
        if on_progress is not None:
            on_progress(stop - start)
    proved = own - 2.0 * gamma * norms**2 - rival_bound > 0
    alpha = _ladder(weight, None, np.arange(n_rows), box)[0]
    return proved, own - rival, alpha


def _scaled_in_float32(weight: np.ndarray, weight32: np.ndarray, classes: np.ndarray,
                       alpha: np.ndarray) -> np.ndarray | None:
    """``alpha_j w_{k_j}`` in float32 (one new array) if that holds every product exactly
    (:func:`~logitkit.audit.verify.holds_exactly`), else None."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        scaled = weight32[classes] * alpha.astype(np.float32)[:, None]
    exact = holds_exactly(scaled, lambda part: weight[classes[part]] * alpha[part, None])
    return scaled if exact else None


def _nearest_inputs(weight: np.ndarray, weight32: np.ndarray, ids: np.ndarray,
                    alpha: np.ndarray) -> np.ndarray:
    """``alpha_j w_{k_j}``: float32 where float32 holds every entry exactly, else float64."""
    witnesses = _scaled_in_float32(weight, weight32, ids, alpha)
    if witnesses is None:  # a power of two takes some entry out of float32's range
        witnesses = weight[ids] * alpha[:, None]
    return witnesses


def _beaten_in_screen(weight: np.ndarray, screen: tuple[np.ndarray, np.ndarray], ids: np.ndarray,
                      z: np.ndarray, alpha: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Whether some row of ``screen`` (sorted row ids, their float32 rows) other than ``k_j``
    beats ``k_j`` at ``z[j] = alpha_j w_{k_j}`` (float32) by more than twice the allowance with
    which :func:`~logitkit.audit.verify.witness_margins` proves or rechecks a class: such a class
    is not proved at ``z`` over the whole head either, so its whole-head check can wait (only
    its margin and rivals are wanted, and only if the search does not prove it)."""
    screen_ids, screen32 = screen
    beaten = np.zeros(len(ids), dtype=bool)
    step = inputs_per_product(len(ids), len(screen_ids))
    for start in range(0, len(ids), step):
        part = slice(start, start + step)
        computed = float32_logits(screen32, None, z[part], norms)
        if computed is None:  # a float32 overflow: left to the whole-head check
            continue
        logits, gamma, allowance = computed
        at = np.minimum(np.searchsorted(screen_ids, ids[part]), len(screen_ids) - 1)
        rows = np.flatnonzero(screen_ids[at] == ids[part])
        logits[rows, at[rows]] = -np.inf  # k itself
        own = alpha[part] * row_squares_of(weight, ids[part])  # exact but for one rounding
        z_norms = row_norms_of(z[part])
        allowance = margin_allowance(gamma, allowance, norms[ids[part]] * z_norms,
                                     norms.max() * z_norms)
        beaten[part] = logits.max(1) - own > 2.0 * allowance
        del logits, computed  # before the next block's: one block of logits alive, not two
    return beaten


def _nearest_float32(weight: np.ndarray, weight32: np.ndarray, classes: np.ndarray,
                     box: float | None, n_rivals: int, norms: np.ndarray, block: int,
                     on_progress: Callable[[int], None] | None, keep: str,
                     screen: tuple[np.ndarray, np.ndarray] | None = None):
    """Stage 1 without a bias on a head exact in float32 (``weight32``): ``z = alpha w_k`` is
    then exact in float32 too, so :func:`~logitkit.audit.verify.witness_margins` checks it with
    the float32 product and its rounding bound (float64 only for the rows that bound cannot rule
    out) and returns the rivals from the same logits: one float32 pass instead of the float64
    symmetric pass of :func:`_nearest_all` plus a float32 one for the rivals (GPT-2-shaped head,
    50257 x 768: 25 s instead of about 54 s). Returns proofs, witnesses, margins, rivals, and
    (``keep`` not "every") the positions whose witnesses are kept and every witness's ``|z|_2``.

    The witnesses are float32 (half the memory of a whole vocabulary's inputs) where float32
    holds every ``alpha w_k`` exactly; float64 from the first block where it does not. ``keep``:
    "every" class's input, those of the classes left "open" (a block at a time: no V x d
    array), or "none". ``screen`` (row ids, their float32 rows): the classes beaten within these
    rows (:func:`_beaten_in_screen`) are not checked over the whole head; their margins are NaN
    (their rivals zero) until :func:`_nearest_margins`."""
    alpha = _ladder(weight, None, classes, box)[0]
    margins, certified = np.full(len(classes), -np.inf), np.zeros(len(classes), dtype=bool)
    rivals = np.zeros((len(classes), n_rivals), dtype=np.int32)  # row ids: V < 2^31
    every = keep == "every"
    sizes = None if every else np.empty(len(classes))
    kept = np.empty((len(classes) if every else 0, weight.shape[1]), dtype=np.float32)
    open_parts = [kept]
    for start in range(0, len(classes), NEAREST_CLASSES):
        part = slice(start, start + NEAREST_CLASSES)
        ids = classes[part]
        witnesses = _nearest_inputs(weight, weight32, ids, alpha[part])
        checked = np.arange(start, start + len(ids))
        if screen is not None and witnesses.dtype == np.float32:
            beaten = _beaten_in_screen(weight, screen, ids, witnesses, alpha[part], norms)
            margins[checked[beaten]], checked = np.nan, checked[~beaten]
        margins[checked], certified[checked], rivals[checked] = witness_margins(
            weight, None, classes[checked], witnesses[checked - start], rivals=n_rivals,
            weight32=weight32, row_norms=norms, block=block)
        if sizes is not None:
            sizes[part] = row_norms_of(witnesses)
        if every:
            if witnesses.dtype == np.float64 and kept.dtype == np.float32:
                kept = kept.astype(np.float64)  # from here on: values float32 cannot hold
            kept[part] = witnesses
        elif keep == "open":
            open_parts.append(witnesses[~certified[part]])
        if on_progress is not None:
            on_progress(len(ids))
    if every:
        return certified, kept, margins, rivals, None, None
    return certified, np.concatenate(open_parts), margins, rivals, _held(certified, keep), sizes


def _nearest_margins(weight: np.ndarray, weight32: np.ndarray, classes: np.ndarray,
                     box: float | None, n_rivals: int, norms: np.ndarray, block: int,
                     on_progress: Callable[[int], None] | None):
    """The margins and rivals at ``z = alpha w_k`` over the whole head for ``classes`` that
    :func:`_nearest_float32` screened out (the same inputs and check)."""
    alpha = _ladder(weight, None, classes, box)[0]
    margins = np.empty(len(classes))
    rivals = np.zeros((len(classes), n_rivals), dtype=np.int32)
    for start in range(0, len(classes), NEAREST_CLASSES):
        part = slice(start, start + NEAREST_CLASSES)
        witnesses = _nearest_inputs(weight, weight32, classes[part], alpha[part])
        margins[part], _, rivals[part] = witness_margins(
            weight, None, classes[part], witnesses, rivals=n_rivals, weight32=weight32,
            row_norms=norms, block=block)
        if on_progress is not None:
            on_progress(len(witnesses))
    return margins, rivals


def _held(certified: np.ndarray, keep: str) -> np.ndarray:
    """The sorted positions whose inputs are kept when not "every" one is: the classes still
    open (``keep="open"``) or none."""
    return np.flatnonzero(~certified) if keep == "open" else np.zeros(0, dtype=np.int64)


def _relax(weight: np.ndarray, bias: np.ndarray | None, ids: np.ndarray, z: np.ndarray,
           rivals: np.ndarray, box: float | None, sweeps: int) -> np.ndarray:
    """Sequential projections of each ``z`` onto ``d_i . z + c_i >= target`` for its rivals,
    in the precision of ``weight`` (float32 copies where exact: half the memory traffic; a
    heuristic whose result is checked); float64 out."""
    diffs = weight[ids][:, None, :] - weight[rivals]  # (B, r, d)
    gaps = np.zeros(rivals.shape, weight.dtype) if bias is None else \
        bias[ids][:, None] - bias[rivals]
    norms2 = np.maximum((diffs * diffs).sum(-1), np.finfo(weight.dtype).tiny)
    scale = np.sqrt(norms2.max(1)) * np.linalg.norm(z, axis=1) + np.abs(gaps).max(1)
    target = (1e-3 * scale).astype(weight.dtype)
    z = z.astype(weight.dtype)  # a copy
    for _ in range(sweeps):
        for i in range(rivals.shape[1]):
            margin = (diffs[:, i] * z).sum(-1) + gaps[:, i]
            step = np.maximum(target - margin, 0.0) / norms2[:, i]
            z += step[:, None] * diffs[:, i]
            if box is not None:
                np.clip(z, -box, box, out=z)
    return z.astype(np.float64)


def _round_to_float32(z: np.ndarray, box: float | None) -> np.ndarray:
    """``z`` rounded to float32 values (kept in float64), still inside the box."""
    rounded = z.astype(np.float32)
    if box is not None:
        edge = np.float32(box)
        if edge > box:
            edge = np.nextafter(edge, np.float32(0))
        np.clip(rounded, -edge, edge, out=rounded)
    return rounded.astype(np.float64)


def _smooth_stage(weight: np.ndarray, weight32: np.ndarray | None, rough32: np.ndarray,
                  classes: np.ndarray, box: float | None, norms: np.ndarray,
                  on_progress: Callable[[int], None] | None,
                  on_proof: Callable[[np.ndarray, np.ndarray, np.ndarray], None],
                  ) -> SmoothOutcome:
    """Stage 3 (no bias): the search's outcome; each batch of witnesses it proves goes to
    ``on_proof(class ids, inputs, margins)`` at once (the caller copies what it keeps: a view
    would hold the whole batch)."""

    def accept(ids: np.ndarray, z: np.ndarray) -> np.ndarray:
        z = homogeneous_into_box(z, box)  # powers of two keep float32 values exact
        if weight32 is not None:
            z = _round_to_float32(z, box)
        margin, proved, _ = witness_margins(weight, None, ids, z, weight32=weight32,
                                            row_norms=norms)
        proved &= in_box(z, box)
        if proved.any():
            on_proof(ids[proved], z[proved], margin[proved])
        return proved

    return pooled_smooth_witnesses(rough32, classes, accept, on_progress=on_progress)


def certify_fast(
    weight: np.ndarray,
    bias: np.ndarray | None,
    classes: np.ndarray,
    *,
    box: float | None = None,
    block: int = 128,
    rounds: int = 3,
    n_rivals: int = 64,
    on_progress: Callable[[int], None] | None = None,
    on_phase: Callable[[str, int], None] | None = None,
    keep_witnesses: bool = True,
) -> FastOutcome:
    """Certify as many of ``classes`` as possible with witnesses proved under rounding bounds.

    ``weight`` (V, d) float64 rows (an array or :class:`~logitkit.audit.exact_rows.ExactRows`)
    and ``bias`` float64. Work goes ``block`` classes at a time, so the
    ``V x block`` logits stay small. ``rounds`` of relaxation follow stage 1, except on heads
    without a bias that the smooth search takes over pools: it proves those classes for less
    (151936 x 896 head, 6000 sampled classes: fast stage 87 s with three rounds, 74 s with none,
    the same verdicts; a 12000 x 512 head, searched whole, needs them: 18 s against 22 s).
    ``on_progress(n)`` counts classes done in the current phase;
    ``on_phase(name, total)`` announces the relaxation and how many classes it takes.
    ``keep_witnesses`` False releases the inputs stage 1 certifies (only their ``|z|_2`` stay, in
    ``sizes``; ``held`` lists the positions whose inputs are kept), and the open classes' inputs
    too where no relaxation needs them as starts: the audit never reports an input that proves
    nothing, and on a 151936 x 896 head they were 31606 x 896 floats (444 MiB).
    """
    n_rows, d = weight.shape
    n_rivals = min(n_rivals, n_rows - 1)
    pooled = bias is None and searched_over_pools(n_rows, d)
    if pooled:
        rounds = 0
    keep = "every" if keep_witnesses else "open" if rounds else "none"
    certified = np.zeros(len(classes), dtype=bool)
    margins = np.full(len(classes), -np.inf)
    rivals = np.zeros((len(classes), n_rivals), dtype=np.int32)  # row ids: V < 2^31
    weight32, bias32 = float32_copy(weight), float32_copy(bias)  # exact copies, or None
    norms = row_norms_of(weight)
    rough = (weight.astype(np.float32) if weight32 is None else weight32,
             None if bias is None else bias.astype(np.float32) if bias32 is None else bias32)
    held = sizes = None
    if bias is None and weight32 is not None:  # float32 logits, with their rivals, in one pass
        screen = None
        if pooled:  # rows the pools share: a class they beat is checked whole only if still open
            screen_ids = np.sort(np.argsort(-norms)[:largest_rows_per_pool(d)])
            screen = screen_ids, weight32[screen_ids]
        certified, witnesses, margins, rivals, held, sizes = _nearest_float32(
            weight, weight32, classes, box, n_rivals, norms, block, on_progress, keep, screen)
        del screen
    elif bias is None and len(classes) == n_rows and np.array_equal(classes, np.arange(n_rows)):
        certified, margins, alpha = _nearest_all(weight, box, block, norms, on_progress)
        witnesses = weight * alpha[:, None]
        margins = margins * alpha
        open_ = np.flatnonzero(~certified)
        rivals[open_] = rivals_at(*rough, open_, witnesses[open_], n_rivals, block)
    else:  # a few V x B float64 arrays per block: B shrinks on large heads (memory)
        nearest_block = max(16, min(block, LOGIT_BLOCK_BYTES // 8 // n_rows))
        witnesses = np.zeros((len(classes), d))
        for start in range(0, len(classes), nearest_block):
            part = slice(start, start + nearest_block)
            proved, z, margin, rival = _nearest(weight, bias, classes[part], box, n_rivals,
                                                rough, norms)
            certified[part], witnesses[part], margins[part] = proved, z, margin
            rivals[part] = rival
            if on_progress is not None:
                on_progress(len(z))
    if keep != "every" and held is None:  # only the open classes' inputs from here on, if any
        sizes, held = row_norms_of(witnesses), _held(certified, keep)
        witnesses = witnesses[held]

    def rows_of(where: np.ndarray) -> np.ndarray:  # positions -> rows of ``witnesses``
        return where if held is None else np.searchsorted(held, where)

    def better_input(where: np.ndarray, z: np.ndarray) -> None:
        """``z`` is the best input so far of the classes at ``where`` (all open ones)."""
        if held is None or len(held):
            witnesses[rows_of(where)] = z
        if sizes is not None:
            sizes[where] = row_norms_of(z)

    exact32 = weight32 is not None and (bias is None or bias32 is not None)
    relaxed_on = (weight32, bias32) if exact32 else (weight, bias)
    for round_ in range(rounds):
        open_ = np.flatnonzero(~certified)
        first = round_ == 0 and len(open_) > 0
        if first and on_phase is not None:
            on_phase("relaxation", len(open_))
        for start in range(0, len(open_), block):
            where = open_[start:start + block]
            z = _relax(*relaxed_on, classes[where], witnesses[rows_of(where)], rivals[where],
                       box, 2)
            if weight32 is not None:  # an input exact in float32 is checked twice as fast
                z = _round_to_float32(z, box)
            margin, proved, top = witness_margins(weight, bias, classes[where], z,
                                                  rivals=n_rivals, weight32=weight32,
                                                  bias32=bias32, row_norms=norms)
            proved &= in_box(z, box)
            better = proved | (margin > margins[where])
            certified[where[proved]] = True
            better_input(where[better], z[better])
            margins[where[better]] = margin[better]
            rivals[where[~proved]] = top[~proved]
            if first and on_progress is not None:
                on_progress(len(where))
    open_ = np.flatnonzero(~certified)
    settled = RowStore(weight.shape[1])
    settled_pool: dict[int, int] = {}
    pools: list[np.ndarray] = []
    if bias is None and len(open_):
        if on_phase is not None:
            on_phase("smooth search", len(open_))
        position = dict(zip(classes[open_].tolist(), open_.tolist(), strict=True))

        def on_proof(ids: np.ndarray, z: np.ndarray, margin: np.ndarray) -> None:
            where = np.array([position[k] for k in ids.tolist()])
            certified[where], margins[where] = True, margin
            better_input(where, z)

        search = _smooth_stage(weight, weight32, rough[0], classes[open_], box, norms,
                               on_progress, on_proof)
        pools = search.pools
        settled = search.points.rekeyed(  # keyed by position in ``classes``, nothing read
            (j, i) for i, j in enumerate(open_.tolist()) if search.settled[i])
        for i, j in enumerate(open_.tolist()):
            if search.settled[i] and search.pool[i] >= 0:
                settled_pool[j] = int(search.pool[i])
    late = np.flatnonzero(np.isnan(margins))  # screened out of stage 1, still open
    if len(late):
        if on_phase is not None:
            on_phase("margins of the open classes", len(late))
        margins[late], rivals[late] = _nearest_margins(weight, weight32, classes[late], box,
                                                       n_rivals, norms, block, on_progress)
    return FastOutcome(certified=certified, witnesses=witnesses, margins=margins, rivals=rivals,
                       settled=settled, settled_pool=settled_pool, pools=pools, held=held,
                       sizes=sizes)
