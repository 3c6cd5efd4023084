"""Regenerate tests/data from ../shared/data (run from the repository root).

Every file here is a small crop or copy of real public imagery; see tests/data/README.md for the
provenance and licences. Crops are taken with rasterio windows so CRS, transform, nodata and band
descriptions are preserved.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
HERE = Path(__file__).resolve().parent


def crop(src: Path, dst: Path, window: Window) -> None:
    with rasterio.open(src) as ds:
        data = ds.read(window=window)
        profile = ds.profile.copy()
        profile.update(
            driver="GTiff", width=int(window.width), height=int(window.height),
            transform=window_transform(window, ds.transform), compress="deflate", tiled=False,
        )
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(data)
            out.descriptions = ds.descriptions
            out.update_tags(**ds.tags())


def main() -> None:
    scenes = SHARED / "scenes"
    # Sentinel-2 10 m, 6 bands: Atlantic, surf, barrier-island beach and marsh (Virginia).
    crop(scenes / "sentinel2_virginia/S2A_18SVG_20160112_L1C_virginia_10m_6band.tif",
         HERE / "s2_virginia_10m_6band_crop.tif", Window(1060, 1024, 320, 256))
    # Landsat 8 TOA float32 with -inf nodata (Klamath River mouth).
    crop(scenes / "coastal_tiles/2017-10-02-18-57-29_L8_GREATER_KLAMATH_ms.tif",
         HERE / "l8_klamath_crop_ms.tif", Window(0, 300, 140, 260))
    # Landsat 8 DN, whole-scene footprint corner with its slanted (rotated) nodata collar.
    crop(scenes / "landsat8_150m_footprints/LC81070352015122LGN00_B2B3B4_150m.tif",
         HERE / "l8_collar_crop.tif", Window(1120, 1278, 400, 300))
    # Landsat 8 Level-1 DN, all bands, with its original MTL file (radiometric rescaling, sun elevation).
    # The crop's name starts with the product id, as the MTL lookup expects.
    allbands = scenes / "landsat8_allbands_crop"
    crop(allbands / "LC80200392015216LGN00_crop_30m_11band.tif",
         HERE / "LC80200392015216LGN00_l1_crop.tif", Window(300, 300, 40, 32))
    shutil.copy(allbands / "LC80200392015216LGN00_MTL.txt", HERE / "LC80200392015216LGN00_MTL.txt")
    # Sentinel-2 4-band scene without CRS or geotransform (Long Island).
    crop(scenes / "coastal_tiles/2015-09-01-15-51-33_S2_ID_ggo1_datetime11-01-23__12_43_49_ms_dup1.tif",
         HERE / "s2_no_crs_crop_ms.tif", Window(100, 100, 96, 96))
    # Human-labelled Ocean Beach chips: 3 dates x 2 chips (RGB, NIR, labels).
    labels = SHARED / "labels/ocean_beach_s2"
    dates = ["20190125T185649_20190125T185958_T10SEG", "20190912T184949_20190912T190314_T10SEG",
             "20200224T185351_20200224T185606_T10SEG"]
    for sub in ("images_rgb", "images_nir", "labels"):
        (HERE / "ocean_beach" / sub).mkdir(parents=True, exist_ok=True)
    for date in dates:
        for k in (0, 1):
            shutil.copy(labels / f"images_rgb/{date}-{k}.jpg", HERE / f"ocean_beach/images_rgb/{date}-{k}.jpg")
            shutil.copy(labels / f"images_nir/{date}_ir-{k}.jpg", HERE / f"ocean_beach/images_nir/{date}_ir-{k}.jpg")
            shutil.copy(labels / f"labels/{date}-{k}.png", HERE / f"ocean_beach/labels/{date}-{k}.png")
    shutil.copy(labels / "LICENSE_satshoreline_unet_MIT.txt", HERE / "ocean_beach/LICENSE_satshoreline_unet_MIT.txt")


if __name__ == "__main__":
    main()
