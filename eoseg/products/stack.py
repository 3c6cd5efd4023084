"""Stacking a product's band files as one scene: a GDAL VRT (an XML string rasterio opens as it is).

Nothing is copied: the model's bands are read window by window through GDAL as from any GeoTIFF. Bands
coarser than the finest one (Sentinel-2's 20 m bands on the 10 m grid) are resampled on the fly by **nearest
neighbour**:

- each 10 m pixel keeps the value the product measured for its 20 m pixel, so no spectrum is made up where
  water meets sand (bilinear mixes the two sides of a shoreline into values neither surface has, exactly
  in the pixels the model is asked to decide);
- it is what the packaged models saw in training (the Virginia 10 m stack's B11/B12 are nearest-upsampled),
  and what a 20 m classification layer (SCL) needs anyway: class codes cannot be interpolated;
- it is exact and reproducible (a 20 m pixel is two by two 10 m pixels), so a product input gives the same
  classes as a stack made by hand with ``gdalbuildvrt -r nearest`` or ``gdal_translate -r nearest``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from eoseg.errors import BandMappingError, GeoreferenceError, SceneReadError
from eoseg.products.base import LANDSAT_OLI_ROLES, LANDSAT_TM_ROLES, SENTINEL2_ROLES, Product


@dataclass(frozen=True)
class Grid:
    """The grid the bands are stacked on (the finest band's)."""

    width: int
    height: int
    transform: Affine
    crs: rasterio.crs.CRS | None
    dtype: str


def open_band(href: str, given: Path) -> rasterio.io.DatasetReader:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(href)
    except RasterioError as exc:
        raise SceneReadError(f"cannot open band file {Path(href).name} ({str(exc).splitlines()[0]})", path=given,
                             fix="re-download the product's band file") from None


def _band_grids(hrefs: Iterable[str], given: Path) -> list[tuple[str, Affine, int, int, object, str, int]]:
    grids = []
    for href in hrefs:
        with open_band(href, given) as ds:
            grids.append((href, ds.transform, ds.width, ds.height, ds.crs, ds.dtypes[0], ds.count))
    return grids


def stack_grid(product: Product, wanted: Sequence[int] | None = None) -> Grid:
    """The finest band's grid; refuses bands on different CRSs or not on one grid."""
    bands = [product.bands[i] for i in (wanted or range(len(product.bands)))]
    grids = _band_grids([b.href for b in bands], product.path)
    ref = min(grids, key=lambda g: abs(g[1].a))
    crs = ref[4]
    for (href, transform, _, _, band_crs, _, _), band in zip(grids, bands, strict=True):
        if band_crs != crs:
            raise GeoreferenceError(
                f"band {band.name} ({Path(href).name}) is on {band_crs.to_string() if band_crs else 'no CRS'}, the "
                f"other bands on {crs.to_string() if crs else 'no CRS'}", path=product.path,
                fix="bands of one scene must share a CRS: reproject them (gdalwarp -t_srs) or use one product's files")
        ratio = abs(transform.a / ref[1].a)
        shift = ((transform.c - ref[1].c) / ref[1].a, (transform.f - ref[1].f) / ref[1].e)
        if abs(ratio - round(ratio)) > 1e-6 or any(abs(s - round(s)) > 1e-6 for s in shift) or transform.b or \
                transform.d:
            raise GeoreferenceError(f"band {band.name} ({Path(href).name}) is not on the grid of the finest band",
                                    path=product.path, fix="use bands of one product (a whole multiple of the finest "
                                                           "pixel size, on the same origin)")
    dtypes = {g[5] for g in grids}
    dtype = dtypes.pop() if len(dtypes) == 1 else "float32"
    return Grid(ref[2], ref[3], ref[1], crs, dtype)


_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
               "float32": "Float32", "float64": "Float64"}


def _source_xml(href: str, band: int, transform: Affine, width: int, height: int, grid: Grid) -> str:
    x_off = (transform.c - grid.transform.c) / grid.transform.a
    y_off = (transform.f - grid.transform.f) / grid.transform.e
    x_size = width * transform.a / grid.transform.a
    y_size = height * transform.e / grid.transform.e
    return (f'<SimpleSource resampling="nearest"><SourceFilename relativeToVRT="0">{escape(href)}</SourceFilename>'
            f'<SourceBand>{band}</SourceBand><SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
            f'<DstRect xOff="{x_off:.10g}" yOff="{y_off:.10g}" xSize="{x_size:.10g}" ySize="{y_size:.10g}"/>'
            f'</SimpleSource>')


def _vrt(grid: Grid, bands_xml: list[str], metadata: dict[str, str]) -> str:
    srs = f"<SRS>{escape(grid.crs.to_wkt())}</SRS>" if grid.crs else ""
    gt = ", ".join(f"{v:.17g}" for v in grid.transform.to_gdal())
    mdi = "".join(f'<MDI key="{escape(k)}">{escape(str(v))}</MDI>' for k, v in metadata.items())
    return (f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">{srs}<GeoTransform>{gt}'
            f'</GeoTransform><Metadata>{mdi}</Metadata>{"".join(bands_xml)}</VRTDataset>')


def band_vrt(product: Product, grid: Grid) -> str:
    """The product's bands stacked on ``grid`` as VRT XML (descriptions are the band names, nodata 0: Landsat
    and Sentinel-2 products write fill as 0)."""
    grids = _band_grids([b.href for b in product.bands], product.path)
    xml = []
    for i, (band, (href, transform, width, height, _, _, _)) in enumerate(zip(product.bands, grids, strict=True)):
        xml.append(f'<VRTRasterBand dataType="{_GDAL_TYPES.get(grid.dtype, "Float32")}" band="{i + 1}">'
                   f"<Description>{escape(band.name)}</Description><NoDataValue>0</NoDataValue>"
                   + _source_xml(href, 1, transform, width, height, grid) + "</VRTRasterBand>")
    meta = {"PRODUCT_ID": product.product_id, "SENSOR": product.sensor or "", "PLATFORM": product.platform or ""}
    if product.datetime is not None:
        meta["ACQUISITION_DATETIME"] = product.datetime.isoformat()
    return _vrt(grid, xml, meta)


def quality_source(product: Product, grid: Grid) -> str | None:
    """What the scene's quality layer is read from: the raster layer's VRT on ``grid`` (:func:`quality_vrt`), or
    the path of a GML cloud mask, whose polygons are read (and checked) here once and rasterized per window when
    the scene is read (:mod:`.gml`); None without a layer."""
    if product.quality is not None and product.quality.kind == "msk_clouds":
        from eoseg.products.gml import read_cloud_gml

        read_cloud_gml(product.quality.href, grid.crs)
        return product.quality.href
    return quality_vrt(product, grid)


def quality_vrt(product: Product, grid: Grid) -> str | None:
    """The raster quality layer on ``grid`` (nearest: codes are not interpolated) as VRT XML, or None."""
    if product.quality is None:
        return None
    with open_band(product.quality.href, product.path) as ds:
        transform, width, height, count, dtype, crs = ds.transform, ds.width, ds.height, ds.count, ds.dtypes[0], ds.crs
    if grid.crs is not None and crs != grid.crs:
        raise GeoreferenceError(f"the quality layer {Path(product.quality.href).name} is on another CRS than the bands",
                                path=product.path, fix="use the product's own quality layer")
    layers = [(product.quality.href, b, transform, width, height, dtype) for b in range(1, count + 1)]
    if product.saturation is not None:
        with open_band(product.saturation, product.path) as ds:
            layers.append((product.saturation, 1, ds.transform, ds.width, ds.height, ds.dtypes[0]))
    xml = [f'<VRTRasterBand dataType="{_GDAL_TYPES.get(dtype, "UInt16")}" band="{i}">'
           + _source_xml(href, b, transform, width, height, grid) + "</VRTRasterBand>"
           for i, (href, b, transform, width, height, dtype) in enumerate(layers, start=1)]
    return _vrt(grid, xml, {})


def saturation_bits(product: Product, band_indexes: Sequence[int]) -> int:
    """``QA_RADSAT`` bits of the bands the model reads (bit n − 1 for band n), 0 without the layer."""
    if product.saturation is None:
        return 0
    bits = 0
    for i in band_indexes:
        number = re.search(r"(\d+)$", product.bands[i - 1].name)
        if number:
            bits |= 1 << (int(number.group(1)) - 1)
    return bits


def _band_code(role: str, product: Product) -> str | None:
    if product.sensor == "sentinel2":
        table = {r: b for b, r in SENTINEL2_ROLES.items()}
    elif product.sensor in ("landsat_oli", "landsat_tm"):
        roles = LANDSAT_OLI_ROLES if product.sensor == "landsat_oli" else LANDSAT_TM_ROLES
        table = {r: ("SR_B" if product.level == "L2" else "B") + str(n) for n, r in roles.items()}
    else:
        table = {}
    return table.get(role)


def missing_band_error(product: Product, missing: Sequence[str], wanted: Sequence[str]) -> BandMappingError:
    have = ", ".join(f"{b.name}({b.role})" for b in product.bands)
    names = ", ".join(f"{r} band ({_band_code(r, product)})" if _band_code(r, product) else f"{r} band"
                      for r in missing)
    kind = {"sentinel2": "Sentinel-2", "landsat": "Landsat", "stac": "STAC"}.get(product.kind, product.kind)
    return BandMappingError(
        f"the {kind} product {product.product_id} has no {names} (it has {have})", path=product.path,
        fix=f"add the band file(s), or use a model that takes {', '.join(r for r in wanted if r not in missing)} only")
