"""The checks behind every verdict: witnesses under rigorous rounding bounds, certificates.

Notation, for the audited class ``k`` and every other row ``i``: ``d_i = w_k - w_i`` and
``c_i = b_k - b_i`` (``c = 0`` without a bias); the logits are ``l = W z + b``.

Witness. ``l`` is computed in float64 with NumPy (whatever torch's matmul precision or TF32 mode
is); each computed logit is within ``e_i = gamma (|w_i|_2 |z|_2 + |b_i|)`` of the exact one,
``gamma = n u / (1 - n u)``, ``n = d + 2``, ``u = 2^-53`` (any summation order). ``z`` wins for the
exact weights when ``l_k - l_i > 2 (e_k + e_i)`` for every ``i`` (the factor 2 covers the
subtraction). The bound is per pair, so one huge logit (a masked token with bias -1e9) does not
blunt the check for the others, and scaling ``W, b`` by a power of two scales both sides alike.
When ``W``, ``b`` and ``z`` are exact in float32 (heads stored in float32, bf16, fp16 or GGUF; the
witnesses are then rounded to float32), ``l`` is first computed by the float32 product with
``u = 2^-24`` plus an allowance for flushed subnormals; only the inputs that check cannot prove are
checked again in float64. A box ``|z|_inf <= B`` is checked in float64.

Certificate. For ``a`` on the simplex over a support ``S`` put ``g = sum_i a_i d_i`` and
``c_a = sum_i a_i c_i``. For every ``z``, ``min_i (d_i . z + c_i) <= g . z + c_a``: with
``g = 0`` and ``c_a <= 0`` class ``k`` never wins. Computed ``g`` carries rounding error and the
solver's residual, so a certificate is accepted when ``|g|_1 <= tol / 64 * sum_i a_i |d_i|_1``: the
verdict is then exact for a head whose row ``k`` differs from yours by that relative amount
(backward error). The tolerance is per class and relative to the rows in the certificate, so it
does not change when ``W, b`` are scaled or when an unrelated row has an extreme bias. With a box
the certificate bounds the best margin by ``B |g|_1 + c_a`` directly (LP duality).

Depth. An "unargmaxable" verdict needs more than ``g = 0``: the certificate is for row ``k`` pushed
outward by the tolerance, away from the mean ``m_k`` of the other distinct rows: without a bias
``sum_i a_i w_i = w_k + s``, ``s = tol (w_k - m_k)``, i.e. ``|g + s|_1 + gamma_{m+2} sum_i a_i
|d_i|_1 <= tol / 64 * sum_i a_i |d_i|_1`` (``m`` support rows); with a bias ``g = 0`` as above and
``c_a <= -delta + tol sum_i a_i |c_i|``, ``delta = tol median_i |b_k - b_i|`` over the distinct
rows. The JSON written with evidence states these inequalities (and those of the witnesses, the
ties and the box) in its ``evidence_convention``; :mod:`~logitkit.audit.reverify` checks a saved
result against them from scratch (``logitkit audit PATH --verify RESULT.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from logitkit.audit.exact_rows import ExactRows, block_rows, logits_of, row_squares_of

UNIT_ROUNDOFF_64 = 2.0**-53
UNIT_ROUNDOFF_32 = 2.0**-24
SMALLEST_NORMAL_32 = 2.0**-126
LOGIT_BLOCK_BYTES = 2**26  # a B x V block of logits (witness checks, stage 1's): 64 MB, e.g. 110
# float32 inputs at a time on a 151936-row head instead of 256
COMBINATION_BLOCK = 256  # certificate rows per block when a combination is summed (in cache)
RESIDUAL_SHARE = 1.0 / 64  # a certificate's residual stays below tol / 64, so that a push of
# tol (see :mod:`logitkit.audit.exact`) is never mistaken for rounding


@dataclass(frozen=True)
class Certificate:
    """A convex combination of other rows that proves class ``k`` cannot win the argmax.

    With ``d_i = w_k - w_i``, ``c_i = b_k - b_i`` and ``a`` = ``weights`` (``a_i >= 0``,
    ``sum_i a_i = 1``) over the rows ``support``: ``g = sum_i a_i d_i`` and ``c_a = sum_i a_i c_i``
    give ``min_i (d_i . z + c_i) <= g . z + c_a`` for every input ``z``. ``kind``:

    * "hull": ``g = 0`` and ``c_a <= 0`` (up to ``residual``): ``k`` never wins strictly
      (without a bias: ``w_k`` lies in the convex hull of the support rows);
    * "depth": ``k`` stays unable to win after its row is pushed outward by the tolerance:
      ``g = -shift`` (no bias; ``w_k + shift`` lies in the hull) or ``g = 0`` and
      ``c_a <= -delta`` (bias ``b_k`` raised by ``delta``);
    * "inner": the same for row ``k`` pushed inward (``g = shift``, or ``c_a <= delta``): ``k``
      never wins by more than the tolerance (evidence of a tie);
    * "box": ``bound = B |g|_1 + c_a`` (plus rounding) bounds the best margin over
      ``|z|_inf <= B``.

    In an :class:`~logitkit.audit.argmaxable.AuditResult` the support ids are rows of the audited
    head and ``bound`` is in its logit units.

    Args:
        support: (m,) int ids of the rows combined (never ``k``).
        weights: (m,) float64 convex weights ``a`` over ``support``.
        kind: "hull", "depth", "inner" or "box".
        residual: ``|g|_1`` (plus its rounding bound for "hull"/"depth") relative to
            ``sum_i a_i |d_i|_1``.
        bound: ``c_a`` ("hull", "depth") or the bound on the best margin ("box"); default 0.0.

    Returns:
        The frozen record (built by the audit; checked by :func:`hull_certificate` and
        :func:`box_certificate`).

    Raises:
        dataclasses.FrozenInstanceError: on assignment to a field.

    Reference:
        Grivas, Bogoychev and Lopez, "Low-Rank Softmax Can Have Unargmaxable Classes in Theory
        but Rarely in Practice", ACL 2022, arXiv 2203.06462 (the Gordan/Motzkin alternative).
        Demeter, Kimmel and Downey, "Stolen Probability: A Structural Weakness of Neural Language
        Models", ACL 2020 (a word inside the convex hull of the others cannot win).

    Example:
        >>> import numpy as np
        >>> from logitkit.audit import check_argmaxable
        >>> W = np.array([[1, 2], [2, 1], [1, 0], [0, 1], [1, 1]], dtype=float)
        >>> cert = check_argmaxable(W, show_progress=False).certificates[4]
        >>> g = cert.weights @ (W[4] - W[cert.support])  # sum_i a_i d_i
        >>> cert.kind, float(np.abs(g).sum()), float(cert.weights.sum())
        ('depth', 0.0, 1.0)
    """

    support: np.ndarray
    weights: np.ndarray
    kind: str
    residual: float
    bound: float = 0.0

    def __post_init__(self) -> None:
        # Row ids kept as int32 where they fit: a whole vocabulary's certificates (thousands of
        # rows each) take 12 bytes per row instead of 16.
        support = np.asarray(self.support)
        if support.size == 0 or int(support.max()) <= np.iinfo(np.int32).max:
            object.__setattr__(self, "support", support.astype(np.int32, copy=False))

    def to_dict(self) -> dict:
        """The certificate as JSON-ready Python values.

        Returns:
            ``{"support": [...], "weights": [...], "kind": str, "residual": float,
            "bound": float}``.

        Example:
            >>> import numpy as np
            >>> Certificate(np.array([1]), np.ones(1), "hull", 0.0).to_dict()
            {'support': [1], 'weights': [1.0], 'kind': 'hull', 'residual': 0.0, 'bound': 0.0}
        """
        return {"support": self.support.tolist(), "weights": self.weights.tolist(),
                "kind": self.kind, "residual": self.residual, "bound": self.bound}


def _gamma(n: int, unit_roundoff: float = UNIT_ROUNDOFF_64) -> float:
    return n * unit_roundoff / (1.0 - n * unit_roundoff)


def holds_exactly(candidate32: np.ndarray, float64_rows: Callable[[slice], np.ndarray]) -> bool:
    """Whether the float32 array ``candidate32`` equals, a block of rows at a time, the float64
    values ``float64_rows(part)`` of the same rows ``part`` (so no array of the whole's size is
    made in float64, nor a whole-sized mask): the test behind every float32 stand-in for float64
    values in the audit (a copy, a rescaled head, scaled rows as witnesses)."""
    step = block_rows(candidate32)
    return all(np.array_equal(candidate32[start:start + step],
                              float64_rows(slice(start, start + step)))
               for start in range(0, len(candidate32), step))


def float32_copy(array: np.ndarray | None) -> np.ndarray | None:
    """A float32 copy of ``array`` if it holds every value exactly (else None; None for None).

    Heads stored in float32, bf16, fp16 or GGUF blocks are exact in float32 (also after the
    power-of-two rescaling), and so are witnesses rounded to float32: their logits can then be
    computed by the float32 product, twice as fast, under the float32 rounding bound.
    """
    if array is None:
        return None
    if isinstance(array, ExactRows):  # float32 already: its own rows, no copy
        return array.rows32
    with np.errstate(over="ignore", invalid="ignore"):
        copy = array.astype(np.float32)
    return copy if holds_exactly(copy, lambda part: array[part]) else None


def float32_logits(weight32: np.ndarray, bias32: np.ndarray | None, zs: np.ndarray,
                   row_norms: np.ndarray) -> tuple[np.ndarray, float, np.ndarray] | None:
    """Logits ``(B, V)`` by the float32 product (kept float32: their maxima and partitions are
    the same in float64), with ``gamma`` and the underflow allowance.

    None unless every ``z`` is exact in float32 and no logit overflows. The allowance covers
    flushed subnormals (a BLAS may flush them to zero): at most ``2^-126`` per product and per
    sum, and ``2^-126`` times an input entry for each flushed subnormal factor.
    """
    z32 = zs.astype(np.float32)
    if not np.array_equal(z32, zs):
        return None
    logits = z32 @ weight32.T
    if bias32 is not None:
        logits += bias32
    if not (np.isfinite(logits.max()) and np.isfinite(logits.min())):  # float32 overflow (or
        return None  # NaN, which max and min carry): leave this block to float64
    d = weight32.shape[1]
    allowance = SMALLEST_NORMAL_32 * (np.abs(zs).sum(1) + np.sqrt(d) * row_norms.max() + 2 * d + 2)
    return logits, _gamma(d + 2, UNIT_ROUNDOFF_32), allowance


def margin_allowance(gamma: float, allowance: np.ndarray, own_size: np.ndarray,
                     rival_size: float | np.ndarray) -> np.ndarray:
    """Twice the rounding bound of the own logit plus twice that of any rival's, where a logit of
    size ``|w_i|_2 |z|_2 + |b_i|`` (``own_size``, ``rival_size``: the largest) is off by at most
    ``gamma`` times that plus ``allowance``: a computed margin above it proves the class."""
    return 2.0 * (gamma * own_size + allowance) + 2.0 * (gamma * rival_size + allowance)


def _float64_logits(weight: np.ndarray, bias: np.ndarray | None, zs: np.ndarray) -> np.ndarray:
    """``W z + b`` for each row of ``zs``: (B, V), rows contiguous for maxima and partitions."""
    logits = logits_of(weight, zs)
    if bias is not None:
        logits += bias
    return logits


def _take_own(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Each row's logit of its own class; that entry becomes -inf in place (rivals only left)."""
    rows = np.arange(len(ids))
    own = logits[rows, ids].copy()
    logits[rows, ids] = -np.inf
    return own


def inputs_per_product(block: int, n_rows: int) -> int:
    """``block``, or fewer inputs where their float32 logits over ``n_rows`` rows would pass
    ``LOGIT_BLOCK_BYTES`` (at least one)."""
    return max(1, min(block, LOGIT_BLOCK_BYTES // 4 // n_rows))


def largest_columns(logits: np.ndarray, count: int) -> np.ndarray:
    """Per row of ``logits`` (B, V), the columns of its ``count`` largest entries, ascending (an
    order that rounding in the logits cannot change, unlike an order by value).

    The maxima of ``4 count`` runs of columns give a floor per row that at least ``count``
    entries reach (the ``count``-th largest maximum), so only the entries at or above it are
    partitioned: 16 ms for 110 x 151936 float32 logits where ``torch.topk`` took 23 ms and
    NumPy's ``argpartition`` of the whole rows 171 ms (and no torch import for the audit: about
    230 MiB of the process). A row with a NaN is partitioned whole (NaN counts as the largest).

    >>> largest_columns(np.array([[0.0, 3.0, 1.0, 2.0]]), 2).tolist()
    [[1, 3]]
    """
    n_columns = logits.shape[1]
    out = np.empty((len(logits), count), dtype=np.int64)
    if count == 0:
        return out
    runs = np.arange(0, n_columns, max(1, n_columns // (4 * count)))
    if len(runs) <= count:
        out[:] = np.argpartition(logits, n_columns - count, axis=1)[:, n_columns - count:]
        out.sort(axis=1)
        return out
    peaks = np.maximum.reduceat(logits, runs, axis=1)
    floors = np.partition(peaks, len(runs) - count, axis=1)[:, len(runs) - count]
    for j, (row, floor, nan) in enumerate(zip(logits, floors, np.isnan(peaks).any(1),
                                              strict=True)):
        if nan:  # NaN counts as the largest, as ``argpartition`` orders it
            out[j] = np.argpartition(row, n_columns - count)[n_columns - count:]
        else:
            above = np.flatnonzero(row >= floor)
            out[j] = above[np.argpartition(row[above], len(above) - count)[len(above) - count:]]
    out.sort(axis=1)
    return out


def row_norms_of(weight: np.ndarray | ExactRows) -> np.ndarray:
    """``|w_i|_2`` per row, float64 (the size term of the witness bounds), a block of rows at a
    time (no float64 copy of a float32 head)."""
    return np.sqrt(row_squares_of(weight))


def _pair_bounds(bias: np.ndarray | None, z_norm: float, row_norms: np.ndarray,
                 gamma: float) -> np.ndarray:
    """``2 gamma (|w_i|_2 |z|_2 + |b_i|)`` per row: twice the rounding bound of each logit."""
    size = row_norms * z_norm
    if bias is not None:
        size += np.abs(bias)
    return 2.0 * gamma * size


def _pairs_prove(bias: np.ndarray | None, k: int, z_norm: float, row_norms: np.ndarray,
                 logits: np.ndarray, own: float, gamma64: float) -> bool:
    """Whether float64 ``logits`` at an input of norm ``z_norm`` (row ``k`` at -inf, its logit
    ``own``) prove the win of ``k`` pair by pair: ``l_k - 2 e_k > l_i + 2 e_i`` for every ``i``."""
    errors = _pair_bounds(bias, z_norm, row_norms, gamma64)
    return bool(own - errors[k] - (logits + errors).max() > 0)


def _float64_recheck(weight: np.ndarray, bias: np.ndarray | None, k: int, z: np.ndarray,
                     z_norm: float, row_norms: np.ndarray, logits32: np.ndarray, own32: float,
                     gamma32: float, allowance: float, gamma64: float) -> tuple[float, bool]:
    """``(margin, proved)`` at ``z`` from float64 logits of the rows the float32 ones cannot
    rule out. With ``e_i`` a float32 bound and ``E_i`` a float64 one per row, a row with
    ``l32_i + e_i + 2 E_i < l32_k - e_k - 2 E_k`` has its float64 logit plus ``E_i`` below the
    float64 ``l_k - E_k``, so it cannot break the float64 proof: only the others are computed
    (a few rows, instead of a float64 product over the whole head). ``logits32`` has row
    ``k`` at -inf. The margin uses the float32 logits of the rows ruled out."""
    errors32 = _pair_bounds(bias, z_norm, row_norms, gamma32) + 2.0 * allowance
    errors64 = _pair_bounds(bias, z_norm, row_norms, gamma64)
    threshold = own32 - errors32[k] - 2.0 * errors64[k]
    reach = logits32.astype(np.float64) + errors32 + 2.0 * errors64
    rows = np.flatnonzero(reach >= threshold)
    own = float(weight[k] @ z) + (0.0 if bias is None else float(bias[k]))
    exact = weight[rows] @ z + (0.0 if bias is None else bias[rows])
    ruled_out = np.ones(len(logits32), dtype=bool)
    ruled_out[rows] = False
    ruled_out[k] = False
    rival = max(exact.max(initial=-np.inf),
                float(logits32[ruled_out].max(initial=-np.inf)))
    proved = own - errors64[k] - (exact + errors64[rows]).max(initial=-np.inf) > 0
    return own - rival, bool(proved)


def witness_margins(
    weight: np.ndarray, bias: np.ndarray | None, classes: np.ndarray, z: np.ndarray,
    *, block: int = 256, rivals: int = 0, weight32: np.ndarray | None = None,
    bias32: np.ndarray | None = None, row_norms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each ``classes[j]`` and input ``z[j]``: ``(margin, verified, top rivals)``, float64.

    ``margin_j = l_k - max_{i != k} l_i`` at ``z[j]``; ``verified_j`` is True when the rounding
    bounds (module doc, with ``|w_i| . |z| <= |w_i|_2 |z|_2``) prove that ``k`` wins strictly for
    the exact weights. ``rivals > 0`` also returns the ids of the ``rivals`` rows with the largest
    logits besides ``k`` (else an empty array). ``block`` inputs go per matrix product
    (fewer where ``block x V`` float32 logits would pass ``LOGIT_BLOCK_BYTES``).
    ``weight32`` (and ``bias32`` with a bias) are exact float32 copies (:func:`float32_copy`):
    inputs exact in float32 are then checked with the float32 product and its bound, and only
    those it cannot prove are checked again in float64. ``row_norms``: ``|w_i|_2`` computed once
    by :func:`row_norms_of` (for callers that check many small batches).
    """
    if not isinstance(weight, ExactRows):
        weight = np.asarray(weight, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    gamma64 = _gamma(weight.shape[1] + 2)
    use32 = weight32 is not None and (bias is None or bias32 is not None)
    margins = np.full(len(classes), -np.inf)
    verified = np.zeros(len(classes), dtype=bool)
    top = np.zeros((len(classes), rivals), dtype=np.int64)
    row_norms = row_norms_of(weight) if row_norms is None else row_norms
    largest_bias = 0.0 if bias is None else float(np.abs(bias).max())
    block = inputs_per_product(block, len(weight))
    for start in range(0, len(classes), block):
        part = slice(start, start + block)
        ids, zs = classes[part], z[part]
        finite = np.all(np.isfinite(zs), axis=1)
        computed = float32_logits(weight32, bias32, zs, row_norms) if use32 else None
        if computed is None:
            logits = _float64_logits(weight, bias, zs)
            gamma, allowance = gamma64, np.zeros(len(ids))
        else:
            logits, gamma, allowance = computed
        own = _take_own(logits, ids).astype(np.float64)
        margin = np.where(finite, own - logits.max(1).astype(np.float64), -np.inf)
        z_norms = np.linalg.norm(zs, axis=1)
        own_bias = 0.0 if bias is None else np.abs(bias[ids])
        # One bound for every rival first (the largest |w_i| and |b_i|): it decides almost all.
        shared = margin_allowance(gamma, allowance, row_norms[ids] * z_norms + own_bias,
                                  row_norms.max() * z_norms + largest_bias)
        proved = finite & (margin - shared > 0)
        # The per-pair bounds, in float64, where that did not decide.
        could_win = margin > (0.0 if computed is None else -shared)
        for j in np.flatnonzero(finite & ~proved & could_win):
            if computed is None:
                proved[j] = _pairs_prove(bias, ids[j], z_norms[j], row_norms, logits[j], own[j],
                                         gamma64)
            else:
                margin[j], proved[j] = _float64_recheck(weight, bias, ids[j], zs[j], z_norms[j],
                                                        row_norms, logits[j], own[j], gamma,
                                                        allowance[j], gamma64)
        margins[part], verified[part] = margin, proved
        if rivals:
            top[part] = largest_columns(logits, rivals)
        del logits, computed  # before the next block's: one block of logits alive, not two
    return margins, verified, top


def in_box(z: np.ndarray, box: float | None) -> np.ndarray:
    """``|z|_inf <= box`` per row, compared in float64 (True without a box)."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    if box is None:
        return np.ones(len(z), dtype=bool)
    return np.abs(z).max(1) <= float(box)


def homogeneous_into_box(z: np.ndarray, box: float | None) -> np.ndarray:
    """Rows of ``z`` scaled by powers of two (exact) to ``1/2 < |z_j|_inf <= 1``, then into
    ``|z_j|_inf <= box``; zero rows stay zero. For inputs of a head without a bias, where any
    positive multiple of a witness wins alike."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    peak = np.abs(z).max(1, keepdims=True)
    nonzero = peak > 0
    z = z * np.where(nonzero, np.exp2(-np.ceil(np.log2(np.where(nonzero, peak, 1.0)))), 1.0)
    if box is not None:
        peak = np.abs(z).max(1, keepdims=True)
        over = peak > box
        z = z * np.where(over, np.exp2(np.floor(np.log2(box / np.where(over, peak, 1.0)))), 1.0)
    return z


def relative_margin(margin: np.ndarray | float, logits_gap: np.ndarray | float) -> np.ndarray:
    """A margin as a fraction of the median logit gap at the same input (scale-free)."""
    return np.asarray(margin) / np.maximum(np.asarray(logits_gap), np.finfo(np.float64).tiny)


def rounding_share(support_size: int) -> float:
    """The rounding allowance of a certificate over ``support_size`` rows, relative to
    ``sum_i a_i |d_i|_1`` (``gamma_{n+2}``)."""
    return _gamma(support_size + 2)


def combination(
    weight: np.ndarray, bias: np.ndarray | None, k: int, support: np.ndarray,
    weights: np.ndarray,
) -> tuple[np.ndarray, float, float, float]:
    """``(g, c_a, size, rounding)``: ``g = sum a_i d_i``, ``c_a``, ``sum a_i |d_i|_1`` and a
    bound on the float64 rounding error of ``|g|_1`` (so ``|g_exact|_1 <= |g|_1 + rounding``)."""
    g = np.zeros(weight.shape[1])
    size = 0.0
    for start in range(0, len(support), COMBINATION_BLOCK):  # dense certificates: no V x d copy
        part = slice(start, start + COMBINATION_BLOCK)
        diffs = weight[k] - weight[support[part]]
        g += weights[part] @ diffs
        np.abs(diffs, out=diffs)
        size += float((weights[part] @ diffs).sum())
    rounding = rounding_share(len(support)) * size
    c_a = 0.0 if bias is None else float(weights @ (bias[k] - bias[support]))
    return g, c_a, size, rounding


def valid_weights(weights: np.ndarray, support: np.ndarray, k: int) -> bool:
    return (len(support) > 0 and bool(np.all(weights >= 0)) and not np.any(support == k)
            and abs(float(weights.sum()) - 1.0) <= 1e-9)


def hull_certificate(
    weight: np.ndarray, bias: np.ndarray | None, k: int, support: np.ndarray,
    weights: np.ndarray, tol: float, shift: np.ndarray | float | None = None,
    kind: str = "depth",
) -> Certificate | None:
    """Check ``sum_i a_i (d_i, c_i) = -shift`` up to the relative tolerance (no box).

    ``shift`` is None for a plain "hull" certificate (``g = 0``, ``c_a <= 0``: no strict win);
    a vector (no bias: ``eps u``) or a number (bias: ``delta``) for a pushed row: ``kind``
    "depth" (pushed outward) or "inner" (pushed inward, ``-eps u`` or ``-delta``).
    """
    if not valid_weights(weights, support, k):
        return None
    g, c_a, size, rounding = combination(weight, bias, k, support, weights)
    if bias is None and shift is not None:
        g = g + np.asarray(shift)
    residual = (float(np.abs(g).sum()) + rounding) / max(size, np.finfo(np.float64).tiny)
    if residual > tol * RESIDUAL_SHARE:
        return None
    if bias is not None:
        limit = 0.0 if shift is None else -float(shift)
        if c_a > limit + tol * float(weights @ np.abs(bias[k] - bias[support])):
            return None
    if shift is None:
        kind = "hull"
    return Certificate(support=support, weights=weights, kind=kind, residual=residual,
                       bound=c_a)


def box_certificate(
    weight: np.ndarray, bias: np.ndarray | None, k: int, support: np.ndarray,
    weights: np.ndarray, box: float,
) -> Certificate | None:
    """``bound = B |g|_1 + c_a`` (plus rounding) bounds the best margin over ``|z|_inf <= B``."""
    if not valid_weights(weights, support, k):
        return None
    g, c_a, size, rounding = combination(weight, bias, k, support, weights)
    c_size = 0.0 if bias is None else float(weights @ np.abs(bias[k] - bias[support]))
    bound = box * (float(np.abs(g).sum()) + rounding) + c_a + rounding_share(len(support)) * c_size
    residual = float(np.abs(g).sum()) / max(size, np.finfo(np.float64).tiny)
    return Certificate(support=support, weights=weights, kind="box", residual=residual,
                       bound=bound)


def box_tolerance(weight: np.ndarray, bias: np.ndarray | None, k: int, rows: np.ndarray,
                  box: float, tol: float) -> float:
    """``tau = tol * (B max_S |d_i|_1 + max_S |c_i|)`` over ``rows``: the per-class scale of a
    margin in the box, from the rows that matter (never from an unrelated extreme bias)."""
    size = box * float(np.abs(weight[k] - weight[rows]).sum(1).max())
    if bias is not None:
        size += float(np.abs(bias[k] - bias[rows]).max())
    return tol * size
