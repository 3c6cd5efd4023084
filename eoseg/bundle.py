"""Model bundles: a directory holding ``model.safetensors`` (the state dict) and ``card.json``.

The card says everything needed to use the weights: architecture and its parameters, band roles
in input order, standardization, class scheme, tile defaults, training provenance and metrics, and the
sha256 of the weights file it was written with (``weights_sha256``, checked at load, so a card never
describes other weights than its own). Weights are stored as they are in the model (float32), so the
card's metrics hold for the stored weights.
:func:`load_bundle` rebuilds the model through the registry and loads the weights strictly. CPU
bundles are cached per (directory, file stamps), so repeated loads in a worker are free; bundles on
other devices (CUDA) are copies of the cached CPU model held only as long as their user keeps them.
Packaged bundles live in ``eoseg/weights/<name>/``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import secrets
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eoseg.checksums import file_sha256
from eoseg.classes import COASTAL, ClassScheme
from eoseg.errors import BundleError, ConfigError, EosegError, ModelNotFoundError, OutputError, OutputExistsError

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CARD_FILE = "card.json"
DEFAULT_MODEL = "resunet"  # the packaged bundle `eoseg predict` uses without --model
REQUIRED_KEYS = ("name", "arch", "bands")
_CARD_TYPES = {
    "name": str, "arch": str, "arch_params": dict, "standardization": dict, "classes": dict,
    "tile_size": int, "overlap": int, "training": dict, "metrics": dict, "description": str,
    "eoseg_version": str, "created": str, "weights_sha256": str,
}
_OPTIONAL_KEYS = {"weights_sha256"}  # may be null (bundles written before it existed)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _version() -> str:
    from eoseg import __version__

    return __version__


def _default_standardization() -> dict:
    return {"mode": "scene", "mean": None, "std": None}


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """What a bundle's weights are and how to feed them."""

    name: str
    arch: str
    bands: tuple[str, ...]
    arch_params: dict = field(default_factory=dict)
    standardization: dict = field(default_factory=_default_standardization)
    classes: dict = field(default_factory=COASTAL.to_dict)
    tile_size: int = 512
    overlap: int = 64
    resolution_m: tuple[float, float] | None = None  # ground sample distances (m) the model was trained for
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    description: str = ""
    eoseg_version: str = field(default_factory=_version)
    created: str = field(default_factory=_now)
    weights_sha256: str | None = None  # set by save_bundle(); load_bundle() refuses weights that differ

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", tuple(self.bands))
        if self.resolution_m is not None:
            object.__setattr__(self, "resolution_m", tuple(float(v) for v in self.resolution_m))

    @property
    def scheme(self) -> ClassScheme:
        return ClassScheme.from_dict(self.classes)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["bands"] = list(self.bands)
        if self.resolution_m is not None:
            data["resolution_m"] = list(self.resolution_m)
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str | os.PathLike | None = None) -> ModelCard:
        """Build a card; unknown keys are logged and ignored, missing required keys raise BundleError."""
        if not isinstance(data, dict):
            raise BundleError("card is not a JSON object", path=source, fix="write the card with save_bundle()")
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            log.warning("%s: ignoring unknown card keys: %s", source or "card", ", ".join(extra))
        for key in REQUIRED_KEYS:
            if key not in data:
                raise BundleError(f"card is missing the required key {key!r}", path=source,
                                  fix=f"add {key!r} to the card (required: {', '.join(REQUIRED_KEYS)})")
        values = {k: v for k, v in data.items() if k in known}
        _check_card_values(values, source)
        return cls(**values)


def _check_card_values(values: dict, source: str | os.PathLike | None) -> None:
    for key, kind in _CARD_TYPES.items():
        value = values.get(key)
        if key in _OPTIONAL_KEYS and value is None:
            continue
        if key in values and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise BundleError(f"card key {key!r} should be {kind.__name__}, got {value!r}", path=source,
                              fix="correct the card or re-save the bundle")
    bands = values["bands"]
    if not isinstance(bands, list | tuple) or not bands or not all(isinstance(b, str) for b in bands):
        raise BundleError(f"card key 'bands' should be a non-empty list of band roles, got {bands!r}",
                          path=source, fix='use e.g. ["red", "green", "blue"]')
    _check_resolution(values.get("resolution_m"), source)
    if "classes" in values:
        try:
            ClassScheme.from_dict(values["classes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"card key 'classes' is not a class scheme ({exc!r})", path=source,
                              fix="use eoseg.classes.ClassScheme.to_dict()") from None


def _check_resolution(value: Any, source: str | os.PathLike | None) -> None:
    if value is None:
        return
    numbers = isinstance(value, list | tuple) and len(value) == 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value)
    if not numbers or value[0] > value[1]:
        raise BundleError(f"card key 'resolution_m' should be [finest, coarsest] metres, got {value!r}",
                          path=source, fix="use e.g. [10, 30], or drop the key")


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read ``card.json`` (no torch import)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BundleError(f"cannot read the card ({exc.strerror or exc})", path=path,
                          fix="check the bundle directory holds card.json") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"card is not valid JSON ({exc.msg} at line {exc.lineno})", path=path,
                          fix="restore card.json or re-save the bundle with save_bundle()") from None
    return ModelCard.from_dict(data, source=path)


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """A loaded bundle; ``model`` is in eval mode and shared by the cache: copy it before training."""

    card: ModelCard
    model: nn.Module
    path: Path | None
    sha256: str

    @property
    def scheme(self) -> ClassScheme:
        return self.card.scheme

    @property
    def bands(self) -> tuple[str, ...]:
        return self.card.bands

    @property
    def input_multiple(self) -> int:
        from eoseg.models import input_multiple

        return input_multiple(self.card.arch)


# ---------------------------------------------------------------- locating bundles


def weights_dir() -> Path:
    """The directory of packaged bundles (``eoseg/weights``)."""
    return Path(str(resources.files("eoseg").joinpath("weights")))


def packaged_bundles() -> list[str]:
    """Names of the bundles shipped in ``eoseg/weights/``."""
    root = weights_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CARD_FILE).is_file())


def _not_found(name_or_path: str | os.PathLike) -> ModelNotFoundError:
    names = packaged_bundles()
    choices = f"packaged bundles: {', '.join(names)}" if names else "no bundles are packaged"
    return ModelNotFoundError("no model bundle with this name or path", path=name_or_path,
                              fix=f"pass a bundle directory or its card.json ({choices})")


def resolve_bundle(name_or_path: str | os.PathLike) -> Path:
    """The bundle directory for a packaged name, a directory or a file inside one (card.json)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        path = path.parent
    elif not path.is_dir():
        packaged = weights_dir() / str(name_or_path)
        if os.sep in str(name_or_path) or "/" in str(name_or_path) or not packaged.is_dir():
            raise _not_found(name_or_path)
        path = packaged
    for fname in (CARD_FILE, MODEL_FILE):
        if not (path / fname).is_file():
            raise BundleError(f"bundle is missing {fname}", path=path,
                              fix=f"a bundle directory holds {MODEL_FILE} and {CARD_FILE} as written by save_bundle()")
    return path.resolve()


# ---------------------------------------------------------------- loading


def _digests(directory: Path) -> tuple[str, str]:
    """(sha256 of the weights file, :func:`bundle_sha256`) in one pass over the weights."""
    weights, bundle = hashlib.sha256(), hashlib.sha256()
    with open(directory / MODEL_FILE, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            weights.update(chunk)
            bundle.update(chunk)
    bundle.update((directory / CARD_FILE).read_bytes())
    return weights.hexdigest(), bundle.hexdigest()


def bundle_sha256(directory: str | os.PathLike) -> str:
    """sha256 over the safetensors bytes then the card bytes."""
    return _digests(Path(directory))[1]


def build_from_card(card: ModelCard, source: str | os.PathLike | None = None) -> nn.Module:
    """A fresh model of the card's architecture (``encoder_weights`` dropped: the bundle holds them)."""
    from eoseg.models import build_model

    params = {k: v for k, v in card.arch_params.items() if k != "encoder_weights"}
    try:
        return build_model(card.arch, in_channels=len(card.bands), num_classes=len(card.scheme), **params)
    except EosegError as exc:
        raise BundleError(f"cannot build the card's model {card.arch!r}: {exc.problem}", path=source,
                          fix=exc.fix) from None


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...
        raise BundleError(f"weights cannot be read ({exc})", path=path,
                          fix="restore model.safetensors or re-save the bundle") from None


def _load_strict(model: nn.Module, state: dict, source: str | os.PathLike) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3])[:300]
        raise BundleError(f"weights do not match the card's architecture ({detail})", path=source,
                          fix="check arch, arch_params, bands and classes in card.json") from None


def _torch_device(device: str | torch.device) -> torch.device:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}", path="device", fix="use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA is not available", path="device", fix="use device='cpu'")
    return dev


def _check_weights_match(card: ModelCard, weights_sha: str, directory: Path) -> None:
    if card.weights_sha256 is not None and card.weights_sha256 != weights_sha:
        raise BundleError(
            f"{MODEL_FILE} is not the file this card was written with (sha256 {weights_sha[:12]}…, the card says "
            f"{card.weights_sha256[:12]}…): a save was interrupted or one file was replaced", path=directory,
            fix="re-save the bundle with save_bundle() (eoseg train), or restore both files together")


@functools.lru_cache(maxsize=16)
def _load_cpu(directory: str, stamp: tuple) -> ModelBundle:
    path = Path(directory)
    card = read_card(path / CARD_FILE)
    weights_sha, sha = _digests(path)
    _check_weights_match(card, weights_sha, path)
    model = build_from_card(card, path / CARD_FILE)
    _load_strict(model, _read_state(path / MODEL_FILE), path / MODEL_FILE)
    model.eval()
    return ModelBundle(card=card, model=model, path=path, sha256=sha)


# Bundles on other devices than the CPU are held only while someone uses them: a cache must not keep
# GPU memory alive after the Predictor that asked for it is gone.
_DEVICE_BUNDLES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_DEVICE_LOCK = threading.Lock()


def _load_on_device(directory: str, device: str, stamp: tuple) -> ModelBundle:
    key = (directory, device, stamp)
    with _DEVICE_LOCK:
        bundle = _DEVICE_BUNDLES.get(key)
        if bundle is None:
            cpu = _load_cpu(directory, stamp)
            bundle = replace(cpu, model=copy.deepcopy(cpu.model).to(device).eval())
            _DEVICE_BUNDLES[key] = bundle
        return bundle


def clear_bundle_cache() -> None:
    """Forget every cached bundle (the CPU cache; device copies go when their last user drops them)."""
    _load_cpu.cache_clear()


def _stamp(directory: Path) -> tuple:
    stats = [(directory / f).stat() for f in (MODEL_FILE, CARD_FILE)]
    return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)


def load_bundle(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> ModelBundle:
    """Load a packaged bundle by name, a bundle directory, or its card.json (model in eval mode).

    CPU bundles are cached and shared (copy the model before training it); on other devices each call
    returns the same copy while it is in use, and nothing is kept once it is no longer referenced.
    """
    directory = resolve_bundle(name_or_path)
    dev = _torch_device(device)
    if dev.type == "cpu":
        return _load_cpu(str(directory), _stamp(directory))
    return _load_on_device(str(directory), str(dev), _stamp(directory))


# ---------------------------------------------------------------- saving


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy / torch arrays and scalars
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def card_json(card: ModelCard) -> str:
    try:
        return json.dumps(card.to_dict(), indent=2, default=_json_default, allow_nan=True) + "\n"
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"card cannot be written as JSON ({exc})", path=card.name,
                          fix="keep card values to str, numbers, lists and dicts") from None


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict on the CPU. A float32 tensor is stored as float16 only when that is exact (every value
    survives the round trip, e.g. weights that came from a float16 file): half the file, bit-identical model.
    Anything else stays float32 (a float16 copy would underflow small BatchNorm running variances)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    return {key: _compact(value.detach().to("cpu", copy=True).contiguous())
            for key, value in model.state_dict().items()}


def _compact(value: torch.Tensor) -> torch.Tensor:
    import torch

    if value.dtype != torch.float32 or not value.numel():
        return value
    half = value.half()
    return half if torch.equal(half.float(), value) else value


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # directories cannot be fsync'ed on some platforms
        pass
    finally:
        os.close(fd)


def _write_temp(directory: Path, fname: str, write: Callable[[str], object]) -> Path:
    """Write through ``write(path)`` to a hidden temporary name in ``directory``, flushed to disk."""
    tmp = directory / f".{fname}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        write(str(tmp))
        os.chmod(tmp, 0o644)  # safetensors creates 0600 files; bundles are meant to be shared
        _fsync(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _keep_old(path: Path) -> Path | None:
    """A hard link (or copy) of ``path`` under a temporary name, to restore it if the save fails."""
    if not path.exists():
        return None
    backup = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.old")
    try:
        os.link(path, backup)
    except OSError:
        import shutil

        shutil.copy2(path, backup)
    return backup


def _commit(directory: Path, weights_tmp: Path, card_tmp: Path) -> None:
    """Rename the new weights, then the new card, into place; if the card's rename fails the old weights
    are put back (or the new ones removed), so the directory never holds new weights with an old card."""
    weights, card = directory / MODEL_FILE, directory / CARD_FILE
    backup = _keep_old(weights)
    try:
        os.replace(weights_tmp, weights)
        try:
            os.replace(card_tmp, card)
        except BaseException:
            if backup is not None:
                os.replace(backup, weights)
            else:
                weights.unlink(missing_ok=True)
            raise
        _fsync(directory)
    finally:
        if backup is not None:
            backup.unlink(missing_ok=True)


def refuse_existing_bundle(directory: Path, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` where ``directory`` already holds a bundle and ``overwrite`` is off."""
    if not overwrite and any((directory / f).exists() for f in (MODEL_FILE, CARD_FILE)):
        raise OutputExistsError("a model bundle already exists here", path=directory,
                                fix="pass overwrite=True (--overwrite) or choose another directory")


def save_bundle(model: nn.Module, card: ModelCard, directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``model.safetensors`` and ``card.json`` into ``directory``.

    Both are written under temporary names and flushed, then renamed weights first, card last; the card
    records the weights' sha256, which :func:`load_bundle` checks, so an interrupted save is refused at
    load instead of pairing new weights with an old card.
    """
    from safetensors.torch import save_file

    directory = Path(directory).expanduser()
    refuse_existing_bundle(directory, overwrite)
    state = _cpu_state(model)
    _load_strict(build_from_card(card, directory), state, directory)  # would it load back?
    card_json(card)  # fails early (before anything is written) when the card cannot be JSON
    tmps: list[Path] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmps.append(_write_temp(directory, MODEL_FILE, lambda p: save_file(state, p, metadata={"arch": card.arch})))
        text = card_json(replace(card, weights_sha256=file_sha256(tmps[0])))
        tmps.append(_write_temp(directory, CARD_FILE, lambda p: Path(p).write_text(text, encoding="utf-8")))
        _commit(directory, *tmps)
    except OSError as exc:
        raise OutputError(f"cannot write the bundle ({exc.strerror or exc})", path=directory,
                          fix="check the directory is writable and the disk has space") from None
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    return directory


# ---------------------------------------------------------------- ensembles


def check_compatible(bundles: Sequence[ModelBundle]) -> None:
    """Raise BundleError unless every bundle takes the same bands, classes and standardization as the first."""
    first = bundles[0].card
    for other in bundles[1:]:
        c = other.card
        if c.bands != first.bands or c.classes != first.classes or c.standardization != first.standardization:
            raise BundleError(
                f"ensemble member {c.name!r} differs from {first.name!r} in bands, classes or standardization",
                path=str(other.path or c.name), fix="ensemble only models trained on the same bands and classes",
            )


def _member_summary(member: str | os.PathLike, bundle: ModelBundle) -> dict:
    """A member's provenance: the bundle as named (not this machine's absolute path), its digest, its run and
    the training config that made it."""
    training = bundle.card.training
    return {"name": bundle.card.name, "path": str(member), "sha256": bundle.sha256,
            "seed": training.get("config", {}).get("seed"), "config": training.get("config"),
            "best_epoch": training.get("best_epoch"), "monitor": training.get("monitor"),
            "best_value": training.get("best_value"), "dataset": training.get("dataset"),
            "validation": bundle.card.metrics.get("validation", {})}


def ensemble_bundle(members: Sequence[str | os.PathLike], directory: str | os.PathLike, *, name: str,
                    description: str = "", validation_data: str | os.PathLike | None = None,
                    overwrite: bool = False) -> Path:
    """One bundle (architecture ``ensemble``) holding ``members``: the mean of their class probabilities.

    The members must share architecture, its parameters, bands, classes and standardization (the seeds of
    one recipe); the card takes their tile defaults and resolution from the first and lists every member's
    provenance under ``training.members``. With ``validation_data`` (an eoseg dataset, normally the members'
    own), the ensemble is scored on its validation split as training scores its runs, and the card records it
    as ``metrics.validation``, comparable with the members'; nothing is written when that fails.
    """
    from eoseg.models.ensemble import Ensemble

    if len(members) < 2:
        raise ConfigError(f"an ensemble needs at least two members, got {len(members)}", path="members",
                          fix="list two or more bundles")
    bundles = [load_bundle(m) for m in members]
    check_compatible(bundles)
    first = bundles[0].card
    for other in bundles[1:]:
        if (other.card.arch, other.card.arch_params) != (first.arch, first.arch_params):
            raise BundleError(f"ensemble member {other.card.name!r} is a {other.card.arch} with other parameters "
                              f"than {first.name!r}", path=str(other.path or other.card.name),
                              fix="ensemble models of one architecture and size (seeds of one recipe)")
    params = {k: v for k, v in first.arch_params.items() if k != "encoder_weights"}
    model = Ensemble(len(first.bands), len(first.scheme), arch=first.arch, params=params, members=len(bundles))
    for member, bundle in zip(model.members, bundles, strict=True):
        member.load_state_dict(bundle.model.state_dict(), strict=True)
    refuse_existing_bundle(Path(directory), overwrite)
    card = replace(first, name=name, arch="ensemble",
                   arch_params={"arch": first.arch, "params": params, "members": len(bundles)},
                   training={"members": [_member_summary(m, b) for m, b in zip(members, bundles, strict=True)]},
                   metrics={},
                   description=description or f"mean class probabilities of {len(bundles)} {first.arch} models",
                   eoseg_version=_version(), created=_now(), weights_sha256=None)
    if validation_data is not None:
        from eoseg.train import validation_metrics

        card = replace(card, metrics={"validation": validation_metrics(model, card, validation_data)},
                       training={**card.training, "validation_data": str(validation_data)})
    return save_bundle(model.eval(), card, directory, overwrite=overwrite)
