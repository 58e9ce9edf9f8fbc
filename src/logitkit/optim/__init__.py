"""Sign-of-momentum optimizers (Tiger, Lion) with lazy rows, parameter groups and a monitor for the
+-1/weight_decay pile-up."""

from logitkit.optim.monitor import SaturationMonitor, find_saturated_rows
from logitkit.optim.param_groups import MixedOptimizer, make_optimizer, param_groups
from logitkit.optim.sign_momentum import Lion, Tiger, lazy_rows_update_, sign_momentum_update_

__all__ = [
    "Lion",
    "MixedOptimizer",
    "SaturationMonitor",
    "Tiger",
    "find_saturated_rows",
    "lazy_rows_update_",
    "make_optimizer",
    "param_groups",
    "sign_momentum_update_",
]
