"""Wrappers for segmentation-models-pytorch (smp) architectures, strictly offline.

smp's default ``encoder_weights="imagenet"`` downloads weights; here the encoder starts random
(``encoder_weights=None``) or from a local ``.pth`` / ``.safetensors`` file holding an encoder
state dict. A first-conv kernel trained on a different band count is adapted by cycling its input
channels and rescaling by ``old / new`` (the rule smp itself uses for non-RGB inputs).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from eoseg.errors import ConfigError
from eoseg.grid import MODEL_MULTIPLE
from eoseg.models.unet import check_input_size

log = logging.getLogger(__name__)

# eoseg name -> smp architecture key
ARCHS = {
    "smp-unet": "unet",
    "unetplusplus": "unetplusplus",
    "linknet": "linknet",
    "fpn": "fpn",
    "deeplabv3plus": "deeplabv3plus",
    "pspnet": "pspnet",
    "manet": "manet",
}
# PAN is left out: its pyramid-attention block halves the 1/16 feature map three more times, so it
# needs inputs that are multiples of 128 (a 64×64 or 96×96 tile fails inside smp).
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
_NOT_PARAMS = {"self", "in_channels", "classes", "activation", "aux_params", "kwargs"}


def smp_params(arch: str) -> dict[str, object]:
    """Parameters (with defaults) accepted for an smp architecture; ``encoder_weights`` defaults to None."""
    sig = inspect.signature(smp.MODEL_ARCHITECTURES_MAPPING[ARCHS[arch]].__init__)
    params = {k: p.default for k, p in sig.parameters.items() if k not in _NOT_PARAMS}
    params["encoder_weights"] = None
    return params


def _offline_error(value: object) -> ConfigError:
    return ConfigError(
        f"encoder_weights={value!r} names pretrained weights that smp would download, and eoseg never "
        "downloads (it runs offline)",
        path="encoder_weights",
        fix="pass encoder_weights=None, or the path of a local .pth or .safetensors file holding the "
        "encoder's state dict (e.g. saved once with torch.save(model.encoder.state_dict(), 'enc.pth'))",
    )


def resolve_weights_path(value: str | Path) -> Path:
    """A local encoder-weights file, or ConfigError for names ('imagenet') and missing files."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    text = str(value)
    if path.suffix.lower() in WEIGHT_SUFFIXES or "/" in text or "\\" in text:
        raise ConfigError("encoder weights file not found", path=text,
                          fix="give the path of an existing .pth or .safetensors file")
    raise _offline_error(value)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict from .safetensors or a torch file (weights only)."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise ConfigError(f"cannot read encoder weights ({exc.__class__.__name__}: {exc})", path=path,
                          fix="give a file saved with torch.save(state_dict) or safetensors") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("encoder weights file does not hold a state dict of tensors", path=path,
                          fix="save the encoder with torch.save(model.encoder.state_dict(), path)")
    return _strip_prefix(state, "encoder.")


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def adapt_in_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Cycle a conv kernel's input channels to ``in_channels``, rescaled by old/new."""
    old = weight.shape[1]
    idx = torch.arange(in_channels) % old
    return weight[:, idx] * (old / in_channels)


def _fit_shapes(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], path: Path) -> dict:
    fitted = {}
    for key, value in state.items():
        want = target.get(key)
        if want is None or value.shape == want.shape:
            fitted[key] = value
        elif value.ndim == 4 and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]:
            log.info("%s: adapting %s from %d to %d input channels", path, key, value.shape[1], want.shape[1])
            fitted[key] = adapt_in_channels(value, want.shape[1])
        else:
            log.warning("%s: skipping %s (shape %s, encoder wants %s)", path, key,
                        tuple(value.shape), tuple(want.shape))
    return fitted


def load_encoder_weights(encoder: nn.Module, value: str | Path) -> None:
    """Load a local encoder state dict (strict=False; missing / unexpected keys are logged)."""
    path = resolve_weights_path(value)
    target = encoder.state_dict()
    state = _fit_shapes(read_state_dict(path), target, path)
    unexpected = sorted(set(state) - set(target))
    missing = sorted(set(target) - set(state))
    # nn.Module's loader, not the encoder's override (some smp encoders force strict or return None)
    nn.Module.load_state_dict(encoder, {k: v for k, v in state.items() if k in target}, strict=False)
    if missing:
        log.warning("%s: %d encoder keys not in the file, left random: %s", path, len(missing),
                    ", ".join(missing[:8]))
    if unexpected:
        log.warning("%s: %d keys in the file not used by the encoder: %s", path, len(unexpected),
                    ", ".join(unexpected[:8]))


def _create(arch: str, in_channels: int, num_classes: int, encoder_name: str, **params) -> nn.Module:
    try:
        return smp.create_model(ARCHS[arch], encoder_name=encoder_name, encoder_weights=None,
                                in_channels=in_channels, classes=num_classes, **params)
    except KeyError as exc:
        if "encoder" not in str(exc):
            raise
        raise ConfigError(f"unknown encoder {encoder_name!r}", path="encoder_name",
                          fix="choose one of segmentation_models_pytorch.encoders.get_encoder_names() "
                          "(e.g. resnet18, resnet34, efficientnet-b0, mobilenet_v2) or a 'tu-' timm name") from None


class SmpSegmenter(nn.Module):
    """An smp model behind eoseg's input check; ``self.model`` is the smp module."""

    input_multiple = MODEL_MULTIPLE

    def __init__(self, arch: str, in_channels: int, num_classes: int, encoder_name: str = "resnet34",
                 encoder_weights: str | Path | None = None, **params):
        super().__init__()
        if encoder_weights is not None:
            resolve_weights_path(encoder_weights)  # refuse 'imagenet' before building anything
        self.arch = arch
        self.model = _create(arch, in_channels, num_classes, encoder_name, **params)
        if encoder_weights is not None:
            load_encoder_weights(self.model.encoder, encoder_weights)

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.input_multiple, self.arch)
        return self.model(x)
