"""Pydantic models for the ``eoseg dataset`` and ``eoseg train`` YAML configs.

Every model forbids unknown keys, so a typo is named in the error. :func:`load_config` reads a YAML
file, applies ``--set key=value`` overrides (dotted keys, YAML-parsed values) and validates; every
problem becomes one :class:`eoseg.errors.ConfigError` that names the key and the file. Relative paths
in a config resolve against the working directory (run ``eoseg`` from the repository root for the
presets in ``configs/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator, model_validator

from eoseg.classes import NODATA_CLASS
from eoseg.errors import ConfigError
from eoseg.standardize import Mode

T = TypeVar("T", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# ------------------------------------------------------------------------------------------- dataset


class BandFolder(_Strict):
    """A folder of images that contributes ``roles`` bands, matched to labels by file stem."""

    folder: Path
    roles: list[str] = Field(min_length=1)
    # (old, new) substitutions turning this folder's file stems into the label stems, e.g. ["_ir-", "-"]
    stem_replace: list[tuple[str, str]] = Field(default_factory=list)


class FolderSource(_Strict):
    """Segmentation Gym / Doodler layout: image folders and a label folder, matched by file stem."""

    kind: Literal["folder"]
    labels: Path
    bands: list[BandFolder] = Field(min_length=1)
    label_stem_replace: list[tuple[str, str]] = Field(default_factory=list)


class SceneSource(_Strict):
    """A GeoTIFF scene with a label raster on its grid, or label polygons with a class field."""

    kind: Literal["scene"]
    scene: Path
    roles: list[str] = Field(min_length=1)
    bands: list[int] | None = None  # 1-based scene band indexes in role order (default: mapped as predict maps)
    labels: Path
    class_field: str = "class"  # for vector labels
    name: str | None = None
    scale: float | list[float] | None = None  # reflectance = value × scale + offset (default: from metadata)
    offset: float | list[float] | None = None

    @model_validator(mode="after")
    def _bands_match_roles(self) -> SceneSource:
        if self.bands is not None and len(self.bands) != len(self.roles):
            raise ValueError(f"bands has {len(self.bands)} entries but roles has {len(self.roles)}")
        return self


class SplitConfig(_Strict):
    train: float = Field(0.7, ge=0, le=1)
    validation: float = Field(0.15, ge=0, le=1)
    test: float = Field(0.15, ge=0, le=1)
    seed: int = 0
    group_by: Literal["scene", "date", "pattern"] = "date"
    group_pattern: str = r"^(\d{8})"  # group 1 (or the whole match) is the group key

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1 (got {total:g})")
        return self


class DatasetConfig(_Strict):
    sources: list[Annotated[FolderSource | SceneSource, Field(discriminator="kind")]] = Field(min_length=1)
    out: Path | None = None
    tile_size: int = 96
    overlap: int = 0
    remap: dict[int, int] = Field(default_factory=dict)
    ignore_value: int = NODATA_CLASS
    classes: dict[str, Any] | None = None  # a ClassScheme.to_dict(); default the coastal scheme
    min_labelled_fraction: float = Field(0.0, ge=0, le=1)  # tiles with no more labelled pixels are dropped
    split: SplitConfig = Field(default_factory=SplitConfig)


# ------------------------------------------------------------------------------------------- training


class ModelConfig(_Strict):
    name: str = "resunet"
    params: dict[str, Any] = Field(default_factory=dict)  # forwarded to eoseg.models.build_model
    freeze_encoder: bool = False
    encoder_lr_factor: float = Field(1.0, gt=0)  # encoder learning rate = lr × this


class LossConfig(_Strict):
    name: str = "dice"
    class_weights: list[float] | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class OptimizerConfig(_Strict):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class ScheduleConfig(_Strict):
    """``ramp``: Gym's ramp → sustain → exponential decay; ``plateau``; ``cosine``; ``constant``."""

    name: Literal["ramp", "plateau", "cosine", "constant"] = "constant"
    start_lr: float = 1e-7
    max_lr: float = 1e-4
    min_lr: float = 1e-7
    rampup_epochs: int = Field(20, ge=0)
    sustain_epochs: int = Field(0, ge=0)
    exp_decay: float = Field(0.9, gt=0, le=1)
    factor: float = Field(0.5, gt=0, lt=1)  # plateau
    patience: int = Field(5, ge=0)  # plateau


class AugmentConfig(_Strict):
    """Online augmentation; geometric ones are applied identically to image and label."""

    enabled: bool = True
    hflip: bool = True
    vflip: bool = False
    rot90: bool = False
    rotation: float = Field(5.0, ge=0, le=180)  # degrees, ± (Gym: AUG_ROT)
    shift: float = Field(0.05, ge=0, lt=1)  # fraction of size, ± (Gym: AUG_WIDTHSHIFT / AUG_HEIGHTSHIFT)
    zoom: float = Field(0.05, ge=0, lt=1)  # ± fraction (Gym: AUG_ZOOM)
    # one reflectance factor for all bands, log-uniform in [1 / (1 + gain), 1 + gain]: the albedo of the sediment
    # (dark sand and gravel vs quartz sand) and of the illumination; needs reflectance or fixed standardization
    gain: float = Field(0.0, ge=0, le=3)
    # the label classes whose pixels the gain applies to (edges blended over 3 px); empty: the whole sample
    gain_classes: list[int] = Field(default_factory=list)
    brightness: float = Field(0.0, ge=0)  # ± shift in standardized units
    contrast: float = Field(0.0, ge=0, lt=1)  # ± relative
    per_band: bool = False  # brightness / contrast drawn for each band on its own
    # sensor and scene differences: coarser pixels (a tile blurred by a random factor in [1, 1 + resolution],
    # e.g. 2 turns 10 m Sentinel-2 into 30 m Landsat), and haze (a random shift in [0, haze] standardized units,
    # largest in the first band and falling linearly to a fifth of it in the last: bands in wavelength order)
    resolution: float = Field(0.0, ge=0, le=7)
    # the share of samples coarsened: the rest keep their native pixels, so the model also learns the sharp
    # boundaries (thin beaches) of imagery at its own resolution
    resolution_fraction: float = Field(1.0, ge=0, le=1)
    haze: float = Field(0.0, ge=0)


class EarlyStopConfig(_Strict):
    monitor: str = "val_miou"
    mode: Literal["max", "min"] | None = None  # default: min for *loss, else max
    patience: int = Field(10, ge=1)

    @property
    def resolved_mode(self) -> str:
        return self.mode or ("min" if self.monitor.endswith("loss") else "max")


class BundleConfig(_Strict):
    name: str = "model"
    directory: Path | None = None  # default <out>/bundle
    description: str = ""
    overwrite: bool = False
    tile_size: int | None = None  # predict default recorded in the card (default: the dataset's tile size)
    overlap: int | None = None  # default: tile_size // 8
    # ground sample distances (m) the model is meant for, [finest, coarsest], e.g. [10, 30]: shown by `eoseg models`
    resolution_m: tuple[PositiveFloat, PositiveFloat] | None = None

    @field_validator("resolution_m")
    @classmethod
    def _ordered_resolution(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and v[0] > v[1]:
            raise ValueError(f"resolution_m is [finest, coarsest] metres; {v[0]:g} is coarser than {v[1]:g}")
        return v


class TrainConfig(_Strict):
    data: Path
    out: Path = Path("runs/run")
    bands: list[str] | None = None  # band roles fed to the model, in order (default: all in the dataset)
    standardization: Mode = "scene"
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    early_stopping: EarlyStopConfig = Field(default_factory=EarlyStopConfig)
    bundle: BundleConfig = Field(default_factory=BundleConfig)
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)
    # an exponential moving average of the weights and BatchNorm statistics, updated after every optimizer step
    # with this decay (0.99: about the last 100 steps); validation, early stopping and the bundle use the
    # average instead of the last step's weights. 0: off
    ema: float = Field(0.0, ge=0, lt=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    resume: Path | None = None
    progress: bool = True
    overwrite: bool = False

    @field_validator("bands")
    @classmethod
    def _unique_bands(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"band roles repeat: {v}")
        return v


# ------------------------------------------------------------------------------------------- loading


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["a.b=1", "c=[x, y]"]`` → nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r} is not key=value", path="--set", fix="write e.g. --set epochs=5")
        key, _, raw = pair.partition("=")
        value = yaml.safe_load(raw) if raw.strip() else None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {pair!r} conflicts with another --set", path="--set", fix="set it once")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base``."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path=path, fix="give the path of a YAML config, e.g. configs/")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"is not valid YAML ({str(exc).splitlines()[0]})", path=path,
                          fix="fix the YAML syntax") from exc
    if not isinstance(data, dict):
        raise ConfigError("must be a mapping of keys to values", path=path, fix="write key: value pairs")
    return data


def validate(model: type[T], data: dict[str, Any], source: str | Path | None = None) -> T:
    """Validate ``data`` as ``model``; the first problem becomes a ConfigError naming the key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc), path=source or model.__name__, fix=_fix_for(exc)) from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"] if p not in ("folder", "scene") or p == err["loc"][-1])
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        elif err["type"] == "missing":
            problems.append(f"missing key {key!r}")
        else:
            problems.append(f"{key or 'config'}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(dict.fromkeys(problems))


def _fix_for(exc: ValidationError) -> str:
    if any(e["type"] == "extra_forbidden" for e in exc.errors()):
        return "check the spelling against the documented keys (see configs/ for examples)"
    return "correct the value"


def load_config(model: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                extra: dict[str, Any] | None = None) -> T:
    """Read YAML ``path`` (optional), merge ``extra`` then ``--set`` overrides, and validate."""
    data = read_yaml(path) if path is not None else {}
    if extra:
        data = merge(data, extra)
    data = merge(data, parse_overrides(list(overrides)))
    return validate(model, data, path)


def dump_config(config: BaseModel) -> dict[str, Any]:
    """A plain, YAML-safe dict of every resolved value."""
    return config.model_dump(mode="json")
