"""Label-noise experiment for TaiLr's claim: an MLP on scikit-learn's digits with noisy labels.

A share ``rate`` of the training labels is replaced by a uniformly drawn *other* class (symmetric
noise); the test labels stay clean. An MLP large enough to memorise every training label is
trained long enough to do so with cross-entropy; the same network, initialisation and batches are
trained with TaiLr. Measured on the clean test set: accuracy, NLL, expected calibration error and
over-confidence (mean max-probability minus accuracy); on the training set: the share of noisy
examples whose *noisy* label the model predicts (memorised).

The optimiser is a parameter because the outcome depends on it (see the ``tailr`` experiment):
Adam, the optimiser of the TaiLr authors' fairseq scripts, normalises each parameter's update by
its own gradient scale, which can undo a down-weighting of the noisy labels' gradients that plain
SGD keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from logitkit._utils import require
from logitkit.losses import tailr_loss

ECE_BINS = 15
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class NoisyDigits:
    train_x: Tensor
    train_noisy: Tensor
    train_clean: Tensor
    test_x: Tensor
    test_y: Tensor

    @property
    def noisy(self) -> Tensor:
        return self.train_noisy != self.train_clean


def noisy_digits(rate: float, seed: int, test_share: float = 0.3) -> NoisyDigits:
    """Digits (1797 x 64, 10 classes), standardised on the training split, with symmetric noise."""
    datasets = require("sklearn.datasets", extra="sklearn", purpose="the digits data set")
    selection = require("sklearn.model_selection", extra="sklearn", purpose="splitting digits")
    x, y = datasets.load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = selection.train_test_split(
        x, y, test_size=test_share, stratify=y, random_state=seed)
    mean, std = train_x.mean(0), train_x.std(0)
    std = np.where(std > 0, std, 1.0)  # pixels that are always 0 in the training split
    rng = np.random.default_rng(seed)
    flip = rng.random(train_y.shape[0]) < rate
    shift = rng.integers(1, 10, train_y.shape[0])  # a uniformly drawn other class
    noisy = np.where(flip, (train_y + shift) % 10, train_y)
    as_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return NoisyDigits(train_x=as_x(train_x), train_noisy=torch.tensor(noisy),
                       train_clean=torch.tensor(train_y), test_x=as_x(test_x),
                       test_y=torch.tensor(test_y))


def mlp(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


def calibration_error(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """ECE = sum_b (n_b / n) |accuracy_b - confidence_b| over equal-width confidence bins."""
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).double()
    which = torch.clamp((confidence * bins).long(), max=bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += float(members.double().mean()
                           * (correct[members].mean() - confidence[members].double().mean()).abs())
    return total


def train(data: NoisyDigits, *, gamma: float | None, threshold: float | None, epochs: int,
          width: int, batch: int, lr: float, seed: int, optimizer: str = "adam") -> nn.Module:
    """Train on the noisy labels with ``optimizer`` ("adam", or "sgd": plain SGD without
    momentum); ``gamma=None`` is cross-entropy, else ``tailr_loss``."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    model = mlp(width, seed)
    optimizer_class = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    step = optimizer_class(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed + 1)
    n = data.train_x.shape[0]
    for _ in range(epochs):
        for rows in torch.randperm(n, generator=generator).split(batch):
            logits = model(data.train_x[rows])
            target = data.train_noisy[rows]
            if gamma is None:
                loss = nn.functional.cross_entropy(logits, target)
            else:
                loss = tailr_loss(logits, target, gamma=gamma, threshold=threshold)
            step.zero_grad(set_to_none=True)
            loss.backward()
            step.step()
    return model.eval()


@torch.no_grad()
def measure(model: nn.Module, data: NoisyDigits) -> dict[str, float]:
    log_probs = torch.log_softmax(model(data.test_x).double(), -1)
    probs = log_probs.exp()
    accuracy = float((probs.argmax(1) == data.test_y).double().mean())
    train_pred = model(data.train_x).argmax(1)
    noisy = data.noisy
    return {
        "test_accuracy": accuracy,
        "test_nll": float(-log_probs.gather(1, data.test_y[:, None]).mean()),
        "test_ece": calibration_error(probs, data.test_y),
        "overconfidence": float(probs.max(1).values.mean()) - accuracy,
        "memorised": float((train_pred[noisy] == data.train_noisy[noisy]).double().mean()),
        "noisy_restored": float((train_pred[noisy] == data.train_clean[noisy]).double().mean()),
        "clean_train_accuracy": float((train_pred[~noisy] == data.train_clean[~noisy])
                                      .double().mean()),
    }
