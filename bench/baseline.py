"""Benchmark: a model bundle vs a per-pixel random forest on the same held-out split of an eoseg dataset.

The random forest is the kind of classifier coastal tools use today (e.g. CoastSat's shoreline classifier: a
per-pixel MLP / RF on band values, normalized-difference indices and local texture). Both are scored over the
same pixels with the same formulas:

- model: :func:`eoseg.evaluate.evaluate_bundle` (exactly what ``eoseg evaluate`` computes);
- random forest: a confusion matrix (:func:`eoseg.metrics.confusion_matrix`) of its predictions over every
  labelled pixel of the split, then :func:`eoseg.metrics.metrics_from_confusion`.

Pixels scored: each scene (chip) of the split is reassembled from its tiles using the tile windows of the
manifest, so a pixel covered by two tiles (the grid pulls the last row / column of tiles back inside the
scene, so they overlap even with ``overlap: 0``) counts once, and tile padding (marked invalid, labelled
ignore) never counts. A pixel is scored when its label is not the ignore value and it is valid; this is the
set ``evaluate_bundle`` scores, and the script checks that both pixel counts agree.

Features per pixel (computed on the whole reassembled scene, float32, from the raw band values as stored in
the dataset; invalid pixels are first filled with the band's mean over the scene's valid pixels):

- raw values of the bands the forest uses (default: every dataset band: red, green, blue, nir);
- normalized differences, each only when its bands are used (a zero denominator gives 0):
  ``ndwi`` = (green − nir) / (green + nir), ``ndvi`` = (nir − red) / (nir + red),
  ``rbi`` = (red − blue) / (red + blue);
- ``brightness``: mean of the used bands;
- 3 × 3 texture: local standard deviation, sqrt(E[x²] − E[x]²) with
  ``scipy.ndimage.uniform_filter(size=3, mode="reflect")``, of each used band and of brightness.

With red, green, blue, nir that is 13 features; the RGB-only variant (red, green, blue; no ndwi / ndvi) has 9.
A model card that lists red, green, blue is comparable with the RGB forest (same inputs); the 4-band forest
sees NIR, which the model does not, and is reported as the stronger reference a NIR-capable tool would get.

Training: ``RandomForestClassifier(n_estimators=100, max_depth=20, n_jobs=2, random_state=seed)`` on at most
200 000 pixels drawn uniformly (seeded, without replacement) from the labelled, valid pixels of the train
split. ``class_weight`` is chosen per variant between ``None`` and ``"balanced"`` by mean IoU on the
validation split (both forests are fitted; the better one is scored on ``--split``); ``--class-weight``
fixes it instead. The forest is never fitted on validation or test pixels.

Outputs: a table (per-class IoU, mean IoU, overall accuracy; timings) on stdout, ``--out FILE.json`` (the
full comparison: metrics, confusion matrices, selection, timings) and, with ``--write-card``, the bundle's
``card.json`` rewritten atomically (temporary file + ``os.replace``; the weights are not touched) with
``metrics.<split>`` (the model) and ``metrics.baseline_random_forest`` / ``metrics.baseline_random_forest_rgb``.

Usage: python bench/baseline.py [--data data/ocean-beach] [--model eoseg/weights/resunet] [--split test]
       [--seed 0] [--class-weight auto|none|balanced] [--no-rgb] [--out FILE.json] [--write-card]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without an installed eoseg
    sys.path.insert(0, str(ROOT))

from eoseg.dataset import Manifest, load_manifest  # noqa: E402
from eoseg.metrics import confusion_matrix, metrics_from_confusion  # noqa: E402

ALL_BANDS = ("red", "green", "blue", "nir")
RGB_BANDS = ("red", "green", "blue")
# name: (a, b) for (a - b) / (a + b)
INDICES = {"ndwi": ("green", "nir"), "ndvi": ("nir", "red"), "rbi": ("red", "blue")}
MAX_TRAIN_PIXELS = 200_000
N_ESTIMATORS = 100
MAX_DEPTH = 20
N_JOBS = 2
CARD_KEY = "baseline_random_forest"


# ------------------------------------------------------------------------------------------- scenes


@dataclass
class SceneArrays:
    """One scene of a split, reassembled from its tiles: raw image (C, H, W), label (H, W), valid (H, W)."""

    name: str
    image: np.ndarray
    label: np.ndarray  # the ignore value where unlabelled, invalid or covered by no tile
    valid: np.ndarray
    ignore: int = 255

    @property
    def scored(self) -> np.ndarray:
        """Pixels that count: labelled and valid."""
        return self.valid & (self.label != self.ignore)


def load_scenes(manifest: Manifest, split: str) -> list[SceneArrays]:
    """Every scene of ``split``, pasted together from its tiles' windows (padding dropped, overlaps once)."""
    ignore = manifest.ignore_value
    out: dict[str, SceneArrays] = {}
    for rec in manifest.tiles(split):
        sid = rec["scene"]
        if sid not in out:
            s = manifest.scenes[sid]
            h, w, c = s["height"], s["width"], len(manifest.roles)
            out[sid] = SceneArrays(sid, np.zeros((c, h, w), np.float32), np.full((h, w), ignore, np.uint8),
                                   np.zeros((h, w), bool), ignore)
        r0, c0, h, w = rec["window"]
        with np.load(manifest.path / rec["file"]) as z:
            image, label, valid = z["image"], z["label"], z["valid"]
        scene = out[sid]
        scene.image[:, r0:r0 + h, c0:c0 + w] = image[:, :h, :w]
        scene.label[r0:r0 + h, c0:c0 + w] = label[:h, :w]
        scene.valid[r0:r0 + h, c0:c0 + w] = valid[:h, :w]
    for scene in out.values():
        scene.label[~scene.valid] = ignore
    return list(out.values())


# ------------------------------------------------------------------------------------------- features


def feature_names(bands: Sequence[str]) -> list[str]:
    """Names of the per-pixel features for ``bands``, in the order :func:`pixel_features` stacks them."""
    bands = list(bands)
    names = list(bands)
    names += [k for k, (a, b) in INDICES.items() if a in bands and b in bands]
    names.append("brightness")
    names += [f"std3_{b}" for b in [*bands, "brightness"]]
    return names


def _normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    total = a + b
    return np.divide(a - b, total, out=np.zeros_like(total), where=total != 0)


def _local_std(x: np.ndarray) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    mean = uniform_filter(x, size=3, mode="reflect")
    mean_sq = uniform_filter(x * x, size=3, mode="reflect")
    return np.sqrt(np.maximum(mean_sq - mean * mean, 0))


def pixel_features(image: np.ndarray, roles: Sequence[str], bands: Sequence[str],
                   valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W, F) float32 features (see the module docstring) of ``bands`` picked by role from ``image``
    (C, H, W) whose bands are ``roles``; invalid pixels are filled with the band's valid mean first."""
    roles = list(roles)
    missing = [b for b in bands if b not in roles]
    if missing:
        raise ValueError(f"the image has no band(s) {missing} (it has {roles})")
    x = {b: image[roles.index(b)].astype(np.float32) for b in bands}
    if valid is not None and not valid.all():
        for b, arr in x.items():
            arr = arr.copy()
            arr[~valid] = float(arr[valid].mean()) if valid.any() else 0.0
            x[b] = arr
    layers = [x[b] for b in bands]
    layers += [_normalized_difference(x[a], x[b]) for a, b in INDICES.values() if a in x and b in x]
    brightness = np.mean([x[b] for b in bands], axis=0, dtype=np.float32)
    layers.append(brightness)
    layers += [_local_std(x[b]) for b in bands] + [_local_std(brightness)]
    return np.stack(layers, axis=-1).astype(np.float32)


def labelled_pixels(scenes: Sequence[SceneArrays], roles: Sequence[str],
                    bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(X (N, F), y (N,)) over the scored pixels of ``scenes``, scene by scene in row-major order."""
    xs, ys = [], []
    for s in scenes:
        keep = s.scored
        xs.append(pixel_features(s.image, roles, bands, s.valid)[keep])
        ys.append(s.label[keep].astype(np.int64))
    n_features = len(feature_names(bands))
    if not xs:
        return np.zeros((0, n_features), np.float32), np.zeros(0, np.int64)
    return np.concatenate(xs), np.concatenate(ys)


def subsample(x: np.ndarray, y: np.ndarray, max_pixels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_pixels`` rows drawn uniformly without replacement (seeded), in their original order."""
    if len(y) <= max_pixels:
        return x, y
    idx = np.sort(np.random.default_rng(seed).choice(len(y), size=max_pixels, replace=False))
    return x[idx], y[idx]


# ------------------------------------------------------------------------------------------- forest


def fit_forest(x: np.ndarray, y: np.ndarray, seed: int = 0, class_weight: str | None = None,
               n_estimators: int = N_ESTIMATORS, max_depth: int | None = MAX_DEPTH, n_jobs: int = N_JOBS):
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth, n_jobs=n_jobs,
                                    random_state=seed, class_weight=class_weight)
    return forest.fit(x, y)


def score_forest(forest, x: np.ndarray, y: np.ndarray, class_names: list[str]) -> tuple[dict, np.ndarray]:
    """(metrics_from_confusion, confusion matrix) of ``forest`` on labelled pixels ``x`` / ``y``."""
    pred = forest.predict(x) if len(y) else np.zeros(0, np.int64)
    cm = confusion_matrix(y, pred, len(class_names), -1)  # y holds labelled pixels only
    return metrics_from_confusion(cm, class_names), cm


@dataclass
class ForestResult:
    bands: tuple[str, ...]
    features: list[str]
    class_weight: str | None
    train_pixels: int
    train_seconds: float
    inference_seconds: float
    metrics: dict
    confusion: np.ndarray
    selection: dict = field(default_factory=dict)  # {class_weight: validation mean IoU}

    def to_dict(self) -> dict:
        return {"bands": list(self.bands), "features": self.features, "class_weight": self.class_weight,
                "train_pixels": self.train_pixels, "train_seconds": round(self.train_seconds, 2),
                "inference_seconds": round(self.inference_seconds, 2), "selection_validation_miou": self.selection,
                "metrics": self.metrics, "confusion_matrix": self.confusion.tolist()}


def run_forest(manifest: Manifest, split: str, bands: Sequence[str], seed: int = 0, class_weight: str = "auto",
               max_train_pixels: int = MAX_TRAIN_PIXELS, n_estimators: int = N_ESTIMATORS,
               max_depth: int | None = MAX_DEPTH, n_jobs: int = N_JOBS,
               cache: dict | None = None) -> ForestResult:
    """Fit on the train split, pick ``class_weight`` on validation (``auto``), score on ``split``."""
    names = manifest.classes.names
    roles = manifest.roles
    cache = {} if cache is None else cache

    def scenes(sp: str) -> list[SceneArrays]:
        if sp not in cache:
            cache[sp] = load_scenes(manifest, sp)
        return cache[sp]

    x_train, y_train = subsample(*labelled_pixels(scenes("train"), roles, bands), max_train_pixels, seed)
    if len(y_train) == 0:
        raise ValueError("the train split holds no labelled pixel")
    choices = {"auto": [None, "balanced"], "none": [None], "balanced": ["balanced"]}[class_weight]
    fitted, seconds, selection = {}, {}, {}
    x_val, y_val = labelled_pixels(scenes("validation"), roles, bands) if len(choices) > 1 else (None, None)
    for cw in choices:
        t0 = time.perf_counter()
        fitted[cw] = fit_forest(x_train, y_train, seed, cw, n_estimators, max_depth, n_jobs)
        seconds[cw] = time.perf_counter() - t0
        if y_val is not None and len(y_val):
            selection[str(cw).lower()] = score_forest(fitted[cw], x_val, y_val, names)[0]["mean_iou"]
    best = choices[0]
    if selection:
        best = max(choices, key=lambda cw: (selection[str(cw).lower()], cw is None))
    eval_scenes = scenes(split)  # reading tiles is not timed
    t0 = time.perf_counter()
    x_eval, y_eval = labelled_pixels(eval_scenes, roles, bands)
    metrics, cm = score_forest(fitted[best], x_eval, y_eval, names)
    inference = time.perf_counter() - t0
    return ForestResult(tuple(bands), feature_names(bands), best, len(y_train), seconds[best], inference, metrics,
                        cm, selection)


# ------------------------------------------------------------------------------------------- card / table


def split_info(manifest: Manifest, split: str) -> dict:
    """Which split / groups (dates) / scenes the metrics cover."""
    split_cfg = manifest.data.get("split", {})
    groups = split_cfg.get("counts", {}).get(split, {}).get("groups", [])
    key = "dates" if split_cfg.get("group_by") == "date" else "groups"
    scenes = sorted({t["scene"] for t in manifest.tiles(split)})
    return {"split": split, key: groups, "scenes": len(scenes), "dataset": str(manifest.path)}


def card_entry(metrics: dict, info: dict, **extra) -> dict:
    """The compact record stored in a card: mean IoU, IoU by class name, accuracy, which split / dates."""
    return {"mean_iou": metrics["mean_iou"], "iou": {k: v["iou"] for k, v in metrics["per_class"].items()},
            "accuracy": metrics["overall_accuracy"], "pixels": metrics["pixels"], **info, **extra}


def forest_card_entry(result: ForestResult, info: dict, seed: int, n_estimators: int, max_depth: int | None,
                      model_bands: Sequence[str]) -> dict:
    return card_entry(result.metrics, info, bands=list(result.bands), features=result.features,
                      n_estimators=n_estimators, max_depth=max_depth, class_weight=result.class_weight,
                      train_split="train", train_pixels=result.train_pixels, seed=seed,
                      same_bands_as_model=list(result.bands) == list(model_bands))


def weights_sha256(bundle_dir: str | os.PathLike) -> str:
    import hashlib

    from eoseg.bundle import MODEL_FILE

    digest = hashlib.sha256()
    with open(Path(bundle_dir) / MODEL_FILE, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_card_metrics(bundle_dir: str | os.PathLike, entries: dict, expect_weights: str | None = None) -> Path:
    """Merge ``entries`` into ``metrics`` of ``bundle_dir/card.json``, rewriting it atomically; every other key
    (and the weights file) is left as it was. ``expect_weights``: the sha256 of the weights that were scored;
    refuses to write when the bundle now holds other weights (it was retrained meanwhile)."""
    from eoseg.bundle import CARD_FILE, ModelCard, _json_default

    if expect_weights is not None and weights_sha256(bundle_dir) != expect_weights:
        raise RuntimeError(f"{bundle_dir} holds other weights than those evaluated; card not updated")
    path = Path(bundle_dir) / CARD_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    data["metrics"] = {**metrics, **entries}
    ModelCard.from_dict(data, source=path)  # still a valid card
    text = json.dumps(data, indent=2, default=_json_default, allow_nan=True) + "\n"
    tmp = path.with_name(f".{CARD_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None or value != value else f"{value:.3f}"


def format_table(rows: list[tuple[str, dict]], class_names: list[str]) -> str:
    """One line per method: per-class IoU, mean IoU, overall accuracy, scored pixels."""
    width = max(len(label) for label, _ in rows) + 2
    cols = [*class_names, "mIoU", "accuracy"]
    lines = [" " * width + "  ".join(f"{c:>10}" for c in cols) + f"  {'pixels':>9}"]
    for label, m in rows:
        values = [m["per_class"][c]["iou"] for c in class_names] + [m["mean_iou"], m["overall_accuracy"]]
        lines.append(f"{label:<{width}}" + "  ".join(f"{_fmt(v):>10}" for v in values) + f"  {m['pixels']:>9,}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- main


def compare(data: str | Path, model: str | Path, split: str = "test", seed: int = 0, class_weight: str = "auto",
            rgb: bool = True, device: str = "auto", max_train_pixels: int = MAX_TRAIN_PIXELS,
            n_estimators: int = N_ESTIMATORS, max_depth: int | None = MAX_DEPTH, n_jobs: int = N_JOBS) -> dict:
    """Model and random-forest metrics on ``split``; returns the full comparison (see :func:`main`)."""
    from eoseg.bundle import read_card, resolve_bundle
    from eoseg.evaluate import evaluate_bundle

    manifest = load_manifest(data)
    bundle_dir = resolve_bundle(model)
    card = read_card(bundle_dir / "card.json")
    info = split_info(manifest, split)

    sha = weights_sha256(bundle_dir)
    t0 = time.perf_counter()
    report = evaluate_bundle(bundle_dir, manifest.path, split=split, device=device)
    model_seconds = time.perf_counter() - t0
    if weights_sha256(bundle_dir) != sha:
        raise RuntimeError(f"{bundle_dir} was rewritten during the evaluation; run again")

    cache: dict = {}
    variants = {"random_forest": tuple(b for b in ALL_BANDS if b in manifest.roles)}
    if rgb and set(RGB_BANDS) <= set(manifest.roles) and set(variants["random_forest"]) != set(RGB_BANDS):
        variants["random_forest_rgb"] = RGB_BANDS
    forests = {k: run_forest(manifest, split, bands, seed, class_weight, max_train_pixels, n_estimators, max_depth,
                             n_jobs, cache) for k, bands in variants.items()}
    for name, f in forests.items():
        if f.metrics["pixels"] != report.metrics["pixels"]:
            raise RuntimeError(f"{name} scored {f.metrics['pixels']} pixels but the model {report.metrics['pixels']}")
    comparable = [k for k, f in forests.items() if set(f.bands) == set(card.bands)]
    return {
        "data": str(manifest.path), "model": str(bundle_dir), "model_name": card.name, "model_bands": list(card.bands),
        "model_weights_sha256": sha,
        **{k: v for k, v in info.items() if k != "dataset"}, "seed": seed,
        "forest_params": {"n_estimators": n_estimators, "max_depth": max_depth, "n_jobs": n_jobs,
                          "max_train_pixels": max_train_pixels, "class_weight": class_weight},
        "comparable_with_model": comparable,
        "model_result": {"metrics": report.metrics, "confusion_matrix": report.confusion.tolist(),
                         "seconds": round(model_seconds, 2), "info": report.info},
        **{k: f.to_dict() for k, f in forests.items()},
        "card_entries": {
            split: card_entry(report.metrics, info, model=card.name, bands=list(card.bands)),
            **{f"baseline_{k}": forest_card_entry(f, info, seed, n_estimators, max_depth, card.bands)
               for k, f in forests.items()},
        },
    }


def print_comparison(result: dict) -> None:
    names = list(result["model_result"]["metrics"]["per_class"])
    group_key = "dates" if "dates" in result else "groups"
    print(f"split {result['split']}: {result['scenes']} scenes, {group_key} {', '.join(result[group_key])}; "
          f"dataset {result['data']}")
    rows = [(f"model {result['model_name']} ({','.join(result['model_bands'])})", result["model_result"]["metrics"])]
    for key in ("random_forest", "random_forest_rgb"):
        if key in result:
            f = result[key]
            same = " = model bands" if set(f["bands"]) == set(result["model_bands"]) else ""
            rows.append((f"RF ({','.join(f['bands'])}; {len(f['features'])} features{same})", f["metrics"]))
    print(format_table(rows, names))
    print(f"\nmodel: evaluate_bundle {result['model_result']['seconds']:.1f} s")
    for key in ("random_forest", "random_forest_rgb"):
        if key in result:
            f = result[key]
            sel = ", ".join(f"{k}={v:.4f}" for k, v in f["selection_validation_miou"].items())
            print(f"RF {','.join(f['bands'])}: class_weight={f['class_weight']} "
                  f"(validation mIoU {sel or 'not compared'}); train {f['train_seconds']:.1f} s on "
                  f"{f['train_pixels']:,} px; inference (features + predict) {f['inference_seconds']:.2f} s")
    comparable = result["comparable_with_model"]
    print("comparable with the model (same bands): " + (", ".join(comparable) if comparable else "none of the forests"))


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/ocean-beach", help="eoseg dataset directory")
    parser.add_argument("--model", default="eoseg/weights/resunet", help="bundle directory, card.json or name")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--class-weight", default="auto", choices=["auto", "none", "balanced"],
                        help="auto: the better of none / balanced by validation mean IoU")
    parser.add_argument("--no-rgb", action="store_true", help="skip the RGB-only forest")
    parser.add_argument("--max-train-pixels", type=int, default=MAX_TRAIN_PIXELS)
    parser.add_argument("--n-estimators", type=int, default=N_ESTIMATORS)
    parser.add_argument("--max-depth", type=int, default=MAX_DEPTH)
    parser.add_argument("--n-jobs", type=int, default=N_JOBS)
    parser.add_argument("--device", default="auto", help="device for the model (auto, cpu, cuda)")
    parser.add_argument("--out", type=Path, help="write the full comparison to this JSON file")
    parser.add_argument("--write-card", action="store_true",
                        help="store metrics.<split> and metrics.baseline_random_forest* in the bundle's card.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    result = compare(args.data, args.model, args.split, args.seed, args.class_weight, not args.no_rgb, args.device,
                     args.max_train_pixels, args.n_estimators, args.max_depth, args.n_jobs)
    print_comparison(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(f"wrote {args.out}")
    if args.write_card:
        path = write_card_metrics(result["model"], result["card_entries"], result["model_weights_sha256"])
        print(f"updated {path} (metrics: {', '.join(result['card_entries'])})")
    return result


if __name__ == "__main__":
    main()
