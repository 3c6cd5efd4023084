"""predict_scene(): scene → preflight → standardized tiles → batched forward → stitched outputs.

The :class:`Predictor` holds loaded models on a device and the prediction settings; it is reused across
scenes (the batch engine keeps one per worker). :func:`run_tiles` is the I/O-free core loop (tiles in,
finished rows out) that the exactness tests drive directly. It runs as a pipeline of stages joined by
bounded queues (:mod:`eoseg.pipeline`): a reader thread (read, decode, standardize the next block of tiles
while the model runs), the forward pass in the caller's thread (batches of tiles wherever they lie, through
reusable host buffers, :mod:`eoseg.transfer`), blending in a strip held on the model's device
(:class:`eoseg.stitch.StripAccumulator`), and a writer thread that hands finished rows to a list of row sinks
(class COG, probability COG, polygons; :meth:`Predictor._row_sinks` is where a new consumer is added).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window
from tqdm.auto import tqdm

from eoseg.bundle import (
    CARD_FILE,
    DEFAULT_MODEL,
    ModelBundle,
    check_compatible,
    load_bundle,
    packaged_bundles,
    read_card,
    resolve_bundle,
)
from eoseg.classes import NODATA_CLASS, ClassScheme
from eoseg.device import DEVICES, PRECISIONS, autocast_dtype, resolve_device, resolve_precision
from eoseg.errors import BandMappingError, ConfigError, EosegError, PredictionError
from eoseg.grid import Tile, TileGrid, check_tile_size, fit_tile
from eoseg.outputs import plan_outputs
from eoseg.outputs.atomic import OutputPaths, all_or_nothing, aux_path
from eoseg.outputs.cog import RasterSink
from eoseg.outputs.qgis import raster_qml, write_qml
from eoseg.outputs.stac import write_stac_item
from eoseg.outputs.vectors import PolygonWriter
from eoseg.pipeline import Channel, Stages
from eoseg.process import block_rows_cache_bytes, keep_freed_memory_mapped  # noqa: F401  (moved; old imports work)
from eoseg.products import product_info, scene_quality, stac_properties
from eoseg.radiometry import Scaling, check_reflectance_range, scene_scaling
from eoseg.scene import Scene, SceneReader, light_preflight, map_bands, open_scene, preflight
from eoseg.shoreline import METHODS as SHORELINE_METHODS
from eoseg.shoreline import index_shoreline, shoreline_writer, water_probability
from eoseg.standardize import Standardization, fill_invalid
from eoseg.stitch import RowSink, StripAccumulator
from eoseg.transfer import DeviceOps, HostBatches, device_ops

log = logging.getLogger(__name__)

TTA_MODES = ("none", "flip", "d4")


@dataclass(frozen=True)
class PredictSettings:
    """Everything that changes a prediction (recorded in batch completion records)."""

    tile_size: int | None = None  # None: the model card's default
    overlap: int | None = None
    batch_size: int = 4
    device: str = "auto"
    precision: str = "auto"
    tta: str = "none"
    probabilities: bool = False
    bands: tuple[int, ...] | None = None
    min_area: float = 0.0  # m², polygons smaller than this are sieved away
    simplify: float = 0.0  # CRS units
    overwrite: bool = False
    allow_ungeoreferenced: bool = False
    scale: float | None = None  # reflectance = value × scale + offset (overrides the scaling read from metadata)
    offset: float | None = None
    mask: str = "clouds,shadow"  # product inputs: quality-layer classes made nodata (eoseg.products.parse_mask)
    shoreline: bool = False  # also write <stem>_shoreline.gpkg (eoseg.shoreline)
    shoreline_method: str = "prob"
    min_shoreline_length: float = 100.0  # m, shorter shoreline lines are dropped
    compile: bool = False  # torch.compile the model(s): a one-time warm-up per tile shape

    def __post_init__(self) -> None:
        from eoseg.products import parse_mask

        parse_mask(self.mask)
        for name, value, allowed in (("device", self.device, DEVICES), ("precision", self.precision, PRECISIONS),
                                     ("tta", self.tta, TTA_MODES),
                                     ("shoreline-method", self.shoreline_method, SHORELINE_METHODS)):
            if value not in allowed:
                raise ConfigError(f"unknown {name} {value!r}", path=f"--{name}",
                                  fix=f"use one of: {', '.join(allowed)}")
        if self.batch_size < 1:
            raise ConfigError("batch size must be at least 1", path="--batch-size", fix="use e.g. --batch-size 4")

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class SceneResult:
    scene: Path
    outputs: dict[str, Path]
    height: int
    width: int
    tiles: int
    tiles_skipped: int
    seconds: float
    device: str
    precision: str
    bands: tuple[dict, ...] = ()  # Scene.band_mapping: {role, band, description} per model band
    scaling: dict | None = None  # the reflectance scaling applied (reflectance standardization)
    quality: dict | None = None  # valid / cloud fractions (eoseg.products.scene_quality)
    product: dict | None = None  # archive product inputs: id, sensor, datetime (eoseg.products.product_info)
    stage_cpu_seconds: dict = field(default_factory=dict)  # CPU seconds of each pipeline stage (run_tiles)

    @property
    def megapixels_per_second(self) -> float:
        return self.height * self.width / 1e6 / max(self.seconds, 1e-9)

    def summary(self) -> str:
        out_dir = self.outputs["classes"].parent
        return (f"{self.scene.name}: {self.width}×{self.height} px, {self.tiles} tiles ({self.tiles_skipped} empty "
                f"skipped), {self.seconds:.1f} s, {self.megapixels_per_second:.2f} MP/s on {self.device}/"
                f"{self.precision} → {len(self.outputs)} outputs in {out_dir}/; bands "
                + " ".join(f"{b['role']}={b['band']}:{b['description'] or '?'}" for b in self.bands)
                + (f"; reflectance ×{_short(self.scaling['scale'])} +{_short(self.scaling['offset'])} "
                   f"({self.scaling['source']})" if self.scaling else "")
                + _quality_text(self.quality))


def _quality_text(quality: dict | None) -> str:
    if not quality or quality.get("valid_fraction") is None:
        return ""
    cloud = quality.get("cloud_fraction")
    return f"; valid {quality['valid_fraction']:.1%}" + (f", cloud {cloud:.1%}" if cloud is not None else "")


def _short(values: Sequence[float]) -> str:
    unique = sorted(set(values))
    return f"{unique[0]:.4g}" if len(unique) == 1 else "[" + ",".join(f"{v:.4g}" for v in values) + "]"


# ---------------------------------------------------------------------------------------------- forward


def _tta_transforms(mode: str) -> list[tuple[Callable, Callable]]:
    """(forward, inverse) pairs on NCHW tensors."""
    ident = (lambda t: t, lambda t: t)
    if mode == "none":
        return [ident]
    flips = [ident, (lambda t: t.flip(-1), lambda t: t.flip(-1)), (lambda t: t.flip(-2), lambda t: t.flip(-2))]
    if mode == "flip":
        return flips
    d4 = []
    for k in range(4):
        for flip in (False, True):
            def fwd(t, k=k, flip=flip):
                return torch.rot90(t.flip(-1) if flip else t, k, dims=(-2, -1))

            def inv(t, k=k, flip=flip):
                t = torch.rot90(t, -k, dims=(-2, -1))
                return t.flip(-1) if flip else t

            d4.append((fwd, inv))
    return d4


def _on_device(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device`` in eval mode and channels_last; a model on another device is copied, not moved
    (it may be a cached bundle's model that other users hold)."""
    def elsewhere(t: torch.Tensor) -> bool:
        return t.device.type != device.type or (device.index is not None and t.device.index != device.index)

    if any(elsewhere(t) for t in [*model.parameters(), *model.buffers()]):
        model = copy.deepcopy(model)
    return model.to(device).eval().to(memory_format=torch.channels_last)


class Forward:
    """Batched softmax forward of one model or an ensemble, with TTA, autocast and channels_last.

    Under reduced precision (fp16 overflows above 65504) a batch whose logits are not all finite is run again
    in fp32, with a warning, instead of letting NaN reach ``argmax`` (where it becomes class 0).
    """

    def __init__(self, models: Sequence[torch.nn.Module], device: torch.device, precision: str = "fp32",
                 tta: str = "none", *, compile: bool | str = False, tta_one_batch: bool | None = None):
        self.device = device
        self.precision = precision
        self.transforms = _tta_transforms(tta)
        self.models = [_on_device(m, device) for m in models]
        # TTA views of a batch in one forward pass where the device has room for it (a GPU; on the CPU the
        # activations of 8 views at once would multiply the memory for no gain in speed)
        self.tta_one_batch = device.type == "cuda" if tta_one_batch is None else tta_one_batch
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # kernels chosen once per input shape (the tile's, see warm_up)
        if compile:
            backend = compile if isinstance(compile, str) else "inductor"
            self.models = [torch.compile(m, backend=backend, dynamic=False) for m in self.models]
        self.fp32_reruns = 0
        self._warm: dict[tuple[int, ...], float] = {}  # input shapes already run → seconds of their first run

    def warm_up(self, batch_size: int, channels: int, tile_shape: tuple[int, int]) -> float:
        """One forward pass of a full batch at ``tile_shape`` unless that shape ran already; its seconds."""
        shape = (batch_size, channels, *tile_shape)
        if shape in self._warm:
            return 0.0
        start = time.perf_counter()
        self.probabilities(np.zeros(shape, np.float32))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._warm[shape] = time.perf_counter() - start
        return self._warm[shape]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 standardized → (N, K, H, W) float32 probabilities."""
        return self.probabilities(batch).cpu().numpy()

    def probabilities(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """:meth:`__call__` with the probabilities left on the model's device (the predict loop blends there).
        ``batch`` may already be a tensor on the device (the predict loop copies it there itself)."""
        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))
        if x.device != self.device:
            x = x.to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        dtype = autocast_dtype(self.precision)
        probs = self._probabilities(x, dtype)
        if probs is None and dtype is not None:
            self.fp32_reruns += 1
            log.warning("non-finite logits under %s autocast in a batch of %d tile(s); running it again in fp32",
                        self.precision, x.shape[0])
            probs = self._probabilities(x, None)
        if probs is None:
            raise PredictionError("the model gives non-finite (NaN or infinite) logits in fp32", path="--model",
                                  fix="check the model's weights (retrain or re-save the bundle)")
        return probs

    def _probabilities(self, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor | None:
        """Mean softmax over models and TTA transforms; None when any logit is not finite."""
        total = None
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            finite = torch.ones((), dtype=torch.bool, device=x.device)
            for model in self.models:
                for inv, logits in self._view_logits(model, x):
                    logits = logits.float()
                    finite = finite & torch.isfinite(logits).all()
                    probs = inv(torch.softmax(logits, dim=1))
                    total = probs if total is None else total + probs
        if not bool(finite):  # one device sync per batch
            return None
        return total / (len(self.models) * len(self.transforms))

    def _view_logits(self, model: torch.nn.Module, x: torch.Tensor) -> Iterator[tuple[Callable, torch.Tensor]]:
        """(inverse transform, logits) of each TTA view of ``x``; the views in one batch where that is on and
        they share a shape (a non-square tile's rotations do not)."""
        views = [fwd(x) for fwd, _ in self.transforms]
        inverses = [inv for _, inv in self.transforms]
        if self.tta_one_batch and len(views) > 1 and len({v.shape for v in views}) == 1:
            logits = model(torch.cat(views).contiguous(memory_format=torch.channels_last))
            yield from zip(inverses, logits.split(x.shape[0]), strict=True)
            return
        for inv, view in zip(inverses, views, strict=True):
            yield inv, model(view)


# ---------------------------------------------------------------------------------------------- core loop


TileReader = Callable[[Tile], tuple[np.ndarray, np.ndarray]]  # tile → (standardized (C,H,W), valid (H,W))
QUEUE_DEPTH = 2  # batches between the forward pass and blending, and finished row blocks before the writer
READ_BLOCK_TILES = 4  # tiles the reader reads at once (a block of columns of a tile row; see strip_tile_reader)


@dataclass
class TileCounts:
    total: int = 0
    skipped: int = 0
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per pipeline stage (the forward: the caller's)
    valid_pixels: int = 0  # pixels written with a class (not nodata): the scene's valid pixels


@dataclass
class _TileBlock:
    """Up to ``READ_BLOCK_TILES`` tiles of one tile row as the reader hands them on: the non-empty ones, read
    and standardized, and how many there were."""

    tiles: list[tuple[Tile, np.ndarray, np.ndarray]]
    total: int


def run_tiles(
    grid: TileGrid,
    read_tile: TileReader,
    forward: Callable[[np.ndarray], np.ndarray | torch.Tensor],
    num_classes: int,
    on_rows: RowSink | Sequence[RowSink],
    *,
    batch_size: int = 4,
    probabilities: str | None = None,
    progress: tqdm | None = None,
    device: torch.device | str | None = None,
    depth: int = QUEUE_DEPTH,
    ops: DeviceOps | None = None,
) -> TileCounts:
    """Predict every tile of ``grid`` and hand finished rows, in order (top to bottom), to each row sink.

    A pipeline (see :mod:`eoseg.pipeline`): a reader thread reads and standardizes the next tiles while
    the model runs; the forward pass runs in the caller's thread on batches of ``batch_size`` tiles, wherever
    they lie (batches span tile rows); a blending thread sums them into a :class:`StripAccumulator` on the
    model's device; a writer thread hands each finished block of rows to every sink of ``on_rows`` in turn
    (``sink(row_off, classes uint8 (n, W), probabilities (K, n, W) or None)``). The first error of any stage
    stops the others and is raised here. ``probabilities``: ``None``, ``"float32"`` or ``"uint8"`` (what the
    sinks get). ``forward`` returns probabilities as an array or a
    tensor (a :class:`Forward` keeps them on its device). ``ops``: the device's streams and events (default:
    :func:`eoseg.transfer.device_ops`; tests pass a fake device).
    """
    sinks = [on_rows] if callable(on_rows) else list(on_rows)
    device = torch.device(device if device is not None else getattr(forward, "device", "cpu"))
    feed = _Feed(forward, HostBatches(ops or device_ops(device), batch_size))
    counts = TileCounts()
    with Stages(background=device.type == "cpu") as stages:  # a CPU model keeps the cores it needs
        # the reader runs a batch ahead: it reads blocks of up to READ_BLOCK_TILES tiles until a batch's worth
        # of tiles is queued (counted in tiles, so a row's narrow last block does not stall the model)
        tile_blocks = stages.channel(batch_size, weight=lambda block: block.total)
        batches, finished = stages.channel(depth), stages.channel(depth)
        acc = StripAccumulator(grid, num_classes, lambda *rows: finished.put(rows), device=device,
                               probabilities=probabilities)
        stages.start("reader", _read_blocks, grid, read_tile, tile_blocks, counts)
        stages.start("blend", _blend, acc, batches, finished)
        stages.start("writer", _write_rows, finished, sinks)
        pending: list[tuple[Tile, np.ndarray, np.ndarray]] = []
        start = time.thread_time()
        for item in tile_blocks:
            for tile in item.tiles:
                pending.append(tile)
                if len(pending) == batch_size:
                    feed.run(pending, batches, progress)
            if progress is not None and item.total > len(item.tiles):
                progress.update(item.total - len(item.tiles))
        feed.run(pending, batches, progress)
        batches.close()
        counts.cpu_seconds["forward"] = time.thread_time() - start
    counts.cpu_seconds |= stages.cpu_seconds
    return counts


def _read_blocks(grid: TileGrid, read_tile: TileReader, out: Channel, counts: TileCounts) -> None:
    """Reader stage: the non-empty tiles of each block of a tile row; a block is read only once there is room
    for it in the channel (so at most the channel's depth plus the consumer's block are held)."""
    for row in range(grid.shape[0]):
        row_tiles = grid.row_tiles(row)
        for b0 in range(0, len(row_tiles), READ_BLOCK_TILES):
            block = row_tiles[b0:b0 + READ_BLOCK_TILES]
            out.wait_for_room()
            tiles = [(tile, x, valid) for tile in block for x, valid in [read_tile(tile)] if valid.any()]
            counts.total += len(block)
            counts.skipped += len(block) - len(tiles)
            out.put(_TileBlock(tiles, len(block)))
    out.close()


@dataclass
class _Feed:
    """Forward stage: batches of tiles (from one or more tile rows) through reusable host buffers to the model;
    their probabilities and validity, on the model's device, go on to blending."""

    forward: Callable
    host: HostBatches

    def run(self, pending: list, out: Channel, progress: tqdm | None) -> None:
        if not pending:
            return
        x, valid = self.host.load([(x, v) for _, x, v in pending])
        n = len(pending)
        if hasattr(self.forward, "probabilities"):  # a Forward: the batch stays on its device
            probs = self.forward.probabilities(x)
        else:  # any callable on arrays (tests, benchmarks)
            probs = torch.as_tensor(self.forward(x.cpu().numpy()[:n]), device=valid.device)
        out.put(([tile for tile, _, _ in pending], probs[:n], valid[:n]))
        if progress is not None:
            progress.update(n)
        pending.clear()


def _blend(acc: StripAccumulator, batches: Channel, finished: Channel) -> None:
    """Blending stage: tiles into the strip in grid order; finished rows go on to the writer. On the CPU it
    blends on one core (a thread's own OpenMP setting): the model's threads keep theirs."""
    if acc.device.type == "cpu":
        torch.set_num_threads(1)
    for tiles, probs, valid in batches:
        for tile, p, v in zip(tiles, probs, valid, strict=True):
            acc.add_in_order(tile, p, v)
    acc.finish()
    finished.close()


def _write_rows(finished: Channel, sinks: Sequence[RowSink]) -> None:
    """Writer stage: every finished block of rows to every sink, in order."""
    for row_off, classes, probs in finished:
        for sink in sinks:
            sink(row_off, classes, probs)


STANDARDIZE_COLUMNS = 512  # strip columns standardized at a time: temporaries stay a tile wide, not a scene wide


def standardize_in_place(standardization: Standardization, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Apply a per-pixel standardization to a strip (C, H, W) column block by column block, into ``data``.

    A full-width strip of a wide scene is tens of MB per band; the transform's temporaries (scaling, clipping,
    z-score) are made per block, so they do not grow with the scene's width. Invalid pixels are filled once
    over the whole strip (:func:`~eoseg.standardize.fill_invalid`), so the fill does not depend on the blocks.
    """
    for c0 in range(0, data.shape[2], STANDARDIZE_COLUMNS):
        cols = slice(c0, c0 + STANDARDIZE_COLUMNS)
        data[:, :, cols] = standardization.transform(data[:, :, cols], valid[:, cols])
    return fill_invalid(data, valid)


def strip_tile_reader(reader: SceneReader, grid: TileGrid, standardization: Standardization,
                      block_tiles: int = READ_BLOCK_TILES) -> TileReader:
    """Reads each tile row once as a strip and cuts tiles from it (overlaps are not read twice).

    ``block_tiles``: the strip is read ``block_tiles`` tiles at a time (a block of columns; default
    :data:`READ_BLOCK_TILES`; 0 for the whole width), so what is held does not grow with the scene's
    width; only the overlap between two blocks is read twice. Per-pixel standardizations are applied once to
    each block; Gym's ``image`` mode depends on the tile's own statistics and is applied per tile.
    """
    cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, int]] = {}
    per_tile = standardization.mode == "image"
    cols = grid.col_offsets
    per_block = block_tiles or len(cols)

    def read_tile(tile: Tile) -> tuple[np.ndarray, np.ndarray]:
        key = (tile.row, tile.col // per_block)
        if key not in cache:
            cache.clear()
            first, last = key[1] * per_block, min(len(cols), (key[1] + 1) * per_block) - 1
            c0, c1 = cols[first], cols[last] + tile.width
            window = Window(c0, tile.row_off, c1 - c0, tile.height)
            pad_right = tile.pad_right if last == len(cols) - 1 else 0
            data, valid = reader.read(window, pad=(tile.pad_bottom, pad_right))
            cache[key] = (data if per_tile else standardize_in_place(standardization, data, valid)), valid, c0
        data, valid, c0 = cache[key]
        span = slice(tile.col_off - c0, tile.col_off - c0 + tile.size[1])
        x, v = data[:, :, span], valid[:, span]
        return (standardization.apply(x, v) if per_tile else x), v

    return read_tile


# ---------------------------------------------------------------------------------------------- predictor


def band_labels(scene: Scene) -> list[str]:
    """``nir (band 4)`` for each band fed to the model, in model order."""
    return [f"{role} (band {index})" for role, index in zip(scene.roles, scene.band_indexes, strict=True)]


class Predictor:
    """Loaded model(s) on a device plus settings; call :meth:`predict` once per scene."""

    def __init__(self, models: str | Path | ModelBundle | Sequence[str | Path | ModelBundle],
                 settings: PredictSettings | None = None):
        self.settings = settings or PredictSettings()
        items = [models] if isinstance(models, str | Path | ModelBundle) else list(models)
        if not items:
            raise ConfigError("no model given", path="--model", fix="pass --model resunet (or a bundle path)")
        self.device = resolve_device(self.settings.device)
        self.precision = resolve_precision(self.settings.precision, self.device)
        self.bundles = [m if isinstance(m, ModelBundle) else load_bundle(m, device=self.device) for m in items]
        check_compatible(self.bundles)
        self.card = self.bundles[0].card
        self.scheme: ClassScheme = self.card.scheme
        self.standardization = Standardization.from_dict(self.card.standardization)
        self.tile_size = self.settings.tile_size or self.card.tile_size
        self.overlap = self.settings.overlap if self.settings.overlap is not None else self.card.overlap
        check_tile_size(self.tile_size, self.overlap)
        if not self.standardization.needs_scaling and (self.settings.scale, self.settings.offset) != (None, None):
            raise ConfigError(f"--scale / --offset apply to reflectance models; {self.card.name!r} uses "
                              f"{self.standardization.mode!r} standardization", path="--scale",
                              fix="drop --scale / --offset, or use a model trained on reflectance")
        self.forward = Forward([b.model for b in self.bundles], self.device, self.precision, self.settings.tta,
                               compile=self.settings.compile)

    def warm_up(self, tile_shape: tuple[int, int]) -> float:
        """A first forward pass at ``tile_shape`` (once per shape; seconds it took, 0 when already warm):
        oneDNN / cuDNN pick their kernels, and a compiled model compiles, before a scene's clock starts.

        Done at the first scene's own tile shape, not the card's: a small scene gets small tiles, and a
        warm-up at 512 px would cost more than predicting it (start-up time).
        """
        warm_up = getattr(self.forward, "warm_up", None)  # None: a plain callable put in its place (tests)
        seconds = warm_up(self.settings.batch_size, len(self.card.bands), tile_shape) if warm_up else 0.0
        if seconds:
            log.info("warm-up at %d×%d px tiles%s: %.1f s", *tile_shape,
                     " (torch.compile)" if self.settings.compile else "", seconds)
        return seconds

    @property
    def model_hash(self) -> str:
        return "+".join(b.sha256 for b in self.bundles)

    def open(self, path: str | Path) -> Scene:
        """Open a scene and map its bands to the model's; a mapping failure names the packaged models that fit."""
        try:
            return open_scene(path, roles=self.card.bands, bands=self.settings.bands,
                              allow_ungeoreferenced=self.settings.allow_ungeoreferenced, mask=self.settings.mask)
        except BandMappingError as exc:
            fitting = [] if self.settings.bands is not None else models_for_scene(path)
            if not fitting:
                raise
            use = " or ".join(f"--model {name} ({', '.join(bands)})" for name, bands in fitting)
            raise BandMappingError(exc.problem, path=exc.path, fix=f"use {use} or {exc.fix}") from None

    def predict(self, path: str | Path, out_dir: str | Path, *, progress: bool | None = None,
                stem: str | None = None) -> SceneResult:
        """Segment one scene. Process-wide tuning (GDAL's block cache, glibc's malloc) is not touched here:
        programs opt into it once with :func:`eoseg.process.tune_process` (the CLI and batch workers do)."""
        return self._predict(path, out_dir, progress=progress, stem=stem)

    def _predict(self, path: str | Path, out_dir: str | Path, *, progress: bool | None,
                 stem: str | None) -> SceneResult:
        scene = self.open(path)
        grid = self.scene_grid(scene)
        self.warm_up(grid.tile(0, 0).size)
        start = time.perf_counter()
        paths = plan_outputs(Path(out_dir), stem or scene.stem, probabilities=self.settings.probabilities,
                             overwrite=self.settings.overwrite, shoreline=self.settings.shoreline)
        scaling = self._scaling(scene)  # before preflight: unknown units fail before the scene is read
        # a model that needs the whole scene's statistics reads every block first; the others check the block
        # index and a sample, and count the valid pixels as the pipeline reads them
        stats = preflight(scene) if self.standardization.needs_scene_stats else light_preflight(scene)
        standardization = self._standardization(scene, stats, scaling)
        show = sys.stderr.isatty() if progress is None else progress
        with all_or_nothing(_attempt_files(paths)), tqdm(total=len(grid), unit="tile", desc=scene.path.name,
                                                         disable=not show, leave=False) as bar:
            counts = self._write_rasters(scene, grid, standardization, paths, bar)
            quality = scene_quality(scene, counts.valid_pixels / (scene.width * scene.height))
            if paths.shoreline is not None and self.settings.shoreline_method == "index":
                index_shoreline(scene, paths.classes, paths.shoreline, self.scheme, scale=self.settings.scale,
                                offset=self.settings.offset, min_length_m=self.settings.min_shoreline_length)
            outputs = self._finish_outputs(scene, paths, scaling, quality)
        return SceneResult(scene=scene.path, outputs=outputs, height=scene.height, width=scene.width,
                           tiles=counts.total, tiles_skipped=counts.skipped,
                           seconds=time.perf_counter() - start, device=str(self.device), precision=self.precision,
                           bands=tuple(scene.band_mapping), scaling=scaling.to_dict() if scaling else None,
                           quality=quality, product=product_info(scene),
                           stage_cpu_seconds=counts.cpu_seconds)

    def scene_grid(self, scene: Scene) -> TileGrid:
        """The tiles this predictor cuts ``scene`` into (the card's size, or the scene's short side if smaller)."""
        size, overlap = fit_tile(scene.height, scene.width, self.tile_size, self.overlap)
        return TileGrid(scene.height, scene.width, size, overlap, scene.transform, scene.crs)

    def scene_standardization(self, scene: Scene) -> Standardization:
        """What this predictor applies to ``scene``'s values: scene statistics and reflectance scaling filled in."""
        scaling = self._scaling(scene)
        return self._standardization(scene, preflight(scene), scaling)

    def _standardization(self, scene: Scene, stats, scaling: Scaling | None) -> Standardization:
        if scaling is not None:
            check_reflectance_range(scaling, stats.p98, scene.path)
        return self.standardization.for_stats(stats, names=band_labels(scene)).with_scaling(scaling)

    def _scaling(self, scene: Scene) -> Scaling | None:
        """The scene's values → reflectance, for models that take reflectance (None for the other modes)."""
        if not self.standardization.needs_scaling:
            return None
        return scene_scaling(scene, self.settings.scale, self.settings.offset)

    def _write_rasters(self, scene: Scene, grid: TileGrid, standardization: Standardization, paths,
                       bar: tqdm) -> TileCounts:
        with contextlib.ExitStack() as stack, SceneReader(scene) as reader:
            sinks, probabilities = self._row_sinks(stack, scene, standardization, paths)
            valid = [0]

            def count_valid(row_off: int, classes: np.ndarray, probs: np.ndarray | None) -> None:
                valid[0] += int(np.count_nonzero(classes != NODATA_CLASS))

            counts = run_tiles(grid, strip_tile_reader(reader, grid, standardization), self.forward,
                               len(self.scheme), [*sinks, count_valid], batch_size=self.settings.batch_size,
                               probabilities=probabilities, progress=bar)
            counts.valid_pixels = valid[0]
            return counts

    def _row_sinks(self, stack: contextlib.ExitStack, scene: Scene, standardization: Standardization,
                   paths) -> tuple[list[RowSink], str | None]:
        """The consumers of the finished rows, run in order in the writer thread: the class COG, the
        probability COG (uint8, when asked) and the streamed polygons. Each is ``sink(row_off, classes,
        probs)``; a new consumer is one more entered context and one more entry. Returns the sinks and
        the probabilities' dtype they need (``None``: none; ``"float32"`` for the shoreline's contour)."""
        common = dict(width=scene.width, height=scene.height, crs=scene.crs, transform=scene.transform,
                      scheme=self.scheme, tags=input_tags(scene, standardization))
        classes_sink = stack.enter_context(RasterSink(paths.classes, count=1, dtype="uint8", nodata=NODATA_CLASS,
                                                      kind="classes", **common))
        polygons = stack.enter_context(PolygonWriter(paths.polygons, scene.shape, scene.transform, scene.crs,
                                                     self.scheme, min_area_m2=self.settings.min_area,
                                                     simplify=self.settings.simplify))

        def classes_rows(row_off: int, classes: np.ndarray, probs: np.ndarray | None) -> None:
            classes_sink.write(classes[np.newaxis], Window(0, row_off, scene.width, classes.shape[0]))

        def polygon_rows(row_off: int, classes: np.ndarray, probs: np.ndarray | None) -> None:
            polygons.write_rows(classes)

        sinks: list[RowSink] = [classes_rows, polygon_rows]
        if paths.probs is not None:
            probs_sink = stack.enter_context(RasterSink(paths.probs, count=len(self.scheme), dtype="uint8",
                                                        nodata=None, kind="probs", **common))

            def probability_rows(row_off: int, classes: np.ndarray, probs: np.ndarray | None) -> None:
                probs_sink.write(probs if probs.dtype == np.uint8 else to_uint8(probs),
                                 Window(0, row_off, scene.width, classes.shape[0]))

            sinks.insert(1, probability_rows)
        shoreline = stack.enter_context(shoreline_writer(
            paths.shoreline, scene, self.scheme, method=self.settings.shoreline_method,
            min_length_m=self.settings.min_shoreline_length))
        if shoreline is not None:

            def shoreline_rows(row_off: int, classes: np.ndarray, probs: np.ndarray | None) -> None:
                shoreline.write_rows(classes, water_probability(probs, self.scheme))

            sinks.append(shoreline_rows)
        # the shoreline's sub-pixel contour wants float probabilities; the probability COG stores uint8
        wanted = "float32" if shoreline is not None else ("uint8" if paths.probs is not None else None)
        return sinks, wanted

    def _finish_outputs(self, scene: Scene, paths, scaling: Scaling | None = None,
                        quality: dict | None = None) -> dict[str, Path]:
        outputs = {"classes": paths.classes}
        write_qml(paths.qml, raster_qml(self.scheme))
        outputs["style"] = paths.qml
        if paths.probs is not None:
            outputs["probabilities"] = paths.probs
        outputs["polygons"] = paths.polygons  # streamed from the finished rows by _write_rasters
        if paths.shoreline is not None:
            outputs["shoreline"] = paths.shoreline
        write_stac_item(paths.stac, scene_path=scene.path, item_id=scene.stem, outputs=dict(outputs),
                        crs=scene.crs, transform=scene.transform, shape=scene.shape, scheme=self.scheme,
                        datetime=getattr(scene.product, "datetime", None),
                        properties={"eoseg:model": self.card.name, "eoseg:model_sha256": self.model_hash,
                                    "eoseg:bands": scene.band_mapping,
                                    "eoseg:standardization": self.standardization.mode,
                                    "eoseg:scaling": scaling.to_dict() if scaling else None,
                                    **stac_properties(scene, quality)})
        outputs["stac"] = paths.stac
        return outputs


def models_for_scene(path: str | Path) -> list[tuple[str, tuple[str, ...]]]:
    """``(name, bands)`` of the packaged bundles whose band roles the scene has, most bands first.

    For the fix of a band-mapping error: a scene without SWIR gets pointed to the RGB bundle.
    """
    try:
        roles = open_scene(path, allow_ungeoreferenced=True).roles
    except EosegError:
        return []
    fitting = []
    for name in packaged_bundles():
        try:
            bands = read_card(resolve_bundle(name) / CARD_FILE).bands
            map_bands(roles, bands, Path(path))
        except EosegError:  # an unreadable card, or bands the scene lacks
            continue
        fitting.append((name, bands))
    return sorted(fitting, key=lambda nb: (-len(nb[1]), nb[0] != DEFAULT_MODEL, nb[0]))


def to_uint8(probs: np.ndarray) -> np.ndarray:
    """Probabilities (0–1) as the probability COG stores them: × 255, rounded half to even (as blending does)."""
    return np.clip(np.rint(probs * 255), 0, 255).astype(np.uint8)


def input_tags(scene: Scene, standardization: Standardization) -> dict[str, str]:
    """Raster tags recording what the model read: the band mapping, standardization and reflectance scaling."""
    tags = {"eoseg_bands": json.dumps(scene.band_mapping), "eoseg_standardization": standardization.mode}
    if standardization.scaling is not None:
        tags["eoseg_scaling"] = json.dumps(standardization.scaling.to_dict())
    return tags


def _attempt_files(paths: OutputPaths) -> list[Path]:
    """Every final file one scene's attempt may write (the probabilities' sidecar too, when GDAL makes one)."""
    return [*paths.files(), *([aux_path(paths.probs)] if paths.probs is not None else [])]


def predict_scene(scene: str | Path, model: str | Path | ModelBundle | Sequence = DEFAULT_MODEL,
                  out_dir: str | Path = ".", *, progress: bool | None = None, **settings) -> SceneResult:
    """Segment one scene and write its outputs into ``out_dir``; ``settings`` are :class:`PredictSettings`."""
    return Predictor(model, PredictSettings(**settings)).predict(scene, out_dir, progress=progress)


__all__ = ["Forward", "PredictSettings", "Predictor", "SceneResult", "predict_scene",
           "run_tiles"]
