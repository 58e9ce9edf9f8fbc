"""logitkit: the output layer of classifiers and language models.

Capabilities live in sub-packages: ``losses``, ``optim``, ``thresholds``, ``matching``, ``audit``.
Import them directly, e.g. ``from logitkit.losses import emo_loss``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("logitkit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
