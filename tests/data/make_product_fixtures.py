"""Build the archive-product fixtures in tests/data/products/ from ../shared/data (real pixels, real metadata).

    python tests/data/make_product_fixtures.py

- ``LC80200392015216LGN00/``: a Landsat 8 Level-1 product folder: ``<id>_B1.TIF`` … ``_B7.TIF`` (64 × 64 px at
  30 m cut from the all-bands crop), the product's own MTL trimmed to the keys eoseg reads, and a SYNTHETIC
  ``<id>_QA_PIXEL.TIF`` in the Collection 2 bit layout (a cloud with its dilated rim, a cloud shadow, clear
  elsewhere) and a SYNTHETIC ``<id>_QA_RADSAT.TIF`` (a patch saturated in band 5, one saturated in band 1 only)
  so that cloud and saturation masking can be tested on real pixels.
- ``S2A_18SVG_20160112_0_L1C/``: a Sentinel-2 L1C folder of per-band GeoTIFFs as the common archives name them
  (``B02.tif`` …): B02 B03 B04 B08 at 10 m (128 × 128 px), B11 B12 at 20 m (64 × 64 px, the 2 × 2 means of the
  10 m stack's nearest-upsampled values, i.e. the original 20 m values), and a trimmed ``MTD_MSIL1C.xml`` carrying
  the L1C quantification value and the processing baseline.
- ``s2_item.json``: a STAC Item whose assets are those Sentinel-2 band files (relative hrefs, ``eo:bands``).
- ``S2A_18SVG_20160112_QI_DATA/MSK_CLOUDS_B00.gml``: a SYNTHETIC cloud mask in the format of ESA's L1C products
  before processing baseline 04.00 (what ``GRANULE/<granule>/QI_DATA/`` holds): an ``eop:Mask`` of
  ``eop:MaskFeature`` polygons with ``eop:maskType`` OPAQUE or CIRRUS in EPSG:32618, stair-stepped on the tile's
  60 m grid as ESA's are (vectorized from 60 m cells), over the Sentinel-2 folder's extent: two opaque clouds (one
  running past the east and south edges) and a ring of cirrus (a polygon with a hole). Kept apart from the band
  folder, whose tests expect no cloud mask; the tests put it into a product (a .SAFE layout or the folder).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

HERE = Path(__file__).resolve().parent
OUT = HERE / "products"
SHARED = HERE.parents[2] / "shared" / "data" / "scenes"

LANDSAT_ID = "LC80200392015216LGN00"
LANDSAT_SRC = SHARED / "landsat8_allbands_crop" / f"{LANDSAT_ID}_crop_30m_11band.tif"
LANDSAT_MTL = SHARED / "landsat8_allbands_crop" / f"{LANDSAT_ID}_MTL.txt"
LANDSAT_WINDOW = Window(280, 280, 64, 64)
LANDSAT_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7")
MTL_KEYS = ("LANDSAT_SCENE_ID", "SPACECRAFT_ID", "SENSOR_ID", "DATE_ACQUIRED", "SCENE_CENTER_TIME",
            *(f"FILE_NAME_BAND_{b[1:]}" for b in LANDSAT_BANDS), "SUN_ELEVATION",
            *(f"REFLECTANCE_{k}_BAND_{b[1:]}" for k in ("MULT", "ADD") for b in LANDSAT_BANDS))

S2_ID = "S2A_18SVG_20160112_0_L1C"
S2_SRC = SHARED / "sentinel2_virginia" / "S2A_18SVG_20160112_L1C_virginia_10m_6band.tif"
S2_WINDOW = Window(1216, 640, 128, 128)  # even offsets: 2 × 2 blocks are whole 20 m pixels; rows < 1000
S2_10M, S2_20M = ("B02", "B03", "B04", "B08"), ("B11", "B12")
S2_COMMON = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B11": "swir16", "B12": "swir22"}
# L1C products are quantified with 10000; 02.01 is the processing baseline of ESA's L1C production in January
# 2016 (the source raster carries no product metadata, so the baseline is stated here, not copied).
S2_MTD = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Trimmed to what eoseg reads: the product type, processing baseline, spacecraft and quantification value. -->
<n1:Level-1C_User_Product xmlns:n1="https://psd-13.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_TYPE>S2MSI1C</PRODUCT_TYPE>
      <PROCESSING_LEVEL>Level-1C</PROCESSING_LEVEL>
      <PROCESSING_BASELINE>02.01</PROCESSING_BASELINE>
      <Datatake datatakeIdentifier="">
        <SPACECRAFT_NAME>Sentinel-2A</SPACECRAFT_NAME>
      </Datatake>
    </Product_Info>
    <Product_Image_Characteristics>
      <QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:Level-1C_User_Product>
"""


def _write(path: Path, data: np.ndarray, profile: dict, transform, description: str | None = None) -> None:
    meta = {"driver": "GTiff", "width": data.shape[-1], "height": data.shape[-2], "count": 1, "dtype": data.dtype.name,
            "crs": profile["crs"], "transform": transform, "compress": "deflate", "predictor": 2}
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(data, 1)
        if description:
            dst.set_band_description(1, description)


def trim_mtl(text: str, keys: tuple[str, ...]) -> str:
    """The MTL with only ``keys`` kept, inside their original groups (empty groups dropped)."""
    out: list[str] = []
    stack: list[tuple[str, bool]] = []  # (GROUP line, written)
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip()
        if key == "GROUP":
            stack.append((line, False))
        elif key == "END_GROUP":
            _, written = stack.pop()
            if written:
                out.append(line)
        elif key in keys:
            for i, (group_line, written) in enumerate(stack):
                if not written:
                    out.append(group_line)
                    stack[i] = (group_line, True)
            out.append(line)
        elif line.strip() == "END":
            out.append(line)
    return "\n".join(out) + "\n"


def synthetic_qa_pixel(shape: tuple[int, int]) -> np.ndarray:
    """Collection 2 QA_PIXEL values: clear (bit 6) everywhere, a cloud (bit 3, high confidence bits 8-9) with a
    dilated rim (bit 1), and a cloud shadow (bit 4, bits 10-11) to its south-east."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    cloud = (rows - 16) ** 2 + (cols - 18) ** 2 <= 9 ** 2
    rim = ((rows - 16) ** 2 + (cols - 18) ** 2 <= 12 ** 2) & ~cloud
    shadow = (rows - 40) ** 2 + (cols - 44) ** 2 <= 8 ** 2
    qa = np.full(shape, 1 << 6, np.uint16)
    qa[cloud] = (1 << 3) | (3 << 8) | (1 << 1)
    qa[rim] = 1 << 1
    qa[shadow] = (1 << 4) | (3 << 10)
    return qa


def synthetic_qa_radsat(shape: tuple[int, int]) -> np.ndarray:
    """Collection 2 QA_RADSAT values (bit n - 1: band n saturated): band 5 saturated in one patch, band 1 (which
    the five-band models do not read) in another."""
    radsat = np.zeros(shape, np.uint16)
    radsat[56:60, 2:10] = 1 << 4
    radsat[56:60, 20:30] = 1 << 0
    return radsat


def make_landsat() -> Path:
    folder = OUT / LANDSAT_ID
    folder.mkdir(parents=True)
    with rasterio.open(LANDSAT_SRC) as src:
        transform = src.window_transform(LANDSAT_WINDOW)
        for band in LANDSAT_BANDS:
            index = list(src.descriptions).index(band) + 1
            _write(folder / f"{LANDSAT_ID}_{band}.TIF", src.read(index, window=LANDSAT_WINDOW), src.profile, transform)
        shape = (LANDSAT_WINDOW.height, LANDSAT_WINDOW.width)
        _write(folder / f"{LANDSAT_ID}_QA_PIXEL.TIF", synthetic_qa_pixel(shape), src.profile, transform)
        _write(folder / f"{LANDSAT_ID}_QA_RADSAT.TIF", synthetic_qa_radsat(shape), src.profile, transform)
    (folder / f"{LANDSAT_ID}_MTL.txt").write_text(trim_mtl(LANDSAT_MTL.read_text(), MTL_KEYS))
    return folder


def make_sentinel2() -> Path:
    folder = OUT / S2_ID
    folder.mkdir(parents=True)
    with rasterio.open(S2_SRC) as src:
        names = list(src.descriptions)
        transform = src.window_transform(S2_WINDOW)
        for band in S2_10M:
            _write(folder / f"{band}.tif", src.read(names.index(band) + 1, window=S2_WINDOW), src.profile, transform,
                   band)
        for band in S2_20M:
            fine = src.read(names.index(band) + 1, window=S2_WINDOW)
            blocks = fine.reshape(fine.shape[0] // 2, 2, fine.shape[1] // 2, 2)
            assert (blocks == blocks[:, :1, :, :1]).all(), f"{band}: 2 × 2 blocks are not whole 20 m pixels"
            coarse = blocks.mean(axis=(1, 3)).astype(fine.dtype)
            _write(folder / f"{band}.tif", coarse, src.profile, transform * transform.scale(2), band)
    (folder / "MTD_MSIL1C.xml").write_text(S2_MTD)
    return folder


S2_GML_DIR = "S2A_18SVG_20160112_QI_DATA"
S2_GML_ID = "S2A_OPER_MSK_CLOUDS_SGS__20160112T200000_A002920_T18SVG_B00_MSIL1C"  # made-up processing stamp
GML_CELL = 60.0  # ESA vectorizes the L1C cloud mask at 60 m, on the tile's grid


def synthetic_cloud_cells(shape: tuple[int, int]) -> dict[str, list[np.ndarray]]:
    """60 m cells of each synthetic mask type: two opaque clouds (one past the east and south edges of the 10 m
    folder's 1280 m extent) and a ring of cirrus."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]

    def disc(r: float, c: float, radius: float) -> np.ndarray:
        return (rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2

    return {"OPAQUE": [disc(6, 6.5, 4.2), disc(19, 20, 3.6)],
            "CIRRUS": [disc(6.5, 16, 4.8) & ~disc(6.5, 16, 1.9)]}


def _pos_list(ring) -> str:
    return " ".join(f"{x:.0f} {y:.0f}" for x, y in ring)


def cloud_gml(origin: tuple[float, float], shape: tuple[int, int]) -> str:
    """ESA's MSK_CLOUDS_B00.gml layout with the synthetic clouds' polygons (rasterio.features.shapes of the 60 m
    cells, in EPSG:32618 metres)."""
    from affine import Affine
    from rasterio.features import shapes

    transform = Affine(GML_CELL, 0, origin[0], 0, -GML_CELL, origin[1])
    members, xs, ys, count = [], [], [], {}
    for mask_type, blobs in synthetic_cloud_cells(shape).items():
        for blob in blobs:
            for geometry, _ in shapes(blob.astype(np.uint8), mask=blob, transform=transform):
                n = count[mask_type] = count.get(mask_type, -1) + 1
                rings = geometry["coordinates"]
                xs += [x for x, _ in rings[0]]
                ys += [y for _, y in rings[0]]
                interiors = "".join(
                    f"\n          <gml:interior>\n            <gml:LinearRing>\n              <gml:posList "
                    f'srsDimension="2">{_pos_list(ring)}</gml:posList>\n            </gml:LinearRing>\n'
                    f"          </gml:interior>" for ring in rings[1:])
                members.append(f"""    <eop:MaskFeature gml:id="{mask_type}.{n}">
      <eop:maskType codeSpace="urn:gs2:S2PDGS:maskType">{mask_type}</eop:maskType>
      <eop:extentOf>
        <gml:Polygon gml:id="{mask_type}.{n}_Polygon">
          <gml:exterior>
            <gml:LinearRing>
              <gml:posList srsDimension="2">{_pos_list(rings[0])}</gml:posList>
            </gml:LinearRing>
          </gml:exterior>{interiors}
        </gml:Polygon>
      </eop:extentOf>
    </eop:MaskFeature>""")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<eop:Mask xmlns:eop="http://www.opengis.net/eop/2.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xmlns:gml="http://www.opengis.net/gml/3.2" gml:id="{S2_GML_ID}">
  <gml:name>MSK_CLOUDS pixels mask from data-strip {S2_GML_ID}</gml:name>
  <gml:boundedBy>
    <gml:Envelope srsName="urn:ogc:def:crs:EPSG:8.7:32618">
      <gml:lowerCorner>{min(xs):.0f} {min(ys):.0f}</gml:lowerCorner>
      <gml:upperCorner>{max(xs):.0f} {max(ys):.0f}</gml:upperCorner>
    </gml:Envelope>
  </gml:boundedBy>
  <eop:maskMembers>
{chr(10).join(members)}
  </eop:maskMembers>
</eop:Mask>
"""


def make_cloud_gml(s2: Path) -> Path:
    with rasterio.open(s2 / "B02.tif") as ds:
        left, top = ds.bounds.left, ds.bounds.top
        cells = (int(np.ceil(ds.height * ds.res[1] / GML_CELL)) + 1, int(np.ceil(ds.width * ds.res[0] / GML_CELL)) + 1)
    # the folder's corner is on the tile's 60 m grid (tile 18SVG's corner is 399960 E, 4200000 N)
    assert (left - 399960) % GML_CELL == 0 and (4200000 - top) % GML_CELL == 0
    folder = OUT / S2_GML_DIR
    folder.mkdir()
    path = folder / "MSK_CLOUDS_B00.gml"
    path.write_text(cloud_gml((left, top), cells))
    return path


def make_item(s2: Path) -> Path:
    with rasterio.open(s2 / "B02.tif") as ds:
        from rasterio.warp import transform_bounds

        west, south, east, north = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    assets = {
        S2_COMMON[band]: {"href": f"{s2.name}/{band}.tif", "type": "image/tiff; application=geotiff", "roles": ["data"],
                          "eo:bands": [{"name": band, "common_name": S2_COMMON[band]}]}
        for band in (*S2_10M, *S2_20M)
    }
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": S2_ID,
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                                         [west, south]]]},
        "bbox": [west, south, east, north],
        "properties": {"datetime": None, "start_datetime": "2016-01-12T00:00:00Z",
                       "end_datetime": "2016-01-12T23:59:59Z", "platform": "sentinel-2a", "constellation": "sentinel-2",
                       "instruments": ["msi"], "s2:processing_baseline": "02.01"},
        "links": [], "assets": assets,
    }
    path = OUT / "s2_item.json"
    path.write_text(json.dumps(item, indent=2) + "\n")
    return path


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    landsat, s2 = make_landsat(), make_sentinel2()
    item, gml = make_item(s2), make_cloud_gml(s2)
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{landsat.name}, {s2.name}, {item.name}, {gml.parent.name}/{gml.name}: {size / 1024:.0f} KB in {OUT}")


if __name__ == "__main__":
    main()
