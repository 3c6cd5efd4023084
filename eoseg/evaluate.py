"""``eoseg evaluate``: metrics of a bundle over a whole dataset split, or of a class raster vs a label raster.

Both paths reduce to one confusion matrix (ignored pixels excluded) and :func:`eoseg.metrics.metrics_from_confusion`.
Over a dataset split every labelled pixel counts once: tiles of a scene overlap at the pulled-back edges, so a pixel
is scored from the first tile (row-major) that covers it, and padding is never scored. Outputs (optional,
``out_dir``): ``metrics.json`` (everything), ``confusion_matrix.csv`` / ``.png`` and ``per_sample.csv`` (one row
per scene / chip, or per raster).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eoseg.classes import COASTAL, ClassScheme
from eoseg.dataset import SPLITS, Manifest, TileDataset, load_manifest
from eoseg.errors import BundleError, DatasetError, OutputExistsError
from eoseg.metrics import ConfusionMeter, KLAccumulator, confusion_matrix, metrics_from_confusion
from eoseg.standardize import Standardization

REPORT_FILES = ("metrics.json", "confusion_matrix.csv", "confusion_matrix.png", "per_sample.csv")


@dataclass
class EvaluationReport:
    metrics: dict
    confusion: np.ndarray
    class_names: list[str]
    per_sample: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**self.info, "metrics": self.metrics, "confusion_matrix": self.confusion.tolist(),
                "class_names": self.class_names, "per_sample": self.per_sample}


# ------------------------------------------------------------------------------------------- bundle × dataset


def _sample_row(name: str, cm: np.ndarray, names: list[str]) -> dict:
    m = metrics_from_confusion(cm, names)
    row = {"sample": name, "pixels": m["pixels"], "overall_accuracy": m["overall_accuracy"],
           "mean_iou": m["mean_iou"], "dice": m["dice"]}
    row.update({f"iou_{n}": m["per_class"][n]["iou"] for n in names})
    return row


class _PixelOnce:
    """Per-scene masks of pixels already scored, so overlapping tiles count each pixel once."""

    def __init__(self, scenes: dict[str, dict]):
        self.scenes = scenes
        self.done: dict[str, np.ndarray] = {}

    def new_pixels(self, scene: str, window: list[int]) -> np.ndarray:
        r0, c0, h, w = window
        if scene not in self.done:
            s = self.scenes[scene]
            self.done[scene] = np.zeros((s["height"], s["width"]), dtype=bool)
        seen = self.done[scene][r0:r0 + h, c0:c0 + w]
        fresh = ~seen
        seen[...] = True
        return fresh


def model_scheme(classes: dict, manifest: Manifest, model_path: str | Path | None) -> ClassScheme:
    """A model card's class scheme, refused when ``manifest``'s dataset has another number of classes."""
    scheme = ClassScheme.from_dict(classes)
    if len(scheme) != len(manifest.classes):
        raise BundleError(f"the model predicts {len(scheme)} classes but the dataset has {len(manifest.classes)}",
                          path=model_path or manifest.path, fix="use a dataset with the model's class scheme")
    return scheme


def evaluate_bundle(model: str | Path, data: str | Path, split: str = "test", out_dir: str | Path | None = None,
                    batch_size: int = 8, device: str = "auto", overwrite: bool = False,
                    progress: bool = False) -> EvaluationReport:
    """Score bundle ``model`` on every tile of ``split`` of dataset ``data``."""
    from tqdm import tqdm

    from eoseg.bundle import load_bundle
    from eoseg.device import resolve_device

    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}", path="--split", fix=f"use one of: {', '.join(SPLITS)}")
    manifest = load_manifest(data)
    dev = resolve_device(device)
    bundle = load_bundle(model, device=str(dev))
    card = bundle.card
    scheme = model_scheme(card.classes, manifest, bundle.path)
    template = Standardization.from_dict(card.standardization)
    ds = TileDataset(manifest, split, list(card.bands), template, cache=False)
    if len(ds) == 0:
        raise DatasetError(f"the {split} split holds no tiles", path=manifest.path, fix="choose another --split")
    _check_out(out_dir, overwrite)
    n, ignore, names = len(scheme), manifest.ignore_value, scheme.names
    total, kl, once = ConfusionMeter(n, ignore), KLAccumulator(ignore), _PixelOnce(manifest.scenes)
    per_scene: dict[str, np.ndarray] = {}
    net = bundle.model.eval()
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    with torch.no_grad():
        for x, y, idx in tqdm(loader, disable=not progress, desc=f"evaluate {split}", unit="batch"):
            probs = net(x.to(dev)).float().softmax(dim=1).cpu()
            pred = probs.argmax(dim=1)
            for k, i in enumerate(idx.tolist()):
                rec = ds.records[i]
                r0, c0, h, w = rec["window"]
                fresh = torch.from_numpy(once.new_pixels(rec["scene"], rec["window"]))
                yk = y[k, :h, :w].clone()
                yk[~fresh] = ignore
                cm = total.update(yk, pred[k, :h, :w])
                kl.update(probs[k:k + 1, :, :h, :w], yk.unsqueeze(0))
                per_scene[rec["scene"]] = per_scene.get(rec["scene"], 0) + cm
    metrics = metrics_from_confusion(total.matrix, names, kl.value)
    report = EvaluationReport(
        metrics, total.matrix, names, [_sample_row(s, cm, names) for s, cm in per_scene.items()],
        {"model": str(bundle.path), "model_name": card.name, "data": str(manifest.path), "split": split,
         "tiles": len(ds), "scenes": len(per_scene), "standardization": card.standardization["mode"]},
    )
    if out_dir is not None:
        write_report(report, Path(out_dir))
    return report


# ------------------------------------------------------------------------------------------- rasters


def evaluate_rasters(pred: str | Path, labels: str | Path, out_dir: str | Path | None = None,
                     classes: ClassScheme = COASTAL, overwrite: bool = False) -> EvaluationReport:
    """Score a class raster against a label raster on the same grid (read in row strips)."""
    from rasterio.windows import Window

    _check_out(out_dir, overwrite)
    n, ignore = len(classes), classes.nodata
    meter = ConfusionMeter(n, ignore)
    excluded = 0
    with _open(pred) as p, _open(labels) as lab:
        if (p.height, p.width) != (lab.height, lab.width):
            raise DatasetError(f"prediction is {p.height} × {p.width} but labels are {lab.height} × {lab.width}",
                               path=pred, fix="resample the labels onto the prediction grid (gdalwarp)")
        if p.crs and lab.crs and (p.crs != lab.crs or not p.transform.almost_equals(lab.transform)):
            raise DatasetError("prediction and labels are not on the same grid (CRS or transform differ)",
                               path=pred, fix="resample the labels onto the prediction grid (gdalwarp)")
        rows = max(1, 4_000_000 // max(1, p.width))
        for r0 in range(0, p.height, rows):
            window = Window(0, r0, p.width, min(rows, p.height - r0))
            yp, yt = p.read(1, window=window).astype(np.int64), lab.read(1, window=window).astype(np.int64)
            if lab.nodata is not None:
                yt[yt == lab.nodata] = ignore
            unscored = (yt != ignore) & ((yp < 0) | (yp >= n))  # labelled but predicted nodata
            excluded += int(unscored.sum())
            yt[unscored] = ignore
            meter.update(yt, yp)
    names = classes.names
    metrics = metrics_from_confusion(meter.matrix, names)
    info = {"pred": str(pred), "labels": str(labels), "labelled_pixels_without_prediction": excluded}
    rows = [_sample_row(Path(pred).name, meter.matrix, names)]
    report = EvaluationReport(metrics, meter.matrix, names, rows, info)
    if out_dir is not None:
        write_report(report, Path(out_dir))
    return report


def _open(path: str | Path):
    import warnings

    import rasterio

    if not Path(path).is_file():
        raise DatasetError("file does not exist", path=path, fix="check the path")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            return rasterio.open(path)
        except rasterio.errors.RasterioError as exc:
            raise DatasetError(f"cannot open raster ({exc})", path=path, fix="pass a GeoTIFF") from exc


# ------------------------------------------------------------------------------------------- outputs


def _check_out(out_dir: str | Path | None, overwrite: bool) -> None:
    if out_dir is None or overwrite:
        return
    existing = [f for f in REPORT_FILES if (Path(out_dir) / f).exists()]
    if existing:
        raise OutputExistsError(f"an evaluation report exists here ({existing[0]})", path=out_dir,
                                fix="pass --overwrite or choose another --out")


def write_report(report: EvaluationReport, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / f for f in REPORT_FILES]
    files[0].write_text(json.dumps(report.to_dict(), indent=1, default=float))
    with files[1].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *report.class_names])
        for name, row in zip(report.class_names, report.confusion.tolist(), strict=True):
            writer.writerow([name, *row])
    plot_confusion(report.confusion, report.class_names, files[2])
    with files[3].open("w", newline="") as f:
        if report.per_sample:
            writer = csv.DictWriter(f, fieldnames=list(report.per_sample[0]))
            writer.writeheader()
            writer.writerows(report.per_sample)
    report.files = files
    return files


def plot_confusion(cm: np.ndarray, names: list[str], path: Path) -> None:
    """Row-normalized confusion matrix (recall per true class) annotated with fractions and counts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    fig = Figure(figsize=(1.3 * len(names) + 2, 1.1 * len(names) + 1.5))  # no pyplot, no backend switch
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(norm):
        ax.text(j, i, f"{v:.2f}\n{cm[i, j]:,}", ha="center", va="center", fontsize=8,
                color="white" if v > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalized)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


__all__ = ["EvaluationReport", "confusion_matrix", "evaluate_bundle", "evaluate_rasters", "write_report"]
