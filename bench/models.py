"""Benchmark: packaged models vs a per-pixel classifier vs CoastSat's published classifiers, by held-out site.

Data: the held-out test blocks cut by ``training/make_data.py`` (``data/ms/test``: one block per labelled site,
never seen in training, separated from the training pieces by a gap) with three references:

- ``dense``: the block's label raster (strokes densified by ``eoseg label``; 255 where the labeller was unsure);
- ``strokes``: only the pixels under the human strokes that fall inside the block (the surest reference);
- ``points``: check points drawn at random in each coastal block, stratified by the dense reference's classes
  and its unsure pixels, each classified by eye without any map in view (``training/points/<site>.gpkg``,
  ``training/sample_points.py``), scored with the stratified estimator of ``bench/reference_points.py``. No
  classifier made these labels, and the pixels the densifier left unsure are scored too; a second phase drawn
  where maps disagree is weighed by its cells (``sample_points.py --disagree``). Each model's pooled
  mean IoU minus each peer's is printed with a 95 % paired-bootstrap interval over the points.

Contenders, all scored with :func:`eoseg.metrics.confusion_matrix` over the same pixels:

- each packaged eoseg model (``eoseg.Predictor``, the card's defaults: what ``eoseg predict`` writes); ``a+b``
  names an ensemble of bundles whose probabilities are averaged (``eoseg predict --model a --model b``);
- ``pixel-rf``: a per-pixel random forest on the same features ``eoseg label`` uses (reflectance of the five
  bands, NDWI / MNDWI / NDVI, local mean and std at 3, 7, 15 px), trained on the same training pieces' labels
  (class-balanced sample);
- ``coastsat``: CoastSat's pretrained 4-class MLPs (``NN_4classes_S2_new.pkl`` for Sentinel-2,
  ``NN_4classes_Landsat_new.pkl`` for Landsat) from the ``coastsat-package`` wheel (GPL-3.0), fetched with pip
  into ``bench/.cache`` and loaded with joblib at run time; nothing of CoastSat is imported or copied. Their
  20 features are computed here from the published definition (Vos et al. 2019, CoastSat ``calculate_features``):
  the five reflectance bands (blue, green, red, nir, swir1), the normalized differences (nir, green), (swir1, green),
  (nir, red), (swir1, nir), (blue, red), and the 3 × 3 standard deviation of each of those ten. CoastSat's class
  ids (0 other, 1 sand, 2 white water, 3 water) are mapped to eoseg's.

Outputs: a table per site and pooled (mean IoU, per-class IoU, pixels) on stdout, ``--out DIR`` with
``models.json``, a confusion-matrix PNG per contender and each contender's class map of each test block
(``maps/<contender>/<site>.tif``); ``--write-card`` writes each packaged model's
``metrics.held_out_sites`` into its card (metrics only; the weights are untouched). Given three or more models
(e.g. the bundles of several training seeds), it also prints each one's validation mean IoU (from its card)
beside its held-out coastal dense mean IoU, and their Spearman rank correlation: whether choosing a run by its
validation score, which never sees a test block, picks the run that maps the held-out sites best.

Usage: python bench/models.py [--data data/ms] [--models resunet resunet-rgb] [--out bench-out/models]
       [--no-coastsat] [--write-card]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
sys.path.insert(0, str(ROOT / "bench"))
from reference_points import Points, bootstrap_difference, estimated_confusion, read_points  # noqa: E402
from sites import ROLES, SITES, Site  # noqa: E402

from eoseg.classes import COASTAL, NODATA_CLASS  # noqa: E402
from eoseg.metrics import confusion_matrix, metrics_from_confusion  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
POINTS = ROOT / "training" / "points"
REFERENCES = ("dense", "strokes", "points")
COASTSAT_WHEEL = "coastsat-package==0.5.1"
COASTSAT_MODELS = {"sentinel2": "NN_4classes_S2_new.pkl", "landsat": "NN_4classes_Landsat_new.pkl"}
COASTSAT_TO_EOSEG = np.array([3, 2, 1, 0], np.uint8)  # other, sand, white water, water -> eoseg ids
K = len(COASTAL)


@dataclass
class Block:
    site: Site
    image: Path
    labels: np.ndarray  # dense reference, 255 = unsure / nodata
    strokes: np.ndarray  # stroke reference inside the block, 255 elsewhere
    reflectance: np.ndarray  # (5, H, W) float32, roles ROLES
    valid: np.ndarray
    points: Points | None = None  # interpreted check points (bench/reference_points.py), coastal test blocks only

    @property
    def sensor(self) -> str:
        return "sentinel2" if "S2" in self.image.name.split("_")[0] else "landsat"


# ---------------------------------------------------------------------------------------------- data


def read_reflectance(path: Path, bands: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The five bands of ``path`` as reflectance (eoseg's own scaling decision) and the validity mask."""
    from rasterio.windows import Window

    from eoseg.radiometry import scene_scaling
    from eoseg.scene import SceneReader, open_scene

    scene = open_scene(path, roles=ROLES, bands=bands)
    scaling = scene_scaling(scene)
    with SceneReader(scene) as reader:
        data, valid = reader.read(Window(0, 0, scene.width, scene.height))
    refl = scaling.apply(data)
    refl[:, ~valid] = 0.0
    return refl, valid


def stroke_reference(site: Site, image: Path) -> np.ndarray:
    from rasterio.windows import Window

    from eoseg.errors import DatasetError
    from eoseg.scene import open_scene
    from eoseg.strokes import rasterize_strokes, read_strokes

    scene = open_scene(image, roles=ROLES, bands=site.bands)
    try:
        strokes = read_strokes(site.strokes, scene)
    except DatasetError:  # a negative site (no strokes), or a block no stroke crosses
        return np.full(scene.shape, NODATA_CLASS, np.uint8)
    classes, _ = rasterize_strokes(strokes, Window(0, 0, scene.width, scene.height), scene.transform)
    return classes


def load_blocks(data: Path, split: str, strokes: bool = True, points: bool = True) -> list[Block]:
    blocks = []
    for site in SITES:
        for image in sorted((data / split).glob(f"{site.stem}__{site.name}_*.tif")):
            with rasterio.open(data / split / "labels" / image.name) as ds:
                labels = ds.read(1)
            refl, valid = read_reflectance(image, site.bands)
            labels[~valid] = NODATA_CLASS
            drawn = stroke_reference(site, image) if strokes else np.full(labels.shape, NODATA_CLASS, np.uint8)
            drawn[~valid] = NODATA_CLASS
            checks = read_points(POINTS / f"{site.name}.gpkg", image) if split == "test" and points else None
            blocks.append(Block(site, image, labels, drawn, refl, valid, checks))
    if not blocks:
        sys.exit(f"{data / split}: no blocks; build them with: python training/make_data.py --out {data}")
    return blocks


# ---------------------------------------------------------------------------------------------- contenders


def members(model: str) -> list[str]:
    """The bundles of a contender: ``a+b`` is an ensemble of ``a`` and ``b``."""
    return model.split("+")


def predict_images(model: str, images: Sequence[Path]) -> list[np.ndarray]:
    """The class map ``eoseg predict`` writes for each of ``images`` (the card's defaults)."""
    from eoseg.predict import Predictor, PredictSettings

    predictor = Predictor(members(model), PredictSettings(overwrite=True))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for image in images:
            result = predictor.predict(image, tmp, progress=False)
            with rasterio.open(result.outputs["classes"]) as ds:
                out.append(ds.read(1))
    return out


def predict_bundle(model: str, blocks: Sequence[Block]) -> list[np.ndarray]:
    return predict_images(model, [block.image for block in blocks])


def pixel_forest(train: Sequence[Block], blocks: Sequence[Block], seed: int = 0,
                 per_class: int = 20_000) -> list[np.ndarray]:
    from sklearn.ensemble import RandomForestClassifier

    from eoseg.strokes import pixel_features

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for block in train:
        feats = pixel_features(block.reflectance, block.valid, ROLES)
        keep = block.labels != NODATA_CLASS
        xs.append(feats[:, keep].T)
        ys.append(block.labels[keep])
    x, y = np.concatenate(xs), np.concatenate(ys)
    picks = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)])
    forest = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, n_jobs=2, random_state=seed)
    forest.fit(x[picks], y[picks])
    preds = []
    for block in blocks:
        feats = pixel_features(block.reflectance, block.valid, ROLES)
        pred = np.full(block.valid.shape, NODATA_CLASS, np.uint8)
        pred[block.valid] = forest.predict(feats[:, block.valid].T).astype(np.uint8)
        preds.append(pred)
    return preds


def coastsat_models() -> dict[str, object] | None:
    """CoastSat's pickled classifiers, from the wheel fetched once into bench/.cache (None when unavailable)."""
    import joblib

    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob("coastsat_package-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), COASTSAT_WHEEL]
        if subprocess.run(cmd, capture_output=True, timeout=300).returncode != 0:
            return None
        wheels = sorted(CACHE.glob("coastsat_package-*.whl"))
    models = {}
    with zipfile.ZipFile(wheels[-1]) as wheel:
        for sensor, name in COASTSAT_MODELS.items():
            target = CACHE / name
            if not target.exists():
                target.write_bytes(wheel.read(f"coastsat/classification/models/{name}"))
            models[sensor] = joblib.load(target)
    return models


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a - b) / (a + b)


def _std3(x: np.ndarray) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    x = x.astype(np.float64)
    mean = uniform_filter(x, size=3, mode="reflect")
    return np.sqrt(np.maximum(uniform_filter(x * x, size=3, mode="reflect") - mean * mean, 0.0))


def coastsat_features(refl: np.ndarray) -> np.ndarray:
    """(20, H, W): 5 bands, 5 normalized differences, and the 3 × 3 std of each (published definition)."""
    b, g, r, n, s = refl.astype(np.float64)
    indices = [_nd(n, g), _nd(s, g), _nd(n, r), _nd(s, n), _nd(b, r)]
    base = [b, g, r, n, s, *indices]
    return np.stack(base + [_std3(np.nan_to_num(v)) for v in base])


def coastsat(blocks: Sequence[Block]) -> list[np.ndarray] | None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pickles were made with another scikit-learn version
        models = coastsat_models()
        if models is None:
            return None
        preds = []
        for block in blocks:
            feats = coastsat_features(block.reflectance)
            ok = block.valid & np.all(np.isfinite(feats), axis=0)
            pred = np.full(block.valid.shape, NODATA_CLASS, np.uint8)
            labels = models[block.sensor].predict(feats[:, ok].T).astype(int)
            pred[ok] = COASTSAT_TO_EOSEG[labels]
            preds.append(pred)
    return preds


# ---------------------------------------------------------------------------------------------- scoring


def _block_confusion(block: Block, pred: np.ndarray, reference: str) -> np.ndarray | None:
    """The block's confusion matrix against ``reference``: pixels, or for ``points`` the stratified estimate."""
    if reference == "points":
        return None if block.points is None else np.rint(estimated_confusion(block.points, pred)).astype(np.int64)
    truth = (block.labels if reference == "dense" else block.strokes).astype(np.int64)
    p = pred.astype(np.int64)
    truth[p == NODATA_CLASS] = NODATA_CLASS
    return confusion_matrix(truth.ravel(), p.ravel(), K)


def score(blocks: Sequence[Block], preds: Sequence[np.ndarray], reference: str) -> dict:
    per_site: dict[str, np.ndarray] = {}
    points: dict[str, int] = {}
    for block, pred in zip(blocks, preds, strict=True):
        cm = _block_confusion(block, pred, reference)
        if cm is None:
            continue
        per_site[block.site.name] = per_site.get(block.site.name, 0) + cm
        if reference == "points":
            points[block.site.name] = len(block.points)
    coast = [s for s in per_site if not next(x for x in SITES if x.name == s).negative]
    pooled = sum(per_site[s] for s in coast)
    result = {s: _metrics(cm, points.get(s)) for s, cm in per_site.items()}
    if coast:
        result["coastal sites"] = _metrics(pooled, sum(points.get(s, 0) for s in coast) if points else None)
    return result


def _metrics(cm: np.ndarray, points: int | None = None) -> dict:
    m = metrics_from_confusion(cm, COASTAL.names)
    out = {"miou": m["mean_iou"], "accuracy": m["overall_accuracy"],
           "iou": {name: c["iou"] for name, c in m["per_class"].items()}, "pixels": m["pixels"],
           "confusion": cm.tolist()}
    if points is not None:  # the points reference: pixels are estimated from this many interpreted points
        out["points"] = points
    return out


def _fmt(v) -> str:
    return "  -  " if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def print_table(results: dict, reference: str) -> None:
    names = COASTAL.names
    sites = list(next(iter(results.values()))[reference])
    if not sites:
        return
    unit = "points (est. pixels)" if reference == "points" else "pixels"
    print(f"\nreference: {reference}")
    print(f"{'site':14s} {'contender':14s} {'mIoU':>6s} " + " ".join(f"{n[:8]:>8s}" for n in names) + f"   {unit}")
    for site in sites:
        for name, res in results.items():
            m = res[reference][site]
            ious = [m["iou"].get(n) for n in names]
            size = f"{m['points']} ({m['pixels']})" if "points" in m else f"{m['pixels']}"
            print(f"{site:14s} {name:14s} {_fmt(m['miou']):>6s} " + " ".join(f"{_fmt(v):>8s}" for v in ious)
                  + f"   {size}")


def print_differences(blocks: Sequence[Block], contenders: dict, models: Sequence[str]) -> dict:
    """Each model's pooled points mIoU minus each peer's, with its 95 % paired-bootstrap interval."""
    keep = [i for i, b in enumerate(blocks) if b.points is not None]
    if not keep:
        return {}
    points = [blocks[i].points for i in keep]
    out = {}
    print("\npoints reference, coastal sites: mean IoU difference [95 % paired bootstrap over the points]")
    for model in models:
        for peer in (p for p in contenders if p not in models):
            d, low, high = bootstrap_difference(points, [contenders[model][i] for i in keep],
                                                [contenders[peer][i] for i in keep])
            print(f"{model} - {peer}: {d:+.3f} [{low:+.3f}, {high:+.3f}]")
            out[f"{model} - {peer}"] = {"difference": d, "ci95": [low, high]}
    return out


def card_path(model: str) -> Path:
    from eoseg.bundle import CARD_FILE, resolve_bundle

    return resolve_bundle(model) / CARD_FILE


def validation_miou(model: str) -> float | None:
    if len(members(model)) > 1:
        return None  # an ensemble has no validation run of its own
    card = json.loads(card_path(model).read_text())
    return (card.get("metrics", {}).get("validation") or {}).get("mean_iou")


def print_selection(results: dict, models: Sequence[str]) -> dict | None:
    """Validation mIoU (card) vs held-out coastal dense mIoU per model, and their Spearman correlation."""
    from scipy.stats import spearmanr

    pairs = [(m, validation_miou(m), results[m]["dense"]["coastal sites"]["miou"]) for m in models]
    pairs = [p for p in pairs if p[1] is not None]
    if len(pairs) < 3:
        return None
    rho = float(spearmanr([p[1] for p in pairs], [p[2] for p in pairs]).statistic)
    print("\nrun selection: validation mIoU (card) vs held-out coastal dense mIoU")
    for model, val, held in sorted(pairs, key=lambda p: p[1]):
        print(f"{model:32s} {val:.3f}  {held:.3f}")
    print(f"Spearman rank correlation over {len(pairs)} models: {rho:.3f}")
    return {"spearman": rho, "models": {m: {"validation": v, "held_out_dense": h} for m, v, h in pairs}}


def write_cards(results: dict, models: Sequence[str]) -> None:
    for model in models:
        path = card_path(model)
        card = json.loads(path.read_text())
        entry = {ref: {site: {k: v for k, v in m.items() if k != "confusion"} for site, m in res.items()}
                 for ref, res in results[model].items()}
        peers = {name: {ref: res[ref]["coastal sites"]["miou"] for ref in res} for name, res in results.items()
                 if name not in models}
        card.setdefault("metrics", {})["held_out_sites"] = {**entry, "peers_miou": peers,
                                                             "benchmark": "bench/models.py"}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(card, indent=2) + "\n")
        tmp.replace(path)


def map_dir(out: Path, contender: str) -> Path:
    """Where ``write_maps`` puts a contender's class maps: ``runs/x/ens`` -> ``maps/runs_x_ens``."""
    return out / "maps" / contender.replace("/", "_")


def write_maps(blocks: Sequence[Block], contenders: dict, out: Path) -> None:
    """Each contender's class map of each test block, georeferenced as the block (``maps/<contender>/<site>.tif``):
    to look at in QGIS, and for ``training/sample_points.py --disagree`` to find where the maps differ."""
    profiles = []
    for block in blocks:
        with rasterio.open(block.image) as src:
            profiles.append({"driver": "GTiff", "width": src.width, "height": src.height, "count": 1,
                             "dtype": "uint8", "crs": src.crs, "transform": src.transform, "nodata": NODATA_CLASS,
                             "compress": "deflate"})
    for name, preds in contenders.items():
        folder = map_dir(out, name)
        folder.mkdir(parents=True, exist_ok=True)
        for block, profile, pred in zip(blocks, profiles, preds, strict=True):
            with rasterio.open(folder / f"{block.site.name}.tif", "w", **profile) as dst:
                dst.write(pred.astype(np.uint8), 1)


def plot(results: dict, out: Path) -> None:
    from eoseg.evaluate import plot_confusion

    for name, res in results.items():
        cm = np.array(res["dense"]["coastal sites"]["confusion"])
        plot_confusion(cm, COASTAL.names, out / f"confusion_{Path(name).name}.png")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "ms")
    parser.add_argument("--models", nargs="+", default=["resunet"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "models")
    parser.add_argument("--no-coastsat", action="store_true")
    parser.add_argument("--write-card", action="store_true")
    args = parser.parse_args(argv)
    if args.write_card and any(len(members(m)) > 1 for m in args.models):
        parser.error("--write-card writes each bundle's own card; score an ensemble (a+b) without it")
    blocks = load_blocks(args.data, "test")
    train = load_blocks(args.data, "train", strokes=False)
    contenders: dict[str, list[np.ndarray]] = {}
    timings = {}
    for model in args.models:
        t0 = time.perf_counter()
        contenders[model] = predict_bundle(model, blocks)
        timings[model] = time.perf_counter() - t0
    t0 = time.perf_counter()
    contenders["pixel-rf"] = pixel_forest(train, blocks)
    timings["pixel-rf"] = time.perf_counter() - t0
    if not args.no_coastsat:
        preds = coastsat(blocks)
        if preds is None:
            print("coastsat: the coastsat-package wheel could not be fetched; column left out")
        else:
            contenders["coastsat"] = preds
    results = {name: {ref: score(blocks, preds, ref) for ref in REFERENCES}
               for name, preds in contenders.items()}
    for ref in REFERENCES:
        print_table(results, ref)
    differences = print_differences(blocks, contenders, args.models)
    selection = print_selection(results, args.models)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "models.json").write_text(json.dumps({"results": results, "seconds": timings,
                                                      "differences": differences, "selection": selection},
                                                     indent=2))
    plot(results, args.out)
    write_maps(blocks, contenders, args.out)
    if args.write_card:
        write_cards(results, args.models)
    return results


if __name__ == "__main__":
    main()
