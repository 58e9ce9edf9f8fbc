"""Output-layer losses: EMO and TaiLr on logits, and fused (chunked) linear + loss versions.

The Hugging Face Trainer integration (``FusedLossTrainer``, ``GammaScheduleCallback``) lives in
``logitkit.losses.hf``, which imports transformers; this package does not.
"""

from logitkit.losses.causal_lm import causal_lm_loss, patch_causal_lm, unpatch_causal_lm
from logitkit.losses.functional import emo_loss, emo_mle_loss, tailr_gamma_schedule, tailr_loss
from logitkit.losses.fused import linear_cross_entropy, linear_emo_loss, linear_tailr_loss
from logitkit.losses.modules import (
    CrossEntropyLoss,
    EMOLoss,
    OutputLoss,
    TaiLrLoss,
    make_compute_loss_func,
)

__all__ = [
    "CrossEntropyLoss",
    "EMOLoss",
    "OutputLoss",
    "TaiLrLoss",
    "causal_lm_loss",
    "make_compute_loss_func",
    "patch_causal_lm",
    "unpatch_causal_lm",
    "emo_loss",
    "emo_mle_loss",
    "linear_cross_entropy",
    "linear_emo_loss",
    "linear_tailr_loss",
    "tailr_gamma_schedule",
    "tailr_loss",
]
