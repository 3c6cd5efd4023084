"""Losses against values computed by hand on tiny arrays (one image, a few pixels, one ignored)."""

import math

import pytest
import torch

from eoseg.errors import ConfigError
from eoseg.losses import available_losses, build_loss

IGNORE = 255


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


@pytest.fixture
def flat():
    """2 classes, logits 0 everywhere (p = 0.5), labels [0, 1, 1, ignored] in a 1 × 4 image."""
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, :, 0, 3] = torch.tensor([9.0, -9.0])  # the ignored pixel: would change every loss if counted
    target = torch.tensor([[[0, 1, 1, IGNORE]]])
    return logits, target


def test_registry_names_and_unknown():
    assert set(available_losses()) == {"dice", "cce", "kld", "focal", "dice_focal", "bce_jaccard", "lovasz",
                                       "tversky"}
    with pytest.raises(ConfigError, match="unknown loss 'dicey'.*use one of: bce_jaccard, cce, dice"):
        build_loss("dicey", 4)


def test_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]]).T.reshape(1, 2, 1, 2)  # pixel 0: (2, 0); pixel 1: (0, 0)
    target = torch.tensor([[[0, IGNORE]]])
    loss = build_loss("cce", 2)(logits, target)
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)


def test_cross_entropy_class_weights_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)  # pixel 0: (2, 0); pixel 1: (0, 1)
    target = torch.tensor([[[0, 1]]])
    l0, l1 = math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1))
    loss = build_loss("cce", 2, class_weights=[1, 3])(logits, target)
    assert float(loss) == pytest.approx((1 * l0 + 3 * l1) / 4, rel=1e-6)


def test_kld_equals_ce_for_one_hot_and_by_hand_with_smoothing():
    logits = torch.tensor([1.0, -0.5]).reshape(1, 2, 1, 1)
    target = torch.tensor([[[0]]])
    p0 = math.exp(1) / (math.exp(1) + math.exp(-0.5))
    assert float(build_loss("kld", 2)(logits, target)) == pytest.approx(-math.log(p0), rel=1e-6)
    q0, q1 = 0.9, 0.1  # smoothing 0.2 over 2 classes
    expected = q0 * math.log(q0 / p0) + q1 * math.log(q1 / (1 - p0))
    assert float(build_loss("kld", 2, smoothing=0.2)(logits, target)) == pytest.approx(expected, rel=1e-5)


def test_dice_by_hand(flat):
    # class 0: I = 0.5, sum p = 1.5, sum g = 1 → 0.4; class 1: I = 1, sum p = 1.5, sum g = 2 → 4/7
    expected = 1 - (0.4 + 4 / 7) / 2
    assert float(build_loss("dice", 2)(*flat)) == pytest.approx(expected, rel=1e-5)


def test_dice_class_weights(flat):
    expected = 1 - (1 * 0.4 + 3 * 4 / 7) / 4
    assert float(build_loss("dice", 2, class_weights=[1, 3])(*flat)) == pytest.approx(expected, rel=1e-5)


def test_tversky_by_hand(flat):
    # alpha weighs FP, beta FN. class 0: TP .5, FP 1, FN .5; class 1: TP 1, FP .5, FN 1
    ti0 = 0.5 / (0.5 + 0.3 * 1.0 + 0.7 * 0.5)
    ti1 = 1.0 / (1.0 + 0.3 * 0.5 + 0.7 * 1.0)
    loss = build_loss("tversky", 2, alpha=0.3, beta=0.7)(*flat)
    assert float(loss) == pytest.approx(1 - (ti0 + ti1) / 2, rel=1e-5)


def test_focal_by_hand():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, :, 0, 0] = torch.tensor([2.0, -1.0])
    logits[0, :, 0, 1] = torch.tensor([-5.0, 5.0])  # ignored
    target = torch.tensor([[[0, IGNORE]]])

    def term(pt: float) -> float:
        return -((1 - pt) ** 2) * math.log(pt)

    expected = (term(sig(2.0)) + term(sig(1.0))) / 2  # class 0 is true (p = σ(2)); class 1 false (1 − σ(−1))
    assert float(build_loss("focal", 2)(logits, target)) == pytest.approx(expected, rel=1e-5)


def test_dice_focal_is_the_sum(flat):
    total = build_loss("dice_focal", 2)(*flat)
    parts = build_loss("dice", 2)(*flat) + build_loss("focal", 2)(*flat)
    assert float(total) == pytest.approx(float(parts), rel=1e-6)


def test_bce_jaccard_by_hand(flat):
    # BCE of p = .5 is log 2 per class; Jaccard: class 0 I .5 U 2 → .25, class 1 I 1 U 2.5 → .4
    expected = math.log(2) + 1 - (0.25 + 0.4) / 2
    assert float(build_loss("bce_jaccard", 2)(*flat)) == pytest.approx(expected, rel=1e-5)


def test_lovasz_one_pixel_by_hand():
    # one labelled pixel: the Lovász extension of the Jaccard loss of the present class is 1 − p_true
    logits = torch.tensor([[0.3, -0.2, 0.1], [5.0, -5.0, 0.0]]).T.reshape(1, 3, 1, 2)
    target = torch.tensor([[[1, IGNORE]]])
    p = torch.softmax(torch.tensor([0.3, -0.2, 0.1]), 0)
    assert float(build_loss("lovasz", 3)(logits, target)) == pytest.approx(1 - float(p[1]), rel=1e-5)


def test_lovasz_refuses_class_weights():
    with pytest.raises(ConfigError, match="class_weights"):
        build_loss("lovasz", 4, class_weights=[1, 1, 1, 1])


@pytest.mark.parametrize("name", ["dice", "cce", "kld", "focal", "dice_focal", "bce_jaccard", "lovasz", "tversky"])
def test_every_loss_ignores_255_and_backpropagates(name):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8))
    target[:, :, 4:] = IGNORE
    loss_fn = build_loss(name, 4)
    base = loss_fn(logits, target)
    changed = logits.detach().clone()
    changed[:, :, :, 4:] = torch.randn(2, 4, 8, 4) * 10  # only ignored pixels change
    assert float(loss_fn(changed, target)) == pytest.approx(float(base.detach()), rel=1e-5, abs=1e-6)
    base.backward()
    assert logits.grad is not None and float(logits.grad[:, :, :, 4:].abs().sum()) == 0.0
    everything_ignored = loss_fn(logits.detach(), torch.full_like(target, IGNORE))
    assert float(everything_ignored) == 0.0


def test_wrong_number_of_class_weights():
    with pytest.raises(ConfigError, match="class_weights has 3 values but there are 4 classes"):
        build_loss("dice", 4, class_weights=[1, 1, 1])


def test_unknown_param_is_named():
    with pytest.raises(ConfigError, match="does not accept"):
        build_loss("dice", 4, gamma=3)
