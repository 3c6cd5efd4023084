"""Learning-rate schedules at chosen epochs."""

import pytest
import torch

from eoseg.config import ScheduleConfig
from eoseg.schedule import EpochScheduler, gym_lr

GYM = {"start_lr": 1e-7, "max_lr": 1e-4, "min_lr": 1e-7, "rampup_epochs": 20, "sustain_epochs": 5, "exp_decay": 0.9}


@pytest.mark.parametrize(("epoch", "expected"), [
    (0, 1e-7),
    (10, 1e-7 + (1e-4 - 1e-7) * 10 / 20),  # half-way up the ramp
    (19, 1e-7 + (1e-4 - 1e-7) * 19 / 20),
    (20, 1e-4),  # sustain
    (24, 1e-4),
    (25, 1e-4),  # decay^0: max
    (26, (1e-4 - 1e-7) * 0.9 + 1e-7),
    (35, (1e-4 - 1e-7) * 0.9**10 + 1e-7),
])
def test_gym_lr_values(epoch, expected):
    assert gym_lr(epoch, **GYM) == pytest.approx(expected, rel=1e-12)


def _opt(lr: float = 1e-4, encoder_factor: float | None = None) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr}]
    if encoder_factor:
        groups.append({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr * encoder_factor})
    return torch.optim.Adam(groups, lr=lr)


def test_ramp_scheduler_follows_gym_per_epoch_and_keeps_group_ratio():
    opt = _opt(1e-4, encoder_factor=0.1)
    sched = EpochScheduler(opt, ScheduleConfig(name="ramp", **GYM), epochs=40)
    for epoch in range(40):
        assert sched.lr == pytest.approx(gym_lr(epoch, **GYM), rel=1e-9)
        assert opt.param_groups[1]["lr"] == pytest.approx(0.1 * gym_lr(epoch, **GYM), rel=1e-9)
        opt.step()
        sched.step(0.5)


def test_cosine_and_plateau():
    opt = _opt(1e-3)
    sched = EpochScheduler(opt, ScheduleConfig(name="cosine", min_lr=0.0), epochs=10)
    lrs = []
    for _ in range(11):
        lrs.append(sched.lr)
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs[5] == pytest.approx(5e-4) and lrs[10] == pytest.approx(0, abs=1e-12)

    opt = _opt(1e-3)
    sched = EpochScheduler(opt, ScheduleConfig(name="plateau", factor=0.5, patience=1), epochs=10, monitor_mode="max")
    for metric in (0.5, 0.6, 0.6, 0.6):  # improves once, then two flat epochs > patience 1
        opt.step()
        sched.step(metric)
    assert sched.lr == pytest.approx(5e-4)


def test_constant():
    opt = _opt(3e-4)
    sched = EpochScheduler(opt, ScheduleConfig(name="constant"), epochs=5)
    for _ in range(5):
        opt.step()
        sched.step(0.1)
    assert sched.lr == pytest.approx(3e-4)
