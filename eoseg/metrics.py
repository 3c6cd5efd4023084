"""Segmentation metrics from a confusion matrix: exact over any number of pixels.

The confusion matrix ``cm[t, p]`` counts pixels with true class ``t`` predicted as ``p``; pixels whose
label is the ignore value (or any value outside ``0..C-1``) are left out. Everything else follows from
it (definitions as in e.g. Long et al. 2015 for pixel accuracy / mean IoU / frequency-weighted IoU):

- overall accuracy = trace / total
- IoU_c = TP / (TP + FP + FN); F1_c = Dice_c = 2TP / (2TP + FP + FN); precision_c = TP / (TP + FP);
  recall_c = TP / (TP + FN). A class with no true and no predicted pixel gets NaN and is left out of means.
- frequency-weighted IoU = Σ_c (support_c / total) · IoU_c
- Matthews correlation coefficient, multiclass (Gorodkin 2004, the R_K statistic, as scikit-learn's
  ``matthews_corrcoef``): (c·s − Σ p_k t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²))
- KL divergence: with probabilities, the mean per-pixel KL(onehot ‖ p) (:class:`KLAccumulator`);
  with hard predictions only, KL(true class distribution ‖ predicted class distribution).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from eoseg.classes import NODATA_CLASS

_EPS = 1e-10


def confusion_matrix(y_true, y_pred, num_classes: int, ignore_index: int = NODATA_CLASS) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted class; accepts numpy or torch."""
    t = torch.as_tensor(np.asarray(y_true) if not torch.is_tensor(y_true) else y_true).reshape(-1).long()
    p = torch.as_tensor(np.asarray(y_pred) if not torch.is_tensor(y_pred) else y_pred).reshape(-1).long()
    keep = (t != ignore_index) & (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    idx = t[keep] * num_classes + p[keep]
    counts = torch.bincount(idx.cpu(), minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy().astype(np.int64)


class ConfusionMeter:
    """Accumulates a confusion matrix over batches."""

    def __init__(self, num_classes: int, ignore_index: int = NODATA_CLASS):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, y_true, y_pred) -> np.ndarray:
        cm = confusion_matrix(y_true, y_pred, self.num_classes, self.ignore_index)
        self.matrix += cm
        return cm


class KLAccumulator:
    """Mean over labelled pixels of KL(onehot ‖ p) = −log p_true (natural log)."""

    def __init__(self, ignore_index: int = NODATA_CLASS):
        self.ignore_index = ignore_index
        self.total = 0.0
        self.count = 0

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        valid = (target != self.ignore_index) & (target < probs.shape[1])
        if not valid.any():
            return
        p = probs.float().permute(0, 2, 3, 1)[valid]
        p_true = p.gather(1, target[valid].long().unsqueeze(1)).squeeze(1)
        self.total += float(-torch.log(p_true.clamp_min(_EPS)).sum())
        self.count += int(valid.sum())

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def matthews_corrcoef(cm: np.ndarray) -> float:
    cm = cm.astype(np.float64)
    t_k, p_k = cm.sum(axis=1), cm.sum(axis=0)
    c, s = np.trace(cm), cm.sum()
    denom = math.sqrt((s * s - float(p_k @ p_k)) * (s * s - float(t_k @ t_k)))
    return float((c * s - float(t_k @ p_k)) / denom) if denom > 0 else 0.0


def distribution_kld(cm: np.ndarray) -> float:
    """KL(true class frequencies ‖ predicted class frequencies), natural log, eps-smoothed."""
    t = cm.sum(axis=1).astype(np.float64)
    p = cm.sum(axis=0).astype(np.float64)
    if t.sum() == 0:
        return float("nan")
    t, p = t / t.sum(), (p + _EPS) / (p + _EPS).sum()
    nz = t > 0
    return float(np.sum(t[nz] * np.log(t[nz] / p[nz])))


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def metrics_from_confusion(cm: np.ndarray, class_names: list[str] | None = None,
                           kld: float | None = None) -> dict:
    """Every metric as plain floats: overall, means, and ``per_class`` {name: {iou, f1, ...}}."""
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    names = class_names or [str(i) for i in range(n)]
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    fp, fn = predicted - tp, support - tp
    total = float(cm.sum())
    iou = _div(tp, tp + fp + fn)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    precision, recall = _div(tp, predicted), _div(tp, support)
    freq = support / total if total else np.zeros(n)
    per_class = {
        name: {"iou": _f(iou[i]), "f1": _f(f1[i]), "dice": _f(f1[i]), "precision": _f(precision[i]),
               "recall": _f(recall[i]), "support": int(support[i]), "predicted": int(predicted[i])}
        for i, name in enumerate(names)
    }
    return {
        "pixels": int(total),
        "overall_accuracy": float(tp.sum() / total) if total else float("nan"),
        "mean_iou": _nanmean(iou),
        "mean_f1": _nanmean(f1),
        "dice": _nanmean(f1),
        "mean_precision": _nanmean(precision),
        "mean_recall": _nanmean(recall),
        "frequency_weighted_iou": float(np.nansum(freq * np.nan_to_num(iou))) if total else float("nan"),
        "mcc": matthews_corrcoef(cm),
        "kld": float(kld) if kld is not None else distribution_kld(cm),
        "kld_kind": "pixel" if kld is not None else "class_distribution",
        "per_class": per_class,
    }


def _f(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def summary(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The scalar metrics (no per-class detail) with an optional prefix, for history rows and progress bars."""
    keys = ("overall_accuracy", "mean_iou", "dice", "frequency_weighted_iou", "mcc", "kld")
    short = {"overall_accuracy": "accuracy", "mean_iou": "miou"}
    return {f"{prefix}{short.get(k, k)}": metrics[k] for k in keys if k in metrics}
