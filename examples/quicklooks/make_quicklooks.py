"""Regenerate the README quicklooks: the packaged default model on four real coasts (../shared/data).

    python examples/quicklooks/make_quicklooks.py [--model resunet] [--out examples/quicklooks]

Virginia (Sentinel-2, whole scene, its southern rows held out of training and labelling), Klamath (Landsat 8),
Elwha (Landsat 9, held out of training and labelling) and Benin-Togo (Landsat 7 median composite).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from eoseg.outputs.quicklook import write_quicklook
from eoseg.predict import Predictor, PredictSettings
from eoseg.process import tune_process

ROOT = Path(__file__).resolve().parents[2]
SCENES = ROOT.parent / "shared" / "data" / "scenes"
COASTS = {
    "virginia": SCENES / "sentinel2_virginia/S2A_18SVG_20160112_L1C_virginia_10m_6band.tif",
    "klamath": SCENES / "coastal_tiles/2017-10-02-18-57-29_L8_GREATER_KLAMATH_ms.tif",
    "elwha": SCENES / "coastal_tiles/2022-09-29-19-01-47_L9_ID_bvu2_datetime01-10-24__04_22_29_ms.tif",
    "benin_togo": SCENES / "landsat7_benin_togo/L7_Benin_Togo_0_median_2000_ms.tif",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resunet", help="a bundle, or a+b for an ensemble")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tune_process(COASTS.values())
    predictor = Predictor(args.model.split("+"), PredictSettings(overwrite=True))
    with tempfile.TemporaryDirectory() as tmp:
        for name, scene in COASTS.items():
            result = predictor.predict(scene, tmp, progress=False)
            png = write_quicklook(scene, result.outputs["classes"], args.out / f"{name}.png", predictor.scheme,
                                  title=f"{scene.name} — eoseg {predictor.card.name}", max_side=900)
            print(result.summary(), "→", png)


if __name__ == "__main__":
    main()
