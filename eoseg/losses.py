"""Segmentation losses by name; every one takes logits (N, C, H, W) and labels (N, H, W).

Pixels whose label equals ``ignore_index`` (255) contribute nothing to any loss. Class weights, where
given, weight each class's term (Dice, Jaccard, Tversky, focal: weighted mean over classes;
cross-entropy / KL divergence: PyTorch's per-pixel weights).

``dice``        1 − mean over classes of the soft Dice score (smp ``DiceLoss``; a class absent from both
                the batch's labels scores 0 loss)
``cce``         categorical cross-entropy (optional ``label_smoothing``)
``kld``         KL divergence KL(q ‖ softmax) with q the one-hot label, optionally smoothed by
                ``smoothing``: q = (1 − s)·onehot + s / C. With s = 0 it equals cross-entropy, which is
                what Keras' ``KLDivergence`` on one-hot labels (Segmentation Gym's "kld") computes.
``focal``       per-class binary focal loss (Lin et al. 2017, γ = 2), mean over classes (smp ``FocalLoss``)
``dice_focal``  ``dice_weight``·dice + ``focal_weight``·focal
``bce_jaccard`` binary cross-entropy of the softmax probabilities against one-hot labels + Jaccard loss
``lovasz``      Lovász-softmax (Berman et al. 2018; smp ``LovaszLoss``)
``tversky``     Tversky loss (Salehi et al. 2017), ``alpha`` weighs false positives, ``beta`` false negatives
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from eoseg.classes import NODATA_CLASS
from eoseg.errors import ConfigError

MULTICLASS = "multiclass"


def _weights(class_weights: Sequence[float] | None, num_classes: int) -> list[float] | None:
    if class_weights is None:
        return None
    if len(class_weights) != num_classes:
        raise ConfigError(
            f"class_weights has {len(class_weights)} values but there are {num_classes} classes",
            path="loss.class_weights", fix=f"give {num_classes} weights, one per class id",
        )
    if any(w < 0 for w in class_weights) or sum(class_weights) <= 0:
        raise ConfigError("class_weights must be non-negative and not all zero", path="loss.class_weights",
                          fix="use e.g. [1, 1, 1, 1]")
    return [float(w) for w in class_weights]


class CrossEntropy(nn.Module):
    def __init__(self, class_weights: list[float] | None, ignore_index: int, label_smoothing: float = 0.0):
        super().__init__()
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), target.long(), weight=self.weight, ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)


class KLDivergence(nn.Module):
    """Mean over labelled pixels of KL(q ‖ p), q the (smoothed) one-hot label, p = softmax(logits)."""

    def __init__(self, class_weights: list[float] | None, ignore_index: int, smoothing: float = 0.0):
        super().__init__()
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        valid = target != self.ignore_index
        if not valid.any():
            return logits.sum() * 0.0
        log_p = logits.float().log_softmax(dim=1).permute(0, 2, 3, 1)[valid]  # (P, C)
        labels = target[valid].long()
        q = F.one_hot(labels, num_classes).float() * (1.0 - self.smoothing) + self.smoothing / num_classes
        kl = (torch.xlogy(q, q) - q * log_p).sum(dim=1)  # xlogy: 0·log 0 = 0
        if self.weight is None:
            return kl.mean()
        w = self.weight.to(kl.device)[labels]
        return (kl * w).sum() / w.sum().clamp_min(1e-12)


class BCEJaccard(nn.Module):
    """Binary cross-entropy of softmax probabilities vs one-hot labels, plus the Jaccard (IoU) loss."""

    def __init__(self, class_weights: list[float] | None, ignore_index: int, smooth: float = 0.0):
        super().__init__()
        self.ignore_index = ignore_index
        self.class_weights = class_weights
        self.jaccard = smp_losses.JaccardLoss(MULTICLASS, ignore_index=ignore_index, smooth=smooth,
                                              class_weights=class_weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        valid = target != self.ignore_index
        if not valid.any():
            return logits.sum() * 0.0
        probs = logits.float().softmax(dim=1).permute(0, 2, 3, 1)[valid].clamp(1e-7, 1 - 1e-7)
        onehot = F.one_hot(target[valid].long(), num_classes).float()
        bce = F.binary_cross_entropy(probs, onehot, reduction="none").mean(dim=0)  # per class
        if self.class_weights is not None:
            w = torch.tensor(self.class_weights, device=bce.device)
            bce_term = (bce * w).sum() / w.sum()
        else:
            bce_term = bce.mean()
        return bce_term + self.jaccard(logits.float(), target.long())


class Sum(nn.Module):
    """A weighted sum of losses."""

    def __init__(self, parts: Sequence[tuple[float, nn.Module]]):
        super().__init__()
        self.weights = [w for w, _ in parts]
        self.parts = nn.ModuleList([m for _, m in parts])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * m(logits, target) for w, m in zip(self.weights, self.parts, strict=True))


class _Smp(nn.Module):
    """smp losses in fp32 with long targets, safe on batches where every pixel is ignored."""

    def __init__(self, loss: nn.Module, ignore_index: int):
        super().__init__()
        self.loss = loss
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0
        return self.loss(logits.float(), target.long())


def _dice(w, ignore, smooth: float = 0.0, log_loss: bool = False) -> nn.Module:
    return _Smp(smp_losses.DiceLoss(MULTICLASS, ignore_index=ignore, smooth=smooth, log_loss=log_loss,
                                    class_weights=w), ignore)


def _focal(w, ignore, gamma: float = 2.0, alpha: float | None = None) -> nn.Module:
    return _Smp(smp_losses.FocalLoss(MULTICLASS, gamma=gamma, alpha=alpha, ignore_index=ignore,
                                     class_weights=w), ignore)


def _dice_focal(w, ignore, dice_weight: float = 1.0, focal_weight: float = 1.0, gamma: float = 2.0,
                smooth: float = 0.0) -> nn.Module:
    return Sum([(dice_weight, _dice(w, ignore, smooth=smooth)), (focal_weight, _focal(w, ignore, gamma=gamma))])


def _lovasz(w, ignore, per_image: bool = False) -> nn.Module:
    if w is not None:
        raise ConfigError("the lovasz loss does not take class_weights", path="loss.class_weights",
                          fix="remove class_weights or choose another loss (e.g. dice_focal)")
    return _Smp(smp_losses.LovaszLoss(MULTICLASS, per_image=per_image, ignore_index=ignore), ignore)


def _tversky(w, ignore, alpha: float = 0.5, beta: float = 0.5, gamma: float = 1.0,
             smooth: float = 0.0) -> nn.Module:
    return _Smp(smp_losses.TverskyLoss(MULTICLASS, alpha=alpha, beta=beta, gamma=gamma, smooth=smooth,
                                       ignore_index=ignore, class_weights=w), ignore)


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "dice": _dice,
    "cce": lambda w, ignore, label_smoothing=0.0: CrossEntropy(w, ignore, label_smoothing),
    "kld": lambda w, ignore, smoothing=0.0: KLDivergence(w, ignore, smoothing),
    "focal": _focal,
    "dice_focal": _dice_focal,
    "bce_jaccard": lambda w, ignore, smooth=0.0: BCEJaccard(w, ignore, smooth),
    "lovasz": _lovasz,
    "tversky": _tversky,
}
_ALIASES = {"categorical_crossentropy": "cce", "cross_entropy": "cce", "ce": "cce", "kl": "kld",
            "dice+focal": "dice_focal", "bce-jaccard": "bce_jaccard", "lovasz-softmax": "lovasz",
            "dice-focal": "dice_focal"}


def available_losses() -> list[str]:
    return sorted(LOSSES)


def build_loss(name: str, num_classes: int, class_weights: Sequence[float] | None = None,
               ignore_index: int = NODATA_CLASS, **params) -> nn.Module:
    """A loss module by name (see the module docstring); unknown names or parameters raise ConfigError."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}", path="loss.name",
                          fix=f"use one of: {', '.join(available_losses())}")
    weights = _weights(class_weights, num_classes)
    try:
        return LOSSES[key](weights, ignore_index, **params)
    except TypeError as exc:
        raise ConfigError(f"loss {key!r} does not accept these params: {sorted(params)} ({exc})",
                          path="loss.params", fix="see eoseg.losses for each loss's parameters") from None
