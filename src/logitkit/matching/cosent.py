"""CoSENT: a ranking loss on pair scores that only asks for the gold order of the pairs.

For predicted pair scores ``s`` (e.g. cosine similarities) and gold labels ``y`` of one batch,

    L = log(1 + sum_{(i, j): y_i > y_j} exp(scale * (s_j - s_i)))

Every ordered pair (i, j) whose gold label says "i is more similar than j" is penalised when the
model scores j above i. Pairs with equal labels (ties) are ignored, so only the order of the labels
matters: any real-valued labels work, and rescaling them changes nothing.

Reference: Su Jianlin, "CoSENT (一)", blog post, 2022 (https://kexue.fm/archives/8847); the same
loss is sentence-transformers' ``CoSENTLoss``, and Huang et al., "CoSENT: Consistent Sentence
Embedding via Similarity Ranking", IEEE/ACM TASLP 2024, is its journal version.
"""

from __future__ import annotations

import torch

_HALF = (torch.float16, torch.bfloat16)


def _as_vector(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """(N,) or (N, 1) -> (N,); anything else is an error."""
    if tensor.dim() == 2 and tensor.shape[1] == 1:
        return tensor[:, 0]
    if tensor.dim() != 1:
        raise ValueError(
            f"{name} must be 1-D or (N, 1) (one entry per pair), got shape {tuple(tensor.shape)}"
        )
    return tensor


def _check_inputs(
    scores: torch.Tensor, labels: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(scores, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"scores and labels must be torch.Tensor, got {type(scores).__name__} and "
            f"{type(labels).__name__}"
        )
    scores, labels = _as_vector(scores, "scores"), _as_vector(labels, "labels")
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels must have the same length, got {scores.numel()} and "
            f"{labels.numel()}"
        )
    if scores.numel() == 0:
        raise ValueError("cosent_loss needs a non-empty batch, got 0 pairs")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got {scores.dtype}")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    if labels.is_floating_point() and not torch.isfinite(labels).all():
        raise ValueError("labels contain NaN or infinite values")
    if not (isinstance(scale, (int, float)) and 0 < scale < float("inf")):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return scores, labels


def cosent_loss(scores: torch.Tensor, labels: torch.Tensor, *, scale: float = 20.0) -> torch.Tensor:
    """CoSENT loss of one batch of pair scores against their gold labels (a scalar tensor).

        cosent_loss(s, y) = log(1 + sum_{(i, j): y_i > y_j} exp(scale * (s_j - s_i)))

    Pairs with equal labels contribute nothing; only the order of the labels matters. A batch
    whose labels are all equal has no ordered pair: the loss is 0 with zero gradient.

    Computed in O(N log N) time and O(N) memory, never as an N x N matrix. With the pairs sorted
    by label and ``t = scale * s``, the inner sum factorises per pair j:

        sum_{i: y_i > y_j} exp(t_j - t_i) = exp(t_j + lse_{i: y_i > y_j}(-t_i)),

    and the pairs with a strictly larger label than y_j form a suffix of the sorted order (found
    by ``searchsorted(..., right=True)``, which skips the pairs tied with j), so every inner
    log-sum-exp is one entry of a reversed ``logcumsumexp``. The loss is the log-sum-exp of 0
    (the "1 +") and the N terms ``t_j + lse_j``: stable for any ``scale``.

    float16/bfloat16 scores are computed in float32 (and the loss is float32); float64 stays
    float64. Gradients flow to ``scores`` in their own dtype.

    Args:
        scores: (N,) or (N, 1) floating-point predicted similarities of N pairs, all finite.
        labels: (N,) or (N, 1) gold similarities (real, integer or bool); only their order counts.
        scale: inverse temperature, a positive finite number (default 20.0, as in CoSENT).

    Returns:
        A 0-dim tensor: float32 for float16/bfloat16 scores, else the dtype of ``scores``.

    Raises:
        TypeError: if scores or labels are not tensors, or scores are not floating-point.
        ValueError: on other shapes, unequal lengths, an empty batch, NaN or infinite values,
            or a scale that is not positive and finite.

    Reference:
        Su Jianlin, "CoSENT (一)", 2022 (https://kexue.fm/archives/8847); sentence-transformers'
        ``CoSENTLoss`` computes the same loss from a model's embeddings.

    Example:
        >>> import torch
        >>> from logitkit.matching import cosent_loss
        >>> loss = cosent_loss(torch.tensor([0.9, 0.2, 0.5]), torch.tensor([5.0, 0.0, 3.2]))
        >>> round(loss.item(), 4)  # log(1 + e^{20(0.2-0.9)} + e^{20(0.5-0.9)} + e^{20(0.2-0.5)})
        0.0028
        >>> cosent_loss(torch.tensor([0.1, 0.7]), torch.tensor([1, 1])).item()  # a tie: no pair
        0.0
    """
    scores, labels = _check_inputs(scores, labels, scale)
    if scores.dtype in _HALF:
        scores = scores.float()
    if labels.dtype == torch.bool:
        labels = labels.to(torch.int64)
    elif labels.dtype in _HALF:
        labels = labels.float()  # exact: the order and the ties stay as given
    sorted_labels, order = torch.sort(labels)  # the order inside a tie group does not matter
    t = scale * scores[order]
    # suffix[k] = lse(-t[k:]) for k < N; suffix[N] = -inf (no pair has a larger label)
    suffix = torch.logcumsumexp(-t.flip(0), dim=0).flip(0)
    suffix = torch.cat([suffix, suffix.new_full((1,), float("-inf"))])
    first_larger = torch.searchsorted(sorted_labels, sorted_labels, right=True)
    terms = t + suffix[first_larger]
    return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)
