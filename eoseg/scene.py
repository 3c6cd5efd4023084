"""Opening a scene: preflight, band-role mapping and reading windows.

A :class:`Scene` is a value describing one GeoTIFF (size, CRS, transform, nodata) and which of its
bands feed the model's band roles, in role order. :func:`open_scene` refuses what cannot be
processed with one clear error; :func:`preflight` reads every block of the mapped bands (a file that
opens can still be truncated) and gathers the per-band statistics that scene standardization uses,
so the scene is read once before any model work.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from eoseg.errors import BandMappingError, EmptySceneError, GeoreferenceError, SceneReadError

log = logging.getLogger(__name__)

# Band designations by sensor family (USGS / ESA band numbering).
SENTINEL2 = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
    "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "watervapour", "B10": "cirrus", "B11": "swir1",
    "B12": "swir2",
}
LANDSAT_OLI = {
    "B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "nir", "B6": "swir1", "B7": "swir2",
    "B8": "pan", "B9": "cirrus", "B10": "tir1", "B11": "tir2", "BQA": "qa", "QA_PIXEL": "qa",
}
LANDSAT_TM = {
    "B1": "blue", "B2": "green", "B3": "red", "B4": "nir", "B5": "swir1", "B6": "tir1", "B7": "swir2",
    "B8": "pan", "BQA": "qa",
}
PLAIN_NAMES = {
    "coastal": "coastal", "aerosol": "coastal", "blue": "blue", "green": "green", "red": "red",
    "nir": "nir", "nearinfrared": "nir", "nearir": "nir", "nir08": "nir08", "rededge": "rededge1",
    "rededge1": "rededge1", "rededge2": "rededge2", "rededge3": "rededge3", "swir": "swir1", "swir1": "swir1",
    "swir16": "swir1", "swir2": "swir2", "swir22": "swir2", "pan": "pan", "panchromatic": "pan", "qa": "qa",
    "r": "red", "g": "green", "b": "blue",
}
# Roles that can stand in for a missing one.
FALLBACK_ROLES = {"nir": ("nir08",), "nir08": ("nir",)}

_SENSOR_PATTERNS = (
    ("sentinel2", re.compile(r"(^|[^A-Z0-9])(S2[AB]?|SENTINEL-?2|MSI)([^A-Z0-9]|$)|_S2_", re.I)),
    ("landsat_oli",
     re.compile(r"(^|[^A-Z0-9])(L[COT]0?[89]|L[89]|LANDSAT_?[89])([^A-Z0-9]|$)|_L[89]_|^L[COT]0?[89]", re.I)),
    ("landsat_tm", re.compile(r"(^|[^A-Z0-9])(L[ET]0?[457]|L[457]|LANDSAT_?[457])([^A-Z0-9]|$)|_L[457]_", re.I)),
)


@dataclass(frozen=True)
class SceneMask:
    """A quality layer on the scene's grid (a GDAL dataset name or VRT XML; for ``kind`` 'msk_clouds' the path of
    a GML cloud mask rasterized per window on the scene's grid) and the classes it masks."""

    source: str
    kind: str  # see eoseg.products.quality_flags
    classes: tuple[str, ...]
    saturation_bits: int = 0  # Landsat QA_RADSAT bits of the bands the model reads (second band of ``source``)


@dataclass(frozen=True)
class Scene:
    """One scene and the bands that feed the model, 1-based, in role order.

    A product input (:mod:`eoseg.products`) keeps what the user gave as ``path`` and reads its bands through
    ``source`` (a VRT stacking the band files); ``mask`` marks its clouds / fill invalid.
    """

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    band_indexes: tuple[int, ...]
    roles: tuple[str, ...]
    georeferenced: bool
    band_descriptions: tuple[str | None, ...] = ()  # of the mapped bands, in role order
    source: str | None = None  # what GDAL opens when it is not ``path`` (a product's VRT)
    product: object | None = None  # eoseg.products.Product
    mask: SceneMask | None = None

    @property
    def dataset(self) -> str | Path:
        """What to open with rasterio to read the scene's bands."""
        return self.source or self.path

    @property
    def band_mapping(self) -> list[dict]:
        """``[{role, band (1-based), description}]`` for each band the model reads, in role order."""
        descriptions = self.band_descriptions or (None,) * len(self.band_indexes)
        return [{"role": r, "band": b, "description": d}
                for r, b, d in zip(self.roles, self.band_indexes, descriptions, strict=True)]

    def describe_bands(self) -> str:
        """``red=3:B04 green=2:B03 ...``: the chosen mapping on one line."""
        return " ".join(f"{m['role']}={m['band']}:{m['description'] or '?'}" for m in self.band_mapping)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def stem(self) -> str:
        if self.product is not None:
            return self.product.product_id
        return self.path.name.rsplit(".", 1)[0] if self.path.suffix else self.path.name


@dataclass(frozen=True)
class SceneStats:
    """Per-band statistics over the valid pixels of a scene (from a regular sample)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    p02: tuple[float, ...]
    p98: tuple[float, ...]
    valid_fraction: float


# ---------------------------------------------------------------------------------------------- sensors


def detect_sensor(name: str, tags: dict[str, str] | None = None) -> str | None:
    """Sensor family from a file name or dataset tags: 'sentinel2', 'landsat_oli', 'landsat_tm' or None."""
    text = " ".join([name, *(tags or {}).values()])
    for sensor, pattern in _SENSOR_PATTERNS:
        if pattern.search(text):
            return sensor
    return None


def scene_sensor(name: str, tags: dict[str, str] | None, descriptions: Sequence[str | None]) -> str | None:
    """:func:`detect_sensor`, or 'sentinel2' when bands carry zero-padded codes (B02, B8A), Sentinel-2's own."""
    sensor = detect_sensor(name, tags)
    if sensor is None and any(d and re.fullmatch(r"B(0\d|8A)", d.strip().upper()) for d in descriptions):
        sensor = "sentinel2"
    return sensor


def role_of(designation: str, sensor: str | None) -> str | None:
    """The band role a description such as 'B02', 'SR_B5', 'B8A', 'nir' or 'Red' stands for.

    A band number ('B1', 'band_1') means a different band for each sensor, so without a sensor it is unknown.
    """
    text = designation.strip()
    key = re.sub(r"[\s_\-]", "", text).lower()
    if key in PLAIN_NAMES:
        return PLAIN_NAMES[key]
    code = re.sub(r"^(SR_|TOA_|ST_)", "", text.upper())
    match = re.fullmatch(r"B(?:AND)?_?0*(\d{1,2}A?)", code)
    if code in LANDSAT_OLI and not match:
        return LANDSAT_OLI[code]
    if not match:
        return None
    number = match.group(1)  # leading zeros stripped: 'B02' -> '2', 'B8A' -> '8A'
    if sensor is None:
        return None
    if sensor == "sentinel2":
        return SENTINEL2.get("B8A" if number == "8A" else f"B{int(number):02d}")
    table = LANDSAT_TM if sensor == "landsat_tm" else LANDSAT_OLI
    return table.get(f"B{int(number)}") if number.isdigit() else None


def _roles_from_filename(stem: str, count: int, sensor: str | None) -> list[str | None] | None:
    """Band lists written into file names ('..._B2B3B4_150m') or known layouts (CoastSat '_ms', '_pan')."""
    listed = re.search(r"((?:B\d{1,2}A?){2,})", stem.upper())
    if listed:
        codes = re.findall(r"B\d{1,2}A?", listed.group(1))
        if len(codes) == count:
            return [role_of(c, sensor) for c in codes]
    lowered = stem.lower()
    if lowered.endswith("_pan") and count == 1:
        return ["pan"]
    if re.search(r"_ms(_dup\d+)?$", lowered):  # CoastSat multispectral tiles: B, G, R, NIR (+ SWIR1 for Landsat)
        layout: list[str | None] = ["blue", "green", "red", "nir"]
        if sensor in ("landsat_oli", "landsat_tm"):
            layout.append("swir1")
        return (layout + [None] * count)[:count] if count >= 4 else None
    return None


def _roles_from_colorinterp(colorinterp: Sequence[ColorInterp]) -> list[str | None] | None:
    named = {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue"}
    roles = [named.get(ci) for ci in colorinterp]
    return roles if {"red", "green", "blue"} <= set(roles) else None


def scene_band_roles(ds: rasterio.io.DatasetReader, path: Path) -> list[str | None]:
    """The role of each band of an open dataset (None where unknown), from the best evidence available."""
    descriptions = list(ds.descriptions)
    sensor = scene_sensor(path.name, ds.tags(), descriptions)
    roles: list[str | None] = [role_of(d, sensor) if d else None for d in descriptions]
    if any(roles):
        return roles
    for guess in (_roles_from_colorinterp(ds.colorinterp), _roles_from_filename(path.stem, ds.count, sensor)):
        if guess and any(guess):
            return guess
    return [None] * ds.count


def map_bands(
    scene_roles: Sequence[str | None],
    wanted: Sequence[str],
    path: Path,
    descriptions: Sequence[str | None] = (),
) -> tuple[int, ...]:
    """1-based scene band indexes for the ``wanted`` roles, in order."""
    indexes: list[int] = []
    missing: list[str] = []
    for role in wanted:
        candidates = (role, *FALLBACK_ROLES.get(role, ()))
        found = next((i + 1 for c in candidates for i, r in enumerate(scene_roles) if r == c), None)
        if found is None:
            missing.append(role)
        else:
            indexes.append(found)
    if missing:
        have = ", ".join(
            f"{i + 1}:{(descriptions[i] if i < len(descriptions) and descriptions[i] else '?')}"
            f"({r or 'unknown'})" for i, r in enumerate(scene_roles)
        )
        raise BandMappingError(
            f"cannot find band(s) {', '.join(missing)} among the scene's bands [{have}]",
            path=path,
            fix=f"pass --bands with {len(wanted)} 1-based indexes in the order {','.join(wanted)}",
        )
    return tuple(indexes)


# ---------------------------------------------------------------------------------------------- opening


@contextmanager
def _reading(path: Path, source: str | None = None) -> Iterator[rasterio.io.DatasetReader]:
    """Open a raster (``source`` instead of ``path`` when given: a product's VRT), turning every way it can fail
    into a :class:`SceneReadError`."""
    if source is not None:
        try:
            ds = rasterio.open(source)
        except RasterioError as exc:
            raise SceneReadError(f"cannot open the product's bands ({_first_line(exc)})", path=path,
                                 fix="re-download the product") from exc
        with ds:
            yield ds
        return
    if not path.exists():
        raise SceneReadError("file does not exist", path=path, fix="check the path")
    if path.is_dir():
        raise SceneReadError("is a directory, not a raster file", path=path, fix="pass a GeoTIFF file")
    if path.stat().st_size == 0:
        raise SceneReadError("file is empty (0 bytes)", path=path, fix="re-download or re-export the scene")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioError as exc:
        raise SceneReadError(
            f"not a raster GDAL can read ({_first_line(exc)})", path=path,
            fix="pass a GeoTIFF (or another GDAL raster format)",
        ) from exc
    with ds:
        yield ds


def _first_line(exc: BaseException) -> str:
    """The most specific message in an exception chain (GDAL's own text rather than 'Read failed')."""
    messages = []
    while exc is not None:
        text = str(exc).strip()
        if text and "see previous exception" not in text.lower():
            messages.append(text.splitlines()[0].rstrip("."))
        exc = exc.__cause__ or exc.__context__
    return messages[-1] if messages else "unknown error"


def open_scene(
    path: str | Path,
    roles: Sequence[str] | None = None,
    bands: Sequence[int] | None = None,
    allow_ungeoreferenced: bool = False,
    mask: str | Sequence[str] | None = None,
) -> Scene:
    """Open ``path`` and map its bands to ``roles`` (all bands, in file order, when ``roles`` is None).

    ``bands`` (1-based indexes in role order) overrides the automatic mapping. ``path`` may also be an archive
    product (:mod:`eoseg.products`); ``mask`` (``'clouds,shadow'`` by default, ``'none'``) says which classes of
    its quality layer become invalid.
    """
    from eoseg.products import find_product

    product = find_product(path)
    path = Path(path)
    source = scene_mask = None
    if product is not None:
        source, scene_mask = _product_sources(product, mask)
    with _reading(path, source) as ds:
        georeferenced = ds.crs is not None and ds.transform != Affine.identity()
        if not georeferenced and not allow_ungeoreferenced:
            raise GeoreferenceError(
                "has no CRS or geotransform, so outputs could not be placed on a map", path=path,
                fix="georeference it (e.g. gdal_translate -a_srs/-a_ullr) or pass --allow-ungeoreferenced",
            )
        if georeferenced and not _has_datum(ds.crs):
            if not allow_ungeoreferenced:
                raise GeoreferenceError(
                    f"has a local (engineering) CRS without a datum ({ds.crs.to_wkt()[:40]}...), so outputs could "
                    "not be placed on a map", path=path,
                    fix="assign a real CRS (e.g. gdal_edit.py -a_srs EPSG:32618) or pass --allow-ungeoreferenced",
                )
            georeferenced = False
        if not georeferenced:
            log.warning("%s: no usable CRS or geotransform; outputs carry pixel coordinates", path)
        indexes, role_names = _resolve_bands(ds, path, roles, bands, product)
        if scene_mask is not None:
            from eoseg.products import saturation_bits

            scene_mask = replace(scene_mask, saturation_bits=saturation_bits(product, indexes))
        scene = Scene(
            path=path, width=ds.width, height=ds.height, count=ds.count, dtype=ds.dtypes[0],
            crs=ds.crs if georeferenced else None, transform=ds.transform if georeferenced else Affine.identity(),
            nodata=ds.nodata, band_indexes=indexes, roles=role_names, georeferenced=georeferenced,
            band_descriptions=tuple(ds.descriptions[i - 1] for i in indexes),
            source=source, product=product, mask=scene_mask,
        )
    if roles is not None:
        log.info("%s: bands %s", path.name, scene.describe_bands())
    return scene


def _product_sources(product, mask: str | Sequence[str] | None) -> tuple[str, SceneMask | None]:
    """A product's band VRT and its quality layer (None with ``--mask none`` or without a layer)."""
    from eoseg.products import band_vrt, parse_mask, quality_source, stack_grid

    classes = parse_mask(mask)
    grid = stack_grid(product)
    quality = quality_source(product, grid) if classes else None
    scene_mask = SceneMask(quality, product.quality.kind, classes) if quality is not None else None
    return band_vrt(product, grid), scene_mask


def _has_datum(crs: CRS) -> bool:
    """Whether a CRS is tied to the Earth (geographic or projected), not a local / engineering one."""
    return bool(crs.is_geographic or crs.is_projected)


def _resolve_bands(
    ds: rasterio.io.DatasetReader, path: Path, roles: Sequence[str] | None, bands: Sequence[int] | None,
    product=None,
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    if bands is not None:
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad:
            raise BandMappingError(
                f"band index {bad[0]} is out of range; the scene has {ds.count} band(s)", path=path,
                fix=f"use 1-based indexes between 1 and {ds.count}",
            )
        if roles is not None and len(bands) != len(roles):
            raise BandMappingError(
                f"--bands gives {len(bands)} band(s) but the model takes {len(roles)} ({', '.join(roles)})",
                path=path, fix=f"pass {len(roles)} indexes in the order {','.join(roles)}",
            )
        names = tuple(roles) if roles is not None else tuple(f"band{b}" for b in bands)
        return tuple(bands), names
    scene_roles = list(product.roles) if product is not None else scene_band_roles(ds, path)
    if product is not None and roles is not None:
        missing = [r for r in roles if not any(c in scene_roles for c in (r, *FALLBACK_ROLES.get(r, ())))]
        if missing:
            from eoseg.products import missing_band_error

            raise missing_band_error(product, missing, roles)
    if roles is None:
        return tuple(range(1, ds.count + 1)), tuple(r or f"band{i + 1}" for i, r in enumerate(scene_roles))
    if ds.count < len(roles) and not any(scene_roles):
        raise BandMappingError(
            f"has {ds.count} band(s) but the model needs {len(roles)} ({', '.join(roles)})", path=path,
            fix="use a scene with those bands or a model that takes fewer",
        )
    return map_bands(scene_roles, roles, path, ds.descriptions), tuple(roles)


# ---------------------------------------------------------------------------------------------- reading


class SceneReader:
    """An open scene: reads windows of the mapped bands as float32 with a validity mask."""

    def __init__(self, scene: Scene):
        self.scene = scene
        self._ctx = _reading(scene.path, scene.source)
        self._ds = self._ctx.__enter__()
        self._read_masks = _masks_say_more(self._ds, scene)
        self._mask_ctx = self._mask_ds = None
        if scene.mask is not None:
            from eoseg.products import open_quality_layer

            try:
                self._mask_ctx = open_quality_layer(scene)
                self._mask_ds = self._mask_ctx.__enter__()
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        if self._mask_ctx is not None:
            self._mask_ctx.__exit__(None, None, None)
            self._mask_ctx = None
        self._ctx.__exit__(None, None, None)

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, window: Window, pad: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
        """``(data float32 (C, h+pb, w+pr), valid bool (h+pb, w+pr))``; padding is reflected and invalid."""
        idx = list(self.scene.band_indexes)
        try:
            data = self._ds.read(idx, window=window, out_dtype="float32")
            masks = self._ds.read_masks(idx, window=window) if self._read_masks else None
        except RasterioError as exc:
            raise SceneReadError(
                f"cannot read pixels (truncated or corrupt file: {_first_line(exc)})", path=self.scene.path,
                fix="re-download or re-export the scene",
            ) from exc
        valid = np.all(np.isfinite(data), axis=0)
        if masks is not None:
            valid &= np.all(masks > 0, axis=0)
        if self.scene.nodata is not None and math.isfinite(self.scene.nodata):
            valid &= np.all(data != np.float32(self.scene.nodata), axis=0)
        if self._mask_ds is not None:
            valid &= ~self._masked(window)
        data[:, ~valid] = 0.0
        pb, pr = pad
        if pb or pr:
            data = np.pad(data, ((0, 0), (0, pb), (0, pr)), mode="reflect" if min(data.shape[1:]) > 1 else "edge")
            valid = np.pad(valid, ((0, pb), (0, pr)), constant_values=False)
        return data, valid

    def _masked(self, window: Window) -> np.ndarray:
        """Pixels the quality layer marks as fill or as one of the scene's mask classes."""
        from eoseg.products import masked_pixels

        try:
            layer = self._mask_ds.read(window=window)
        except RasterioError as exc:
            raise SceneReadError(f"cannot read the quality layer ({_first_line(exc)})", path=self.scene.path,
                                 fix="re-download the product") from exc
        mask = self.scene.mask
        return masked_pixels(layer, mask.kind, mask.classes, mask.saturation_bits)

    @property
    def block_shape(self) -> tuple[int, int]:
        """(rows, cols) of the storage blocks of the first mapped band: windows aligned to them decode once."""
        return tuple(self._ds.block_shapes[self.scene.band_indexes[0] - 1])

    def strips(self, rows: int | None = None) -> Iterator[Window]:
        """Full-width windows of about a megapixel each, covering the scene top to bottom."""
        rows = rows or max(16, 1_000_000 // max(1, self.scene.width))
        for r0 in range(0, self.scene.height, rows):
            yield Window(0, r0, self.scene.width, min(rows, self.scene.height - r0))


def _masks_say_more(ds: rasterio.io.DatasetReader, scene: Scene) -> bool:
    """Whether GDAL's mask bands add anything to the nodata test :meth:`SceneReader.read` makes itself: not when
    every mapped band's mask is "all valid" or derived from the scene's own nodata value (then reading the masks
    would only test the decoded values against nodata a second time)."""
    for band in scene.band_indexes:
        flags = set(ds.mask_flag_enums[band - 1])
        if flags == {MaskFlags.all_valid}:
            continue
        if flags != {MaskFlags.nodata} or not _same_nodata(ds.nodatavals[band - 1], scene.nodata):
            return True
    return False


def _same_nodata(a: float | None, b: float | None) -> bool:
    """Equal nodata values (NaN equals NaN)."""
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def read_window(scene: Scene, window: Window, pad: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Read one window (opens and closes the file; use :class:`SceneReader` for many windows)."""
    with SceneReader(scene) as reader:
        return reader.read(window, pad)


def _every_kth_valid(scene: Scene, k: int) -> np.ndarray:
    """Every ``k``-th valid pixel in reading order (float64, (C, n)), read strip by strip: memory follows a
    strip and the sample, not the scene."""
    parts: list[np.ndarray] = []
    seen = 0
    with SceneReader(scene) as reader:
        for window in reader.strips():
            data, valid = reader.read(window)
            values = data[:, valid]
            parts.append(values[:, (-seen) % k::k].astype(np.float64))
            seen += values.shape[1]
    return np.concatenate(parts, axis=1)


def check_blocks(scene: Scene) -> bool:
    """Whether every stored block of the mapped bands lies inside the file, from a GeoTIFF's block offsets and
    byte counts (no pixel is decoded): a truncated download fails here, before any model work.

    Raises :class:`SceneReadError` for a block that ends past the end of the file. Returns False when the
    scene is not one GeoTIFF (a product's VRT, another format): then only reading every block can tell.
    """
    if scene.source is not None:
        return False
    try:
        ends = _block_ends(scene)
        size = scene.path.stat().st_size
    except (RasterioError, ValueError, OSError):
        return False  # no block index to check (or not a local file): the full read decides
    if ends is None:
        return False
    for (band, i, j), end in ends.items():
        if end > size:
            raise SceneReadError(f"cannot read pixels (truncated or corrupt file: block {i},{j} of band {band} "
                                 f"ends at byte {end} of {size})", path=scene.path,
                                 fix="re-download or re-export the scene")
    return True


def _block_ends(scene: Scene) -> dict[tuple[int, int, int], int] | None:
    """``{(band, block row, block col): end byte}`` of every stored block of the mapped bands; None when the
    file is not a GeoTIFF. Sparse blocks (offset 0: GDAL fills them) have nothing to read and are left out."""
    with rasterio.open(scene.path) as ds:
        if ds.driver != "GTiff":
            return None
        ends = {}
        for band in sorted(set(scene.band_indexes)):
            rows, cols = ds.block_shapes[band - 1]
            for i in range(math.ceil(ds.height / rows)):
                for j in range(math.ceil(ds.width / cols)):
                    offset = int(ds.get_tag_item(f"BLOCK_OFFSET_{j}_{i}", "TIFF", bidx=band) or 0)
                    if offset:
                        ends[band, i, j] = offset + int(ds.get_tag_item(f"BLOCK_SIZE_{j}_{i}", "TIFF", bidx=band) or 0)
        return ends


def sampled_stats(scene: Scene, windows: int = 4, size: int = 256, stride: int = 2) -> SceneStats | None:
    """Per-band statistics from ``windows`` × ``windows`` windows of ``size`` px spread over the scene (about
    1 MP read, whatever the scene's size), every ``stride``-th row and column of them (percentiles of a
    million values cost more than decoding them); ``valid_fraction`` is the sample's. None when no sampled
    pixel is valid."""
    def starts(length: int, block: int) -> list[int]:  # aligned to the blocks: each is decoded once
        span = min(size, length)
        n = min(windows, max(1, length // span))
        spread = (round(k * (length - span) / max(1, n - 1)) for k in range(n))
        return sorted({s - s % block for s in spread})

    parts, seen = [], 0
    with SceneReader(scene) as reader:
        rows, cols = reader.block_shape
        for r0 in starts(scene.height, rows):
            for c0 in starts(scene.width, cols):
                window = Window(c0, r0, min(size, scene.width), min(size, scene.height))
                data, valid = reader.read(window)
                data, valid = data[:, ::stride, ::stride], valid[::stride, ::stride]
                parts.append(data[:, valid].astype(np.float64))
                seen += valid.size
    sample = np.concatenate(parts, axis=1)
    if sample.shape[1] == 0:
        return None
    return _stats(sample, sample.shape[1] / seen)


def light_preflight(scene: Scene) -> SceneStats:
    """:func:`preflight` for models that need no statistics of the whole scene (reflectance, fixed or
    per-tile standardization): the block index is checked instead of decoding every block, and statistics
    come from a sample (the units check needs its 98th percentiles). Falls back to the full read when the
    scene is not one GeoTIFF or no sampled pixel is valid. The caller counts the valid pixels as it reads
    them (``valid_fraction`` here is the sample's)."""
    if check_blocks(scene):
        stats = sampled_stats(scene)
        if stats is not None:
            return stats
    return preflight(scene)


def _stats(sample: np.ndarray, valid_fraction: float) -> SceneStats:
    p02, p98 = np.percentile(sample, [2, 98], axis=1)
    return SceneStats(
        mean=tuple(float(v) for v in sample.mean(axis=1)),
        std=tuple(float(v) for v in sample.std(axis=1)),
        p02=tuple(float(v) for v in p02),
        p98=tuple(float(v) for v in p98),
        valid_fraction=valid_fraction,
    )


def preflight(scene: Scene, max_samples: int = 1_000_000) -> SceneStats:
    """Read every block of the mapped bands and return per-band statistics of the valid pixels.

    Raises :class:`SceneReadError` for unreadable data and :class:`EmptySceneError` when no pixel is valid.
    Statistics come from a regular sample (every ``step``-th row and column) of at most ``max_samples`` pixels.
    """
    step = max(1, math.ceil(math.sqrt(scene.width * scene.height / max_samples)))
    samples: list[np.ndarray] = []
    valid_count = 0
    with SceneReader(scene) as reader:
        for window in reader.strips():
            data, valid = reader.read(window)
            valid_count += int(valid.sum())
            offset = (-int(window.row_off)) % step
            sub, subvalid = data[:, offset::step, ::step], valid[offset::step, ::step]
            samples.append(sub[:, subvalid])
    if valid_count == 0:
        raise EmptySceneError(
            "has no valid pixels (every pixel is nodata" + (
                f" or masked as fill / {', '.join(scene.mask.classes)} by its quality layer)" if scene.mask else ")"),
            path=scene.path,
            fix="check the nodata value, or choose another scene",
        )
    sample = np.concatenate(samples, axis=1).astype(np.float64)
    if sample.shape[1] == 0:  # valid pixels exist but all fell between sample points
        sample = _every_kth_valid(scene, k=math.ceil(valid_count / max_samples))
    return _stats(sample, valid_count / (scene.width * scene.height))
