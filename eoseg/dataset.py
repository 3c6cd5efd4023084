"""``eoseg dataset``: model-ready tiles, splits and a manifest, and the torch Dataset that reads them.

Sources
- ``folder``: Segmentation Gym / Doodler folders (jpg / png / tif) matched by file stem; several image
  folders (e.g. RGB + NIR) are stacked as bands in the order given, each declaring its band roles.
- ``scene``: a GeoTIFF with a label raster on the same grid, or label polygons (GeoPackage / GeoJSON /
  Shapefile) whose class field is rasterized onto the scene grid (unlabelled pixels → ignore).

Every source image (a chip or a scene: a "scene" below) is remapped (``remap: {old: new}``), cut with the same
:class:`~eoseg.grid.TileGrid` as predict and padded to ``tile_size`` × ``tile_size`` (image: marked invalid,
filled like nodata when standardized; label: ignore), and tiles with no labelled pixel are dropped. Scenes are
split into train / validation / test by group (scene, date or a file-name pattern) so that near-duplicates
stay on one side. Tiles are written raw (not standardized) as compressed ``.npz`` (``image`` (C, S, S) in the
source dtype, ``label`` (S, S) uint8, ``valid`` (S, S) bool); ``manifest.json`` records bands, classes, split,
sources, each scene's statistics (mean / std / 2nd and 98th percentiles over its valid pixels, as
:func:`eoseg.scene.preflight` computes them at predict time) and the pooled statistics of the train split.

Scene sources map their bands with :func:`eoseg.scene.open_scene` and the configured roles, exactly as
predict does (``bands:`` overrides it as ``--bands`` does), and decide their reflectance scaling with
:func:`eoseg.radiometry.scene_scaling` (``scale`` / ``offset`` override it as ``--scale`` / ``--offset`` do).
Each scene record holds the mapping (role, 1-based band index, band description), the scaling (or why
there is none) and the statistics of its clipped reflectance, for the ``reflectance`` standardization.

Building a dataset does not import torch; :class:`TileDataset` (the torch ``Dataset``) lives in
:mod:`eoseg.torchdata` and is importable from here for convenience.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine

from eoseg.classes import COASTAL, ClassScheme
from eoseg.config import DatasetConfig, FolderSource, SceneSource, SplitConfig
from eoseg.errors import DatasetError, OutputExistsError, ScalingError
from eoseg.grid import TileGrid
from eoseg.radiometry import Scaling
from eoseg.standardize import REFLECTANCE_MODES, Standardization, log_reflectance, reflectance

MANIFEST = "manifest.json"
SPLITS = ("train", "validation", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_DATE = re.compile(r"(?<!\d)((?:19|20)\d{6})(?!\d)")


@dataclass
class Sample:
    """One source image with its labels, before tiling."""

    id: str
    image: np.ndarray  # (C, H, W), source dtype
    label: np.ndarray  # (H, W) uint8 after remap, ignore where unlabelled
    valid: np.ndarray  # (H, W) bool
    roles: tuple[str, ...]
    paths: dict[str, str]
    stats: dict[str, list[float] | float]
    transform: Affine = field(default_factory=Affine.identity)
    crs: str | None = None
    bands: list[dict] | None = None  # scene sources: {role, band (1-based), description} per role
    scaling: dict | None = None  # scene sources: the reflectance scaling, or {"error": why there is none}


# ------------------------------------------------------------------------------------------- reading


def read_image(path: Path) -> np.ndarray:
    """(C, H, W) array from a jpg / png / tif (rasterio reads all of them; no georeferencing needed)."""
    import rasterio

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return ds.read()
    except rasterio.errors.RasterioError as exc:
        raise DatasetError(f"cannot read image ({exc})", path=path, fix="check the file is a valid image") from exc


def read_label(path: Path) -> np.ndarray:
    """(H, W) label image; of an RGB label image (all channels equal) the first channel."""
    data = read_image(path)
    if data.shape[0] > 1 and not all(np.array_equal(data[0], b) for b in data[1:]):
        raise DatasetError("label image has several different channels", path=path,
                           fix="save labels as single-channel images of class ids")
    return data[0]


def _stem_key(path: Path, replacements: Sequence[tuple[str, str]]) -> str:
    key = path.stem
    for old, new in replacements:
        key = key.replace(old, new)
    return key


def _index_folder(folder: Path, replacements: Sequence[tuple[str, str]]) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError("folder does not exist", path=folder, fix="check the path in the dataset config")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return {_stem_key(p, replacements): p for p in files}


def _fit_channels(data: np.ndarray, n_roles: int, path: Path) -> np.ndarray:
    if data.shape[0] == n_roles:
        return data
    if n_roles == 1 and all(np.array_equal(data[0], b) for b in data[1:]):
        return data[:1]  # a grey image saved as RGB
    if data.shape[0] == n_roles + 1 and n_roles >= 3:
        return data[:n_roles]  # drop an alpha channel
    raise DatasetError(f"has {data.shape[0]} channel(s) but the config declares {n_roles} role(s)", path=path,
                       fix="fix the roles list of this band folder")


def folder_samples(src: FolderSource) -> Iterator[tuple[str, np.ndarray, np.ndarray, tuple[str, ...], dict]]:
    """(id, image, raw label, roles, paths) for each label with all its band images."""
    labels = _index_folder(src.labels, src.label_stem_replace)
    folders = [(b, _index_folder(b.folder, b.stem_replace)) for b in src.bands]
    roles = tuple(r for b in src.bands for r in b.roles)
    if not labels:
        raise DatasetError("no label images (jpg / png / tif) found", path=src.labels, fix="check the folder")
    for key, label_path in labels.items():
        layers, paths = [], {"labels": str(label_path), "images": []}
        for band, index in folders:
            if key not in index:
                raise DatasetError(f"no image matches label {label_path.name!r}", path=band.folder,
                                   fix="check file names, or set stem_replace for this band folder")
            layers.append(_fit_channels(read_image(index[key]), len(band.roles), index[key]))
            paths["images"].append(str(index[key]))
        label = read_label(label_path)
        shapes = {a.shape[1:] for a in layers} | {label.shape}
        if len(shapes) > 1:
            raise DatasetError(f"images and label differ in size {sorted(shapes)}", path=label_path,
                               fix="use images and labels of the same size")
        yield key, np.concatenate(layers, axis=0), label, roles, paths


def scene_sample_data(src: SceneSource) -> tuple[np.ndarray, np.ndarray, np.ndarray, object, dict, dict]:
    """(image, raw label with ignore outside labels, valid, Scene, stats, scaling) for a GeoTIFF source.

    The bands are mapped as predict maps them; ``stats["reflectance"]`` holds the statistics of the clipped
    reflectance when the scaling is known (``scaling`` is then ``Scaling.to_dict()``, else ``{"error": ...}``).
    """
    from rasterio.windows import Window

    from eoseg.labels import load_labels
    from eoseg.radiometry import scene_scaling
    from eoseg.scene import SceneReader, open_scene, preflight

    scene = open_scene(src.scene, roles=src.roles, bands=src.bands, allow_ungeoreferenced=True)
    stats = _stats_dict(preflight(scene))
    with SceneReader(scene) as reader:
        image, valid = reader.read(Window(0, 0, scene.width, scene.height))
    try:
        scaling = scene_scaling(scene, src.scale, src.offset)
    except ScalingError as exc:
        scaling_record: dict = {"error": str(exc)}
    else:
        scaling_record = scaling.to_dict()
        refl = reflectance(image, scaling)
        stats["reflectance"] = array_stats(refl, valid)
        stats["log_reflectance"] = array_stats(log_reflectance(refl), valid)
    label = load_labels(scene, src.labels, src.class_field)
    return image, label, valid, scene, stats, scaling_record


# ------------------------------------------------------------------------------------------- labels


def apply_remap(label: np.ndarray, remap: dict[int, int], class_ids: Sequence[int], ignore: int,
                path: str | Path | None = None) -> np.ndarray:
    """Map label values (``remap`` first, several old values may share a new one); anything left that is
    neither a class id nor the ignore value raises DatasetError."""
    label = np.asarray(label)
    out = label.astype(np.int64).copy()
    for old, new in remap.items():
        out[label == old] = new
    allowed = set(class_ids) | {ignore}
    bad = sorted(set(np.unique(out).tolist()) - allowed)
    if bad:
        raise DatasetError(f"label values {bad} are not class ids {sorted(class_ids)} or the ignore value {ignore}",
                           path=path, fix="map them with remap: {old: new} (e.g. to 255 to ignore them)")
    return out.astype(np.uint8)


# ------------------------------------------------------------------------------------------- statistics


def array_stats(image: np.ndarray, valid: np.ndarray) -> dict[str, list[float] | float]:
    """Per-band mean / std / p02 / p98 over valid pixels, as :func:`eoseg.scene.preflight` computes them."""
    values = image[:, valid].astype(np.float64)
    if values.shape[1] == 0:
        raise DatasetError("image has no valid pixels", fix="check the image")
    p02, p98 = np.percentile(values, [2, 98], axis=1)
    return {"mean": values.mean(axis=1).tolist(), "std": values.std(axis=1).tolist(), "p02": p02.tolist(),
            "p98": p98.tolist(), "valid_fraction": float(valid.mean()), "count": int(valid.sum())}


def _stats_dict(stats) -> dict[str, list[float] | float]:
    return {"mean": list(stats.mean), "std": list(stats.std), "p02": list(stats.p02), "p98": list(stats.p98),
            "valid_fraction": float(stats.valid_fraction), "count": None}


def pooled_stats(scenes: Sequence[dict]) -> dict[str, list[float]]:
    """Per-band mean / std of the union of scenes (weighted by valid pixels): raw, percentile-stretched and,
    when every scene's units are known, clipped reflectance and its logarithm (``reflectance_mean`` /
    ``reflectance_std``, ``log_reflectance_mean`` / ``log_reflectance_std``)."""
    if not scenes:
        return {}
    n = np.array([(s["stats"].get("count") or s["height"] * s["width"] * s["stats"]["valid_fraction"])
                  for s in scenes], dtype=np.float64)[:, None]
    mean = np.array([s["stats"]["mean"] for s in scenes])
    std = np.array([s["stats"]["std"] for s in scenes])
    low, high = np.array([s["stats"]["p02"] for s in scenes]), np.array([s["stats"]["p98"] for s in scenes])
    span = np.maximum(high - low, 1e-6)
    out = {}
    groups = {"": (n, mean, std), "stretched_": (n, (mean - low) / span, std / span)}
    for key in ("reflectance", "log_reflectance"):
        if all(key in s["stats"] for s in scenes):
            groups[f"{key}_"] = tuple(np.array([s["stats"][key][k] for s in scenes], dtype=np.float64)
                                      for k in ("count", "mean", "std"))
    for prefix, (counts, m, s) in groups.items():
        counts = counts.reshape(-1, 1)
        pooled_mean = (counts * m).sum(0) / counts.sum()
        pooled_var = (counts * (s**2 + m**2)).sum(0) / counts.sum() - pooled_mean**2
        out[f"{prefix}mean"] = pooled_mean.tolist()
        out[f"{prefix}std"] = np.sqrt(np.maximum(pooled_var, 0)).tolist()
    return out


# ------------------------------------------------------------------------------------------- splits


def group_key(name: str, cfg: SplitConfig) -> str:
    if cfg.group_by == "scene":
        return name
    match = re.search(cfg.group_pattern, name)
    if match is None and cfg.group_by == "date":
        match = _DATE.search(name)
    if match is None:
        raise DatasetError(f"group_pattern {cfg.group_pattern!r} does not match {name!r}", path="split.group_pattern",
                           fix="change group_pattern (a regex; group 1 is the key) or use group_by: scene")
    return match.group(1) if match.groups() else match.group(0)


def assign_splits(groups: Sequence[str], cfg: SplitConfig) -> dict[str, str]:
    """{group: split}; groups shuffled with the seed, counts rounded, at least one group per non-zero split."""
    unique = sorted(set(groups))
    order = [unique[i] for i in np.random.default_rng(cfg.seed).permutation(len(unique))]
    total = len(unique)

    def count(fraction: float) -> int:
        return 0 if fraction == 0 else max(1, round(fraction * total))

    n_test, n_val = count(cfg.test), count(cfg.validation)
    if total - n_test - n_val < 1 and cfg.train > 0:
        raise DatasetError(f"only {total} group(s): too few to split into train / validation / test",
                           path="split", fix="add data, lower the validation / test fractions, or group by scene")
    split = {}
    for i, g in enumerate(order):
        split[g] = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
    return split


# ------------------------------------------------------------------------------------------- tiling


def pad_to(array: np.ndarray, height: int, width: int, mode: str, value: int = 0) -> np.ndarray:
    pb, pr = height - array.shape[-2], width - array.shape[-1]
    if pb <= 0 and pr <= 0:
        return array
    widths = [(0, 0)] * (array.ndim - 2) + [(0, max(pb, 0)), (0, max(pr, 0))]
    if mode == "reflect" and min(array.shape[-2:]) > 1:
        return np.pad(array, widths, mode="reflect")
    if mode == "reflect":
        return np.pad(array, widths, mode="edge")
    return np.pad(array, widths, mode="constant", constant_values=value)


def cut_tiles(sample: Sample, size: int, overlap: int, ignore: int,
              min_labelled: float = 0.0) -> Iterator[tuple[str, tuple[int, int, int, int], dict]]:
    """(tile id, (row_off, col_off, height, width), arrays) for each tile with labelled pixels."""
    height, width = sample.label.shape
    grid = TileGrid(height, width, size, overlap, sample.transform)
    for tile in grid:
        r0, c0, h, w = tile.row_off, tile.col_off, tile.height, tile.width
        label = sample.label[r0:r0 + h, c0:c0 + w]
        labelled = float((label != ignore).mean())
        if labelled == 0 or labelled < min_labelled:
            continue
        arrays = {
            "image": pad_to(sample.image[:, r0:r0 + h, c0:c0 + w], size, size, "reflect"),
            "label": pad_to(label, size, size, "constant", ignore).astype(np.uint8),
            "valid": pad_to(sample.valid[r0:r0 + h, c0:c0 + w], size, size, "constant", 0).astype(bool),
        }
        yield tile.id, (r0, c0, h, w), arrays


# ------------------------------------------------------------------------------------------- manifest


@dataclass
class Manifest:
    path: Path  # the dataset directory
    data: dict

    @property
    def roles(self) -> list[str]:
        return list(self.data["bands"])

    @property
    def classes(self) -> ClassScheme:
        return ClassScheme.from_dict(self.data["classes"])

    @property
    def ignore_value(self) -> int:
        return int(self.data["ignore_value"])

    @property
    def tile_size(self) -> int:
        return int(self.data["tile_size"])

    @property
    def overlap(self) -> int:
        return int(self.data["overlap"])

    @property
    def scenes(self) -> dict[str, dict]:
        return self.data["scenes"]

    def tiles(self, split: str | None = None) -> list[dict]:
        return [t for t in self.data["tiles"] if split is None or t["split"] == split]

    def band_indexes(self, roles: Sequence[str] | None) -> list[int]:
        """0-based positions of ``roles`` in the dataset's bands (all bands when None)."""
        if roles is None:
            return list(range(len(self.roles)))
        missing = [r for r in roles if r not in self.roles]
        if missing:
            raise DatasetError(f"dataset has no band role(s) {missing} (it has {self.roles})", path=self.path,
                               fix=f"choose bands among {self.roles}")
        return [self.roles.index(r) for r in roles]


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    directory = path.parent if path.name == MANIFEST else path
    file = directory / MANIFEST
    if not file.is_file():
        raise DatasetError("is not an eoseg dataset (no manifest.json)", path=directory,
                           fix="build one with `eoseg dataset --config ...`")
    return Manifest(directory, json.loads(file.read_text()))


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError("dataset directory exists and is not empty", path=out,
                                    fix="pass --overwrite or choose another --out")
        if (out / MANIFEST).exists():
            shutil.rmtree(out)
        else:
            raise OutputExistsError("directory is not an eoseg dataset; refusing to delete it", path=out,
                                    fix="choose an empty or new --out")
    (out / "tiles").mkdir(parents=True, exist_ok=True)


def iter_samples(cfg: DatasetConfig, scheme: ClassScheme) -> Iterator[Sample]:
    for index, src in enumerate(cfg.sources):
        if isinstance(src, FolderSource):
            for key, image, raw, roles, paths in folder_samples(src):
                label = apply_remap(raw, cfg.remap, scheme.ids, cfg.ignore_value, paths["labels"])
                valid = np.ones(label.shape, dtype=bool)
                yield Sample(key, image, label, valid, roles, {"source": index, **paths}, array_stats(image, valid))
        else:
            image, raw, valid, scene, stats, scaling = scene_sample_data(src)
            label = apply_remap(raw, cfg.remap, scheme.ids, cfg.ignore_value, src.labels)
            label[~valid] = cfg.ignore_value
            yield Sample(src.name or scene.stem, image, label, valid, tuple(src.roles),
                         {"source": index, "scene": str(src.scene), "labels": str(src.labels)}, stats,
                         scene.transform, scene.crs.to_string() if scene.crs else None,
                         scene.band_mapping, scaling)


def make_dataset(cfg: DatasetConfig, out: str | Path | None = None, overwrite: bool = False,
                 progress: bool = False) -> Manifest:
    """Build the dataset described by ``cfg`` in ``out`` (default ``cfg.out``); returns its manifest."""
    from tqdm import tqdm

    out = Path(out or cfg.out or "")
    if not str(out) or out == Path("."):
        raise DatasetError("no output directory", path="out", fix="set out: in the config or pass --out")
    TileGrid(1, 1, cfg.tile_size, cfg.overlap)  # validates tile size / overlap
    scheme = ClassScheme.from_dict(cfg.classes) if cfg.classes else COASTAL
    _prepare_out(out, overwrite)
    scenes: dict[str, dict] = {}
    tiles: list[dict] = []
    roles: tuple[str, ...] | None = None
    for sample in tqdm(iter_samples(cfg, scheme), disable=not progress, desc="dataset", unit="image"):
        roles = roles or sample.roles
        if sample.roles != roles:
            raise DatasetError(f"sources declare different band roles {list(roles)} and {list(sample.roles)}",
                               path=sample.paths.get("labels"),
                               fix="give every source the same roles in the same order")
        sid = _unique(sample.id, scenes)
        scenes[sid] = _scene_record(sample, cfg.split)
        for tile_id, (r0, c0, h, w), arrays in cut_tiles(sample, cfg.tile_size, cfg.overlap, cfg.ignore_value,
                                                          cfg.min_labelled_fraction):
            name = f"tiles/{sid}__{tile_id}.npz"
            np.savez_compressed(out / name, **arrays)
            counts = np.bincount(arrays["label"][arrays["label"] != cfg.ignore_value], minlength=len(scheme))
            tiles.append({"file": name, "scene": sid, "window": [r0, c0, h, w], "class_counts": counts.tolist()})
    if not tiles:
        raise DatasetError("no tile holds a labelled pixel", path=out, fix="check the labels and the remap")
    split_of = assign_splits([s["group"] for s in scenes.values()], cfg.split)
    for s in scenes.values():
        s["split"] = split_of[s["group"]]
    for t in tiles:
        t["split"] = scenes[t["scene"]]["split"]
    data = _manifest_dict(cfg, scheme, roles or (), scenes, tiles, split_of)
    (out / MANIFEST).write_text(json.dumps(data, indent=1))
    return Manifest(out, data)


def _unique(sid: str, existing: dict) -> str:
    candidate, n = sid, 1
    while candidate in existing:
        n += 1
        candidate = f"{sid}_{n}"
    return candidate


def _scene_record(sample: Sample, split_cfg: SplitConfig) -> dict:
    height, width = sample.label.shape
    return {"group": group_key(sample.id, split_cfg), "height": height, "width": width,
            "dtype": str(sample.image.dtype), "paths": sample.paths, "stats": sample.stats,
            "transform": list(sample.transform)[:6], "crs": sample.crs, "bands": sample.bands,
            "scaling": sample.scaling}


def _manifest_dict(cfg: DatasetConfig, scheme: ClassScheme, roles: Sequence[str], scenes: dict, tiles: list,
                   split_of: dict[str, str]) -> dict:
    from eoseg import __version__

    counts = {sp: {"scenes": sum(s["split"] == sp for s in scenes.values()),
                   "tiles": sum(t["split"] == sp for t in tiles),
                   "groups": sorted(g for g, v in split_of.items() if v == sp)} for sp in SPLITS}
    return {
        "format": "eoseg-dataset/1",
        "eoseg_version": __version__,
        "bands": list(roles),
        "classes": scheme.to_dict(),
        "ignore_value": cfg.ignore_value,
        "tile_size": cfg.tile_size,
        "overlap": cfg.overlap,
        "remap": {str(k): v for k, v in cfg.remap.items()},
        "split": {**cfg.split.model_dump(mode="json"), "counts": counts},
        "sources": [s.model_dump(mode="json") for s in cfg.sources],
        "stats": {"train": pooled_stats([s for s in scenes.values() if s["split"] == "train"])},
        "scenes": scenes,
        "tiles": tiles,
    }


# ------------------------------------------------------------------------------------------- reading tiles


def standardization_for(manifest: Manifest, mode: str, band_idx: Sequence[int]) -> Standardization:
    """The Standardization a model card records: stored statistics for ``fixed`` / ``stretch`` / the reflectance
    modes."""
    train = manifest.data["stats"].get("train") or {}
    pick = (lambda key: [train[key][i] for i in band_idx]) if train else (lambda key: None)
    if mode == "fixed":
        return Standardization("fixed", mean=tuple(pick("mean")), std=tuple(pick("std")))
    if mode == "stretch":
        return Standardization("stretch", mean=tuple(pick("stretched_mean")), std=tuple(pick("stretched_std")))
    if mode in REFLECTANCE_MODES:
        key = mode.replace("-", "_")
        unknown = [sid for sid, s in manifest.scenes.items() if not (s.get("scaling") or {}).get("scale")]
        if "reflectance_mean" in train and f"{key}_mean" not in train:
            raise DatasetError(f"the dataset has no {mode} statistics (it was built before eoseg had them)",
                               path=manifest.path, fix="rebuild the dataset with eoseg dataset")
        if unknown or (train and f"{key}_mean" not in train):
            raise DatasetError(f"the units of scene(s) {', '.join(unknown) or 'in the train split'} are unknown, so "
                               "there is no reflectance to train on", path=manifest.path,
                               fix="use scene sources whose metadata gives the units, or set scale / offset on "
                                   "them, and rebuild the dataset")
        return Standardization(mode, mean=tuple(pick(f"{key}_mean")), std=tuple(pick(f"{key}_std")))
    return Standardization(mode)


def scene_standardization(template: Standardization, scene: dict, band_idx: Sequence[int]) -> Standardization:
    """``template`` filled with one scene's statistics, or its scaling (a no-op for ``image`` / ``fixed``)."""
    stats = scene["stats"]
    if template.needs_scaling:
        scaling = Scaling.from_dict(scene["scaling"])
        return template.with_scaling(Scaling(tuple(scaling.scale[i] for i in band_idx),
                                             tuple(scaling.offset[i] for i in band_idx),
                                             scaling.source, scaling.detail))

    def pick(key: str) -> list[float]:
        return [stats[key][i] for i in band_idx]

    return template.with_stats(mean=pick("mean"), std=pick("std"), low=pick("p02"), high=pick("p98"))


def __getattr__(name: str):
    if name == "TileDataset":  # the torch Dataset, imported only when asked for (building needs no torch)
        from eoseg.torchdata import TileDataset

        return TileDataset
    raise AttributeError(f"module 'eoseg.dataset' has no attribute {name!r}")
