"""The eoseg demo: segment the two Landsat example scenes with the packaged default model.

Run with `make demo` (or `python examples/landsat/demo.py --out demo-out`). Works offline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from eoseg.outputs.quicklook import write_quicklook
from eoseg.predict import Predictor, PredictSettings
from eoseg.process import tune_process

HERE = Path(__file__).resolve().parent
SCENES = sorted((HERE / "data").glob("*.tif"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--model", default="resunet")
    args = parser.parse_args()
    tune_process(SCENES)  # a program's own choice: GDAL's block cache and glibc's malloc (eoseg.process)
    # the demo folder is the demo's own: re-running replaces its outputs
    predictor = Predictor(args.model, PredictSettings(overwrite=True))
    print(f"eoseg demo: model '{predictor.card.name}' ({predictor.card.arch}, bands "
          f"{', '.join(predictor.card.bands)}) on {predictor.device}/{predictor.precision}")
    for scene in SCENES:
        result = predictor.predict(scene, args.out)
        png = write_quicklook(scene, result.outputs["classes"], args.out / f"{scene.stem}_quicklook.png",
                              predictor.scheme, title=f"{scene.name} — eoseg {predictor.card.name}")
        print(result.summary())
        print(f"  quicklook: {png}")
    out = args.out.resolve()
    print(f"\nOutputs are in {out}")
    print("Open them in QGIS: drag <scene>_classes.tif (styled by the .qml beside it) and <scene>_polygons.gpkg "
          "(its style is stored inside) onto the map canvas, or: qgis " + " ".join(
              str(out / f"{s.stem}_classes.tif") for s in SCENES))


if __name__ == "__main__":
    main()
