"""Quicklook PNG: the scene in true colour beside its class map, with a legend."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from eoseg.classes import ClassScheme
from eoseg.errors import BandMappingError
from eoseg.outputs.atomic import atomic_write
from eoseg.scene import open_scene

MAX_SIDE = 1200


def _decimated_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    factor = max(1, math.ceil(max(height, width) / max_side))
    return max(1, height // factor), max(1, width // factor)


def true_colour(scene_path: Path, shape: tuple[int, int], bands: tuple[int, ...] | None = None,
                roles: tuple[str, str, str] = ("red", "green", "blue"), window=None) -> np.ndarray:
    """(H, W, 3) floats in 0..1: red, green, blue (or other ``roles``) stretched between their 2nd and 98th
    percentiles; of the whole scene, or of a ``window`` of it."""
    scene = open_scene(scene_path, roles=roles, bands=bands, allow_ungeoreferenced=True)
    with rasterio.open(scene_path) as ds:
        data = ds.read(list(scene.band_indexes), out_shape=(3, *shape), resampling=Resampling.nearest,
                       out_dtype="float32", window=window)
        masks = ds.read_masks(list(scene.band_indexes), out_shape=(3, *shape), resampling=Resampling.nearest,
                              window=window)
    valid = (masks > 0).all(axis=0) & np.isfinite(data).all(axis=0)
    rgb = np.zeros((*shape, 3), np.float32)
    if valid.any():
        for i in range(3):
            lo, hi = np.percentile(data[i][valid], [2, 98])
            rgb[..., i] = np.clip((data[i] - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb[~valid] = 0
    return rgb


def _false_colour(scene_path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """SWIR1 / NIR / red as (H, W, 3), or None when the scene lacks those bands."""
    try:
        return true_colour(scene_path, shape, roles=("swir1", "nir", "red"))
    except BandMappingError:
        return None


def class_image(classes: np.ndarray, scheme: ClassScheme) -> np.ndarray:
    """(H, W, 4) RGBA floats from class ids; nodata transparent."""
    lut = np.zeros((256, 4), np.float32)
    for cid, colour in scheme.colormap().items():
        lut[cid] = np.array(colour, np.float32) / 255
    return lut[classes]


def write_quicklook(scene_path: str | Path, classes_path: str | Path, png_path: str | Path, scheme: ClassScheme,
                    *, title: str | None = None, bands: tuple[int, ...] | None = None,
                    max_side: int = MAX_SIDE) -> Path:
    """Write a PNG with the true-colour scene, a SWIR1/NIR/red false colour (when the scene has those bands: sand
    is bright pink, surf cyan, vegetation green, water dark), the classes, and a class legend."""
    scene_path, png_path = Path(scene_path), Path(png_path)
    with rasterio.open(classes_path) as ds:
        shape = _decimated_shape(ds.height, ds.width, max_side)
        classes = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
    panels = [("true colour", true_colour(scene_path, shape, bands))]
    false = _false_colour(scene_path, shape) if bands is None else None
    if false is not None:
        panels.append(("false colour: SWIR1, NIR, red", false))
    panels.append(("eoseg classes", class_image(classes, scheme)))
    fig, axes = panel_figure(panels, shape)
    finish_figure(fig, png_path, scheme, title or scene_path.name, nodata_label="nodata")
    return png_path


def panel_figure(panels: list[tuple[str, np.ndarray]], shape: tuple[int, int]):
    """A figure with one image panel per ``(title, image)``, side by side, without ticks (the last panel, the
    classes, on a dark background). No pyplot: the caller's matplotlib backend is left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    aspect = min(max(shape[1] / shape[0], 0.25), 2.5)  # width / height of one panel
    panel_h = 5.0
    fig_w = max(len(panels) * panel_h * aspect + 1.0, 7.5)  # wide enough for titles and the legend
    fig = Figure(figsize=(fig_w, panel_h + 1.2), dpi=110)
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    axes[-1].set_facecolor("#303030")
    for ax, (name, image) in zip(axes, panels, strict=True):
        ax.imshow(image)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def finish_figure(fig, png_path: Path, scheme: ClassScheme, title: str, nodata_label: str) -> None:
    """Add the class legend and the title, and write the PNG atomically."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=np.array(c.colour) / 255, edgecolor="black", label=c.name) for c in scheme.classes]
    handles.append(Patch(facecolor="#303030", edgecolor="black", label=nodata_label))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    with atomic_write(png_path) as tmp:
        fig.savefig(tmp, format="png")


def write_shoreline_quicklook(scene_path: str | Path, shoreline_path: str | Path, png_path: str | Path, *,
                              classes_path: str | Path | None = None, transects_path: str | Path | None = None,
                              scheme: ClassScheme | None = None, title: str | None = None,
                              bands: tuple[int, ...] | None = None, window: Window | None = None,
                              max_side: int = MAX_SIDE) -> Path:
    """A PNG of the shoreline (red) over the true-colour scene, beside the classes when ``classes_path`` is given;
    transects (yellow, a dot at the origin) when ``transects_path`` is given. ``window``: a part of the scene."""
    import shapely

    from eoseg.outputs.shoreline import read_lines

    scene_path, png_path = Path(scene_path), Path(png_path)
    with rasterio.open(scene_path) as ds:
        window = window or Window(0, 0, ds.width, ds.height)
        transform, crs = ds.transform, ds.crs
    full = (int(window.height), int(window.width))
    shape = _decimated_shape(*full, max_side)
    panels = [("true colour + shoreline", true_colour(scene_path, shape, bands, window=window))]
    if classes_path is not None and scheme is not None:
        with rasterio.open(classes_path) as ds:
            panels.append(("eoseg classes + shoreline", class_image(
                ds.read(1, out_shape=shape, resampling=Resampling.nearest, window=window), scheme)))
    fig, axes = panel_figure(panels, shape)
    sy, sx = shape[0] / full[0], shape[1] / full[1]
    inverse = ~transform

    def to_px(geom):
        xy = shapely.get_coordinates(geom)
        col, row = inverse * (xy[:, 0], xy[:, 1])
        return (np.asarray(col) - window.col_off) * sx - 0.5, (np.asarray(row) - window.row_off) * sy - 0.5

    lines = read_lines(shoreline_path).to_crs(crs)
    transects = read_lines(transects_path).to_crs(crs) if transects_path is not None else None
    for ax in axes:
        if transects is not None:
            for geom in transects.geometry:
                x, y = to_px(geom)
                ax.plot(x, y, color="#ffd700", linewidth=0.7)
                ax.plot(x[:1], y[:1], "o", color="#ffd700", markersize=2)
        for geom in lines.geometry:
            ax.plot(*to_px(geom), color="#e41a1c", linewidth=1.0)
        ax.set_xlim(-0.5, shape[1] - 0.5)
        ax.set_ylim(shape[0] - 0.5, -0.5)
    if scheme is not None:
        finish_figure(fig, png_path, scheme, title or scene_path.name, nodata_label="nodata")
    else:
        fig.suptitle(title or scene_path.name, fontsize=10)
        fig.tight_layout()
        with atomic_write(png_path) as tmp:
            fig.savefig(tmp, format="png")
    return png_path
