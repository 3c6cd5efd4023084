"""The model registry: architectures by name → ``nn.Module``.

Every model maps ``(N, in_channels, H, W)`` to ``(N, num_classes, H, W)`` logits (no softmax) and
raises :class:`~eoseg.errors.TileSizeError` unless H and W are multiples of :func:`input_multiple`.
Modules are imported on first build, so listing names stays cheap (no torch / smp import).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eoseg.errors import ConfigError, ModelNotFoundError
from eoseg.grid import MODEL_MULTIPLE

if TYPE_CHECKING:
    from torch import nn

_GYM_SKIP = {"self", "in_channels", "num_classes"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    target: str  # "module:Class"
    input_multiple: int
    fixed: dict = field(default_factory=dict)  # constructor kwargs set by the registry

    def factory(self) -> type:
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)


def _smp(name: str, what: str) -> ModelSpec:
    desc = f"segmentation-models-pytorch {what} on any smp encoder (default resnet34, random init)"
    return ModelSpec(name, desc, "eoseg.models.smp:SmpSegmenter", MODEL_MULTIPLE, {"arch": name})


_REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("resunet", "Segmentation Gym residual U-Net (f=8, 7×7 kernels, 4 strided levels)",
                  "eoseg.models.resunet:ResUNet", 16),
        ModelSpec("unet", "Segmentation Gym U-Net with double-conv blocks (f=8, 7×7 kernels)",
                  "eoseg.models.unet:UNet", 16),
        _smp("smp-unet", "U-Net"),
        _smp("unetplusplus", "U-Net++"),
        _smp("linknet", "LinkNet"),
        _smp("fpn", "FPN"),
        _smp("deeplabv3plus", "DeepLabV3+"),
        _smp("pspnet", "PSPNet"),
        _smp("manet", "MA-Net"),
        ModelSpec("ensemble", "the mean class probabilities of several trained models of one architecture "
                  "(eoseg ensemble)", "eoseg.models.ensemble:Ensemble", MODEL_MULTIPLE),
    )
}


def available_models() -> list[str]:
    """Registered architecture names."""
    return list(_REGISTRY)


def describe_models() -> list[tuple[str, str]]:
    """``(name, one-line description)`` for every architecture."""
    return [(s.name, s.description) for s in _REGISTRY.values()]


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; ModelNotFoundError lists the valid names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ModelNotFoundError(f"unknown model {name!r}", path=str(name),
                                 fix=f"choose one of: {', '.join(_REGISTRY)}") from None


def input_multiple(name: str) -> int:
    """H and W fed to the model must be multiples of this."""
    return get_spec(name).input_multiple


def model_parameters(name: str) -> dict[str, object]:
    """Parameters accepted by ``build_model(name, ...)`` with their defaults."""
    spec = get_spec(name)
    if spec.fixed.get("arch"):
        from eoseg.models.smp import smp_params

        return smp_params(spec.fixed["arch"])
    sig = inspect.signature(spec.factory().__init__)
    return {k: p.default for k, p in sig.parameters.items() if k not in _GYM_SKIP}


def _check_params(name: str, params: dict) -> None:
    valid = model_parameters(name)
    for key in params:
        if key not in valid:
            raise ConfigError(f"unknown parameter {key!r} for model {name!r}", path=key,
                              fix=f"valid parameters: {', '.join(valid)}")


def build_model(name: str, in_channels: int, num_classes: int, **params) -> nn.Module:
    """A freshly initialised model (train mode) of architecture ``name``."""
    spec = get_spec(name)
    for label, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"invalid {label}={value!r}", path=label, fix="use a positive integer")
    _check_params(name, params)
    return spec.factory()(**spec.fixed, in_channels=in_channels, num_classes=num_classes, **params)


__all__ = ["ModelSpec", "available_models", "build_model", "describe_models", "get_spec", "input_multiple",
           "model_parameters"]
