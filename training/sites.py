"""The labelled training sites: scenes in ../shared/data, their strokes and their held-out test blocks.

Windows are (col_off, row_off, width, height) in scene pixels. Each site is cut into training pieces and one
test block; a gap of at least 32 px separates them, so no training tile sees a test pixel. The Virginia
evaluation rows (1000 and below of the 10 m scene) and the Elwha tile are neither labelled nor used here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENES = ROOT.parent / "shared" / "data" / "scenes"
STROKES = Path(__file__).resolve().parent / "strokes"

Window = tuple[int, int, int, int]


@dataclass(frozen=True)
class Site:
    name: str
    scene: Path
    bands: tuple[int, ...]  # 1-based scene bands in the order blue, green, red, nir, swir1
    allowed: Window  # the part of the scene that may be labelled at all
    train: tuple[Window, ...]
    test: Window | None
    negative: bool = False  # a scene with no coast: every valid pixel is "other" (no strokes needed)
    descriptions: tuple[str, ...] = ()  # band names written into the pieces where the scene has none
    repeat: int = 1  # training pieces listed this many times: the 30 m Landsat coasts are small next to Virginia

    @property
    def stem(self) -> str:
        return self.scene.name.rsplit(".", 1)[0]

    @property
    def strokes(self) -> Path:
        return STROKES / f"{self.name}.gpkg"


SITES = (
    Site("virginia", SCENES / "sentinel2_virginia/S2A_18SVG_20160112_L1C_virginia_10m_6band.tif", (1, 2, 3, 4, 5),
         allowed=(0, 0, 1932, 1000),
         train=((0, 0, 1932, 560), (0, 560, 1060, 440)), test=(1100, 600, 832, 400)),
    Site("klamath", SCENES / "coastal_tiles/2017-10-02-18-57-29_L8_GREATER_KLAMATH_ms.tif", (1, 2, 3, 4, 5),
         allowed=(0, 0, 140, 1007), train=((0, 0, 140, 520), (0, 800, 140, 207)), test=(0, 560, 140, 200),
         descriptions=("blue", "green", "red", "nir", "swir1", "qa"), repeat=4),
    Site("benin", SCENES / "landsat7_benin_togo/L7_Benin_Togo_0_median_2000_ms.tif", (1, 2, 3, 4, 5),
         allowed=(0, 0, 368, 191), train=((0, 0, 200, 191),), test=(232, 0, 136, 191),
         descriptions=("blue", "green", "red", "nir", "swir1", "qa"), repeat=4),
    Site("inland", SCENES / "landsat8_allbands_crop/LC80200392015216LGN00_crop_30m_11band.tif", (2, 3, 4, 5, 6),
         allowed=(0, 0, 627, 603), train=((0, 0, 627, 450),), test=(0, 482, 627, 121), negative=True),
)
ROLES = ("blue", "green", "red", "nir", "swir1")
BLOCK = 320  # training windows are cut into blocks of at most BLOCK × BLOCK px: the groups of the train/val split


def blocks(window: Window, size: int = BLOCK) -> list[Window]:
    """``window`` cut into blocks of at most ``size`` px, the last row and column of blocks evened out."""
    col0, row0, width, height = window

    def spans(length: int) -> list[tuple[int, int]]:
        n = max(1, -(-length // size))
        edges = [round(i * length / n) for i in range(n + 1)]
        return [(edges[i], edges[i + 1] - edges[i]) for i in range(n)]

    return [(col0 + c, row0 + r, w, h) for r, h in spans(height) for c, w in spans(width)]
