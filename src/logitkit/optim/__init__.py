"""Sign-of-momentum optimizers (Tiger, Lion) with lazy rows, the released Tiger's relative step
sizes, AdamW groups for embeddings, a half-swap tied output layer, and a monitor for the
+-1/weight_decay pile-up.

The package root holds what a training script calls. Lower-level pieces live in their modules:
the in-place functional steps ``sign_momentum_update_`` and ``lazy_rows_update_`` in
``logitkit.optim.functional``, and ``swap_halves`` (the half swap of ``HalfSwapTiedHead``, e.g.
for a fused loss on the hidden states) in ``logitkit.optim.tied``.
"""

from logitkit.optim.monitor import SaturationMonitor, find_saturated_rows
from logitkit.optim.param_groups import make_optimizer, param_groups
from logitkit.optim.sign_momentum import Lion, Tiger
from logitkit.optim.tied import HalfSwapTiedHead

__all__ = [
    "HalfSwapTiedHead",
    "Lion",
    "SaturationMonitor",
    "Tiger",
    "find_saturated_rows",
    "make_optimizer",
    "param_groups",
]
