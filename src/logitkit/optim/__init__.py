"""Sign-of-momentum optimizers (Tiger, Lion) with lazy rows, the released Tiger's relative step
sizes, AdamW groups for embeddings, a half-swap tied output layer, and a monitor for the
+-1/weight_decay pile-up."""

from logitkit.optim.functional import lazy_rows_update_, sign_momentum_update_
from logitkit.optim.monitor import SaturationMonitor, find_saturated_rows
from logitkit.optim.param_groups import make_optimizer, param_groups
from logitkit.optim.sign_momentum import Lion, Tiger
from logitkit.optim.tied import HalfSwapTiedHead, swap_halves

__all__ = [
    "HalfSwapTiedHead",
    "Lion",
    "SaturationMonitor",
    "Tiger",
    "find_saturated_rows",
    "lazy_rows_update_",
    "make_optimizer",
    "param_groups",
    "sign_momentum_update_",
    "swap_halves",
]
