"""Streaming raster writer that finishes as a Cloud-Optimized GeoTIFF.

:class:`RasterSink` writes windows into a temporary tiled GeoTIFF (memory does not scale with the
raster: GDAL keeps at most a row of 512×512 blocks in its cache), then on a clean exit hands the
whole conversion to GDAL's COG driver (``rasterio.shutil.copy(..., driver="COG")``), which builds
the overviews and lays the file out in C, streaming block by block. rio-cogeo's ``cog_translate``
was not used for writing: it re-reads the source window by window through Python and rebuilds
what the COG driver already does natively, and it cannot choose MODE overviews per kind any better.
rio-cogeo is used for what it is best at: :func:`validate_cog`.

Class rasters carry a palette (from :meth:`ClassScheme.colormap`), band description ``class``,
band tags ``class_<id>=<name>``, a dataset tag with the scheme as JSON, and GDAL category names.
GeoTIFF cannot hold category names internally, so GDAL keeps them in the PAM sidecar
``<file>.aux.xml``; it is written atomically right after the COG (see :func:`category_names`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from eoseg.classes import ClassScheme
from eoseg.errors import OutputError
from eoseg.outputs.atomic import (
    atomic_write,
    aux_path,
    remove_quietly,
    remove_with_sidecars,
    temporary_path,
)

Kind = Literal["classes", "probs"]
BLOCK = 512
OVERVIEW_MIN_SIZE = 256  # keep halving while the larger side exceeds this
PROB_SCALE = 1.0 / 255.0


def overview_count(width: int, height: int, min_size: int = OVERVIEW_MIN_SIZE) -> int:
    """Number of 2× overview levels: halve until the larger side is ≤ ``min_size``.

    GDAL's default (halve until smaller than one 512 block) gives a small scene no overview at all;
    a lower floor gives every scene bigger than 256 px at least one, for fast display in QGIS.
    """
    size, count = max(width, height), 0
    while size > min_size:
        size = math.ceil(size / 2)
        count += 1
    return count


def overview_resampling(kind: Kind) -> str:
    """MODE keeps overviews of a class raster made of real classes; AVERAGE suits probabilities."""
    if kind == "probs":
        return "AVERAGE"
    from rasterio.enums import OverviewResampling

    return "MODE" if "mode" in OverviewResampling.__members__ else "NEAREST"


def _stage_profile(sink: RasterSink) -> dict:
    profile = {
        "driver": "GTiff", "width": sink.width, "height": sink.height, "count": sink.count,
        "dtype": sink.dtype, "crs": sink.crs, "transform": sink.transform, "nodata": sink.nodata,
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    if sink.kind == "probs":
        # GDAL's default for 3 or 4 Byte bands is RGB(A): band 4 would become an alpha band that masks
        # pixels out of the AVERAGE overviews (and QGIS would draw the bands as colours).
        profile["photometric"] = "MINISBLACK"
    return profile


def _cog_options(kind: Kind, width: int, height: int) -> dict:
    options = {
        "COMPRESS": "DEFLATE", "BLOCKSIZE": BLOCK, "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": os.environ.get("GDAL_NUM_THREADS", "ALL_CPUS"),  # a batch worker sets its own share
        "OVERVIEW_RESAMPLING": overview_resampling(kind), "OVERVIEW_COUNT": overview_count(width, height),
    }
    if kind == "probs":
        options["PREDICTOR"] = 2  # smooth probabilities compress better with horizontal differencing
    return options


def _write_class_metadata(ds, scheme: ClassScheme) -> None:
    ds.write_colormap(1, scheme.colormap())
    ds.set_band_description(1, "class")
    ds.update_tags(1, **{f"class_{c.id}": c.name for c in scheme.classes}, nodata_class=str(scheme.nodata))
    ds.update_tags(class_scheme=json.dumps(scheme.to_dict()))


def _write_prob_metadata(ds, scheme: ClassScheme, band_names: list[str]) -> None:
    ds.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (ds.count - 1)
    for band, name in enumerate(band_names, start=1):
        ds.set_band_description(band, name)
    for band, info in enumerate(scheme.classes[: ds.count], start=1):
        ds.update_tags(band, class_id=str(info.id), class_name=info.name)
    ds.scales = (PROB_SCALE,) * ds.count
    ds.offsets = (0.0,) * ds.count
    ds.update_tags(probability_scale="1/255", class_scheme=json.dumps(scheme.to_dict()))


def category_list(scheme: ClassScheme) -> list[str]:
    """GDAL category names indexed by pixel value, as long as the palette (up to the nodata id)."""
    size = max([*scheme.ids, scheme.nodata]) + 1
    names = [""] * size
    for info in scheme.classes:
        names[info.id] = info.name
    names[scheme.nodata] = "nodata"
    return names


def pam_xml(scheme: ClassScheme, existing: str | None = None, description: str = "class") -> str:
    """A GDAL PAM document for band 1 with category names, merged into ``existing`` (if GDAL wrote one).

    Category ``i`` names pixel value ``i``, the same index as palette entry ``i``, so the list spans the
    whole colour table up to the nodata id. Anything else GDAL stored in the sidecar is kept.
    """
    root = ET.fromstring(existing) if existing and existing.strip() else ET.Element("PAMDataset")
    band = next((b for b in root.findall("PAMRasterBand") if b.get("band") == "1"), None)
    if band is None:
        band = ET.SubElement(root, "PAMRasterBand", band="1")
    for tag in ("Description", "CategoryNames"):
        for old in band.findall(tag):
            band.remove(old)
    desc = ET.Element("Description")
    desc.text = description
    band.insert(0, desc)
    cats = ET.SubElement(band, "CategoryNames")
    for name in category_list(scheme):
        ET.SubElement(cats, "Category").text = name
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def category_names(path: Path) -> list[str]:
    """Category names as GDAL reads them (``GDALGetRasterCategoryNames``, what gdalinfo prints).

    rasterio has no accessor, so the raster is described as a VRT by GDAL and the names are read
    from it: what comes back is what GDAL itself found in the file and its PAM sidecar.
    """
    with tempfile.TemporaryDirectory() as tmp:
        vrt = Path(tmp) / "describe.vrt"
        rasterio.shutil.copy(str(path), str(vrt), driver="VRT")
        band = ET.parse(vrt).getroot().find("VRTRasterBand")
    cats = band.find("CategoryNames") if band is not None else None
    return [] if cats is None else [c.text or "" for c in cats.findall("Category")]


def validate_cog(path: Path) -> tuple[bool, list[str], list[str]]:
    """``(is_valid, errors, warnings)`` from rio-cogeo's strict validator (warnings count as errors)."""
    from rio_cogeo.cogeo import cog_validate

    return cog_validate(str(path), strict=True, quiet=True)


class RasterSink:
    """Write a raster window by window; on a clean exit finish it as a COG at ``final_path``.

    >>> with RasterSink(path, w, h, 1, "uint8", crs, transform, 255, "classes", COASTAL) as sink:
    ...     sink.write(rows, Window(0, row_off, w, rows.shape[-2]))

    ``array`` passed to :meth:`write` has shape ``(count, h, w)`` (or ``(h, w)`` when ``count`` is 1).
    Pixels never written read as ``nodata`` (0 when nodata is None). On an exception inside the
    ``with`` block every temporary is removed and nothing appears under the final name.
    """

    def __init__(
        self, final_path: Path, width: int, height: int, count: int, dtype: str | np.dtype,
        crs: CRS | None, transform: Affine, nodata: float | None, kind: Kind, scheme: ClassScheme,
        band_names: list[str] | None = None, tags: dict[str, str] | None = None,
    ):
        if kind not in ("classes", "probs"):
            raise ValueError(f"kind must be 'classes' or 'probs', not {kind!r}")
        if kind == "classes" and count != 1:
            raise ValueError(f"a class raster has one band, not {count}")
        self.final_path = Path(final_path)
        self.width, self.height, self.count = int(width), int(height), int(count)
        self.dtype = np.dtype(dtype).name
        self.crs, self.transform, self.nodata = crs, transform, nodata
        self.kind, self.scheme = kind, scheme
        self.band_names = band_names or self._default_band_names()
        if len(self.band_names) != self.count:
            raise ValueError(f"{len(self.band_names)} band names for {self.count} bands")
        self.stage_path = temporary_path(self.final_path, tag="stage")
        self.tags = dict(tags or {})  # extra dataset tags (e.g. the input's band mapping and scaling)
        self._ds = None

    def _default_band_names(self) -> list[str]:
        if self.kind == "classes":
            return ["class"]
        names = self.scheme.names[: self.count]
        return names + [f"band_{i}" for i in range(len(names) + 1, self.count + 1)]

    def __enter__(self) -> RasterSink:
        remove_with_sidecars(self.stage_path)
        try:
            self._ds = rasterio.open(self.stage_path, "w", **_stage_profile(self))
            if self.kind == "classes":
                _write_class_metadata(self._ds, self.scheme)
            else:
                _write_prob_metadata(self._ds, self.scheme, self.band_names)
            if self.tags:
                self._ds.update_tags(**self.tags)
        except Exception as exc:
            self._abort()
            raise OutputError(f"cannot create a temporary raster ({exc})", path=self.final_path,
                              fix="choose a writable directory with free space") from exc
        return self

    def write(self, array: np.ndarray, window: Window) -> None:
        """Write ``array`` (``(count, h, w)``) into ``window`` of the raster."""
        if self._ds is None:
            raise RuntimeError("RasterSink.write() outside its with block")
        array = np.asarray(array)
        if array.ndim == 2 and self.count == 1:
            array = array[np.newaxis]
        expected = (self.count, int(window.height), int(window.width))
        if array.shape != expected:
            raise ValueError(f"array shape {array.shape} does not match window {expected} (count, h, w)")
        self._ds.write(array.astype(self.dtype, copy=False), window=window)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._abort()
            return False
        try:
            self._ds.close()
            self._ds = None
            self._finish()
        except Exception as err:
            self._abort()
            if isinstance(err, OutputError):
                raise
            raise OutputError(f"cannot write the Cloud-Optimized GeoTIFF ({err})", path=self.final_path,
                              fix="check free disk space and that the directory is writable") from err
        finally:
            remove_with_sidecars(self.stage_path)
        return False

    def _abort(self) -> None:
        if self._ds is not None:
            with contextlib.suppress(Exception):  # best effort while unwinding
                self._ds.close()
            self._ds = None
        remove_with_sidecars(self.stage_path)
        remove_with_sidecars(temporary_path(self.final_path))
        remove_with_sidecars(temporary_path(aux_path(self.final_path)))

    def _finish(self) -> None:
        final_aux = aux_path(self.final_path)
        with atomic_write(self.final_path) as tmp:
            rasterio.shutil.copy(str(self.stage_path), str(tmp), driver="COG",
                                 **_cog_options(self.kind, self.width, self.height))
            gdal_aux = aux_path(tmp)
            existing = gdal_aux.read_text(encoding="utf-8") if gdal_aux.exists() else None
            remove_quietly(gdal_aux)
        if self.kind == "classes":
            with atomic_write(final_aux) as tmp_aux:
                tmp_aux.write_text(pam_xml(self.scheme, existing), encoding="utf-8")
        elif existing:
            with atomic_write(final_aux) as tmp_aux:
                tmp_aux.write_text(existing, encoding="utf-8")
        else:
            remove_quietly(final_aux)  # a stale sidecar of a replaced file would describe the old one
