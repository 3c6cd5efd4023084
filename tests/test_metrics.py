"""Metrics from the confusion matrix, checked by hand (and MCC against scikit-learn)."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import matthews_corrcoef as sk_mcc

from eoseg.metrics import (
    ConfusionMeter,
    KLAccumulator,
    confusion_matrix,
    distribution_kld,
    matthews_corrcoef,
    metrics_from_confusion,
    summary,
)

Y_TRUE = np.array([[0, 0, 1, 1], [2, 2, 255, 0]])
Y_PRED = np.array([[0, 1, 1, 1], [2, 0, 3, 0]])


def test_confusion_matrix_by_hand_ignores_255():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    expected = np.array([[2, 1, 0], [0, 2, 0], [1, 0, 1]])  # rows true, cols predicted; 255 left out
    np.testing.assert_array_equal(cm, expected)
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(Y_TRUE), torch.from_numpy(Y_PRED), 3), expected)


def test_meter_accumulates_exactly():
    meter = ConfusionMeter(3)
    meter.update(Y_TRUE[:1], Y_PRED[:1])
    meter.update(Y_TRUE[1:], Y_PRED[1:])
    np.testing.assert_array_equal(meter.matrix, confusion_matrix(Y_TRUE, Y_PRED, 3))


def test_metrics_by_hand():
    cm = np.array([[2, 1, 0], [0, 2, 0], [1, 0, 1]])
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["pixels"] == 7
    assert m["overall_accuracy"] == pytest.approx(5 / 7)
    iou = [2 / 4, 2 / 3, 1 / 2]  # TP / (TP + FP + FN)
    f1 = [4 / 6, 4 / 5, 2 / 3]
    assert [m["per_class"][k]["iou"] for k in "abc"] == pytest.approx(iou)
    assert [m["per_class"][k]["f1"] for k in "abc"] == pytest.approx(f1)
    assert [m["per_class"][k]["precision"] for k in "abc"] == pytest.approx([2 / 3, 2 / 3, 1])
    assert [m["per_class"][k]["recall"] for k in "abc"] == pytest.approx([2 / 3, 1, 1 / 2])
    assert m["mean_iou"] == pytest.approx(np.mean(iou))
    assert m["dice"] == pytest.approx(np.mean(f1))
    assert m["frequency_weighted_iou"] == pytest.approx(3 / 7 * iou[0] + 2 / 7 * iou[1] + 2 / 7 * iou[2])


def test_mcc_matches_scikit_learn_and_edge_cases():
    t, p = Y_TRUE[Y_TRUE != 255], Y_PRED[Y_TRUE != 255]
    assert matthews_corrcoef(confusion_matrix(t, p, 4)) == pytest.approx(sk_mcc(t, p))
    assert matthews_corrcoef(np.diag([3, 4, 5])) == pytest.approx(1.0)
    assert matthews_corrcoef(np.array([[5, 0], [5, 0]])) == 0.0  # constant prediction


def test_absent_class_is_nan_and_left_out_of_means():
    cm = np.array([[3, 0, 0], [0, 2, 0], [0, 0, 0]])
    m = metrics_from_confusion(cm)
    assert m["per_class"]["2"]["iou"] is None
    assert m["mean_iou"] == pytest.approx(1.0)


def test_kl_divergence_pixelwise_and_distribution():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]).T.reshape(1, 3, 1, 2)
    target = torch.tensor([[[0, 255]]])
    kl = KLAccumulator()
    kl.update(probs, target)
    assert kl.value == pytest.approx(-math.log(0.7), rel=1e-6)  # KL(onehot ‖ p) = −log p_true
    cm = np.array([[3, 1], [0, 0]])  # true (1, 0), predicted (.75, .25)
    assert distribution_kld(cm) == pytest.approx(math.log(1 / 0.75), rel=1e-6)
    m = metrics_from_confusion(cm, kld=0.5)
    assert m["kld"] == 0.5 and m["kld_kind"] == "pixel"


def test_summary_keys():
    s = summary(metrics_from_confusion(np.eye(2, dtype=int)), "val_")
    assert {"val_accuracy", "val_miou", "val_dice", "val_mcc", "val_kld", "val_frequency_weighted_iou"} == set(s)
