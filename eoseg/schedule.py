"""Learning-rate schedules, stepped once per epoch.

``ramp`` is Segmentation Gym's schedule (its ``lrfn`` in train_model.py): a linear ramp from
``start_lr`` to ``max_lr`` over ``rampup_epochs``, ``max_lr`` held for ``sustain_epochs``, then an
exponential decay towards ``min_lr``:

    lr(e) = start + (max − start) · e / rampup                 for e < rampup
          = max                                              for e < rampup + sustain
          = (max − min) · decay^(e − rampup − sustain) + min  otherwise

Epochs count from 0, and epoch ``e`` trains with ``lr(e)`` (as Keras' LearningRateScheduler does).
Parameter groups keep their ratio to the base rate (an encoder trained at ``lr × factor`` stays so).
"""

from __future__ import annotations

from torch import optim

from eoseg.config import ScheduleConfig


def gym_lr(epoch: int, start_lr: float, max_lr: float, min_lr: float, rampup_epochs: int,
           sustain_epochs: int, exp_decay: float) -> float:
    if epoch < rampup_epochs:
        return start_lr + (max_lr - start_lr) * epoch / rampup_epochs
    if epoch < rampup_epochs + sustain_epochs:
        return max_lr
    return (max_lr - min_lr) * exp_decay ** (epoch - rampup_epochs - sustain_epochs) + min_lr


def base_lr(cfg: ScheduleConfig, optimizer_lr: float) -> float:
    """The rate that parameter groups are built with: ``max_lr`` for ``ramp``, else the optimizer's lr."""
    return cfg.max_lr if cfg.name == "ramp" else optimizer_lr


class EpochScheduler:
    """One ``step(metric)`` per finished epoch; ``lr`` is the rate of the first (base) group."""

    def __init__(self, optimizer: optim.Optimizer, cfg: ScheduleConfig, epochs: int, monitor_mode: str = "max"):
        self.cfg = cfg
        self.optimizer = optimizer
        self._torch = self._build(optimizer, cfg, epochs, monitor_mode)

    @staticmethod
    def _build(opt: optim.Optimizer, cfg: ScheduleConfig, epochs: int, mode: str):
        if cfg.name == "ramp":
            def factor(epoch: int) -> float:
                return gym_lr(epoch, cfg.start_lr, cfg.max_lr, cfg.min_lr, cfg.rampup_epochs,
                              cfg.sustain_epochs, cfg.exp_decay) / cfg.max_lr
            return optim.lr_scheduler.LambdaLR(opt, factor)
        if cfg.name == "cosine":
            return optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs), eta_min=cfg.min_lr)
        if cfg.name == "plateau":
            return optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=cfg.factor, patience=cfg.patience,
                                                        min_lr=cfg.min_lr)
        return None

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, metric: float | None = None) -> None:
        if self._torch is None:
            return
        if isinstance(self._torch, optim.lr_scheduler.ReduceLROnPlateau):
            if metric is not None:
                self._torch.step(metric)
        else:
            self._torch.step()

    def state_dict(self) -> dict:
        return {} if self._torch is None else self._torch.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self._torch is not None and state:
            self._torch.load_state_dict(state)
