"""Benchmark: end-to-end prediction vs the bare model forward, non-model overhead, peak memory, polygons.

Measured in one run (machines are noisy, so ratios are what count), each figure in its own process:
- end-to-end megapixels/s of ``Predictor.predict`` (read, preflight, standardize, forward, blend, COG,
  polygons, style, STAC) vs the bare model forward over the same tiles (read and standardized beforehand,
  outside the clock; the same batches), and their ratio (target >= 0.9), on the Sentinel-2 Virginia 10 m
  scene (1932 × 1946 px, 3.8 MP) and on that scene resampled 4× per side (7728 × 7784 px, 60 MP), with the
  packaged default model and with an smp U-Net / ResNet-18 (random weights) at 512/64 tiles;
- the non-model overhead: a near-free model (a 1×1 convolution on the default model's bands) on the 60 MP
  scene, end-to-end wall time minus its bare forward time, as MP/s (target >= 30 on a 2-core machine);
- peak RSS of a prediction with ``--min-area 900 --simplify 10`` on the 3.8 MP and 60 MP scenes; their ratio
  (target <= 1.2);
- polygons per second (and MP/s) of writing that run's polygons again from its class COG, alone, with those
  options and with the default ones (target >= 20 MP/s on the 60 MP map);
- CPU seconds of each pipeline stage (reader, forward, blend, writer) in the end-to-end runs.

- with ``--product``: the same scene as a Sentinel-2 product folder (per-band files, B11/B12 at 20 m, read through
  a VRT and resampled on the fly) vs the stacked GeoTIFF: MP/s and peak RSS ratios, and whether the class
  rasters are identical;
- with ``--collar``: the scene with a slanted nodata collar over its west part (as a scene clipped to a footprint
  is) vs the scene as it is: end-to-end seconds per valid megapixel and the reader's CPU seconds, which hold
  the nearest-valid fill of the nodata pixels (eoseg.standardize.fill_invalid);
- with ``--shoreline [--shoreline-method prob|index]`` the peak-RSS runs also trace the shoreline (the memory
  target holds for the shoreline too: it is streamed from the finished rows).

Usage: python bench/predict.py [--models resunet,smp-resnet18] [--precision auto] [--skip-large] [--quick]
                               [--product] [--collar] [--shoreline] [--shoreline-method prob|index]
(``--quick``: the default model only, and the 60 MP ratio skipped; the overhead and memory runs are kept.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIRGINIA = ROOT.parent / "shared/data/scenes/sentinel2_virginia/S2A_18SVG_20160112_L1C_virginia_10m_6band.tif"


def resample(src: Path, dst: Path, factor: int) -> Path:
    """Write ``src`` upsampled ``factor``× per side (bilinear), strip by strip."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    with rasterio.open(src) as ds:
        profile = ds.profile | {"width": ds.width * factor, "height": ds.height * factor, "tiled": True,
                                "blockxsize": 512, "blockysize": 512, "compress": "deflate", "BIGTIFF": "IF_SAFER",
                                "transform": ds.transform @ ds.transform.scale(1 / factor, 1 / factor)}
        with rasterio.open(dst, "w", **profile) as out:
            out.descriptions = ds.descriptions
            step = 128
            for r0 in range(0, ds.height, step):
                h = min(step, ds.height - r0)
                data = ds.read(window=Window(0, r0, ds.width, h), out_shape=(ds.count, h * factor, ds.width * factor),
                               resampling=Resampling.bilinear)
                out.write(data, window=Window(0, r0 * factor, ds.width * factor, h * factor))
    return dst


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


FREE, SMP = "free", "smp-resnet18"


def bench_model(name: str):
    """A packaged bundle by name, or one of the benchmark's own models built in memory: ``free`` (a 1×1
    convolution on the default model's bands: the forward costs next to nothing) or ``smp-resnet18`` (smp's
    U-Net on a ResNet-18 encoder, random weights, 512/64 tiles)."""
    if name not in (FREE, SMP):
        return name
    import dataclasses

    import torch

    from eoseg.bundle import DEFAULT_MODEL, ModelBundle, load_bundle
    from eoseg.models import build_model

    base = load_bundle(DEFAULT_MODEL)
    c, k = len(base.card.bands), len(base.scheme)
    if name == FREE:
        torch.manual_seed(0)
        model = torch.nn.Conv2d(c, k, kernel_size=1).eval()
        card = dataclasses.replace(base.card, name=FREE)
    else:
        model = build_model("smp-unet", c, k, encoder_name="resnet18", encoder_weights=None).eval()
        card = dataclasses.replace(base.card, name=SMP, arch="smp-unet", tile_size=512, overlap=64,
                                   arch_params={"encoder_name": "resnet18"})
    return ModelBundle(card=card, model=model, path=None, sha256=name)


def child(args: argparse.Namespace) -> None:
    """Runs in a subprocess: one measurement, printed as JSON on the last line."""
    from eoseg.predict import Predictor, PredictSettings
    from eoseg.process import tune_process

    polygon_options = {"min_area": args.min_area, "simplify": args.simplify} if args.mode == "e2e-polygons" else {}
    if polygon_options and args.shoreline:
        polygon_options |= {"shoreline": True, "shoreline_method": args.shoreline_method}
    predictor = Predictor(bench_model(args.model), PredictSettings(precision=args.precision,
                                                                   batch_size=args.batch_size, overwrite=True,
                                                                   **polygon_options))
    tune_process([args.scene], cpu=predictor.device.type == "cpu")  # as the CLI does
    baseline = peak_rss_mib()
    out = {"device": str(predictor.device), "precision": predictor.precision, "tile": predictor.tile_size,
           "overlap": predictor.overlap, "rss_after_model_mib": baseline}
    if args.mode == "forward":
        out |= bare_forward(predictor, args.scene, args.batch_size)
        out["peak_rss_mib"] = peak_rss_mib()
    else:
        result = predictor.predict(args.scene, args.out, progress=False)
        out |= {"seconds": result.seconds, "pixels": result.width * result.height, "tiles": result.tiles,
                "valid_fraction": result.quality["valid_fraction"],
                "classes": str(result.outputs["classes"]), "stages": result.stage_cpu_seconds}
        out["peak_rss_mib"] = peak_rss_mib()  # before the polygon timing below, which is not part of predict
        if polygon_options:
            out |= polygons_alone(result.outputs["classes"], predictor.scheme, args)
        if "shoreline" in result.outputs:
            import pyogrio

            from eoseg.outputs.shoreline import data_layer

            path = result.outputs["shoreline"]
            out["shoreline_lines"] = pyogrio.read_info(path, layer=data_layer(path))["features"]
    print(json.dumps(out))


def polygons_alone(classes: Path, scheme, args: argparse.Namespace) -> dict:
    """Seconds and polygon count of writing the polygons again from the class COG (strip by strip), with the
    default options (every region) and with ``--min-area`` / ``--simplify`` (sieved on strips, simplified)."""
    import pyogrio
    import rasterio

    from eoseg.outputs.vectors import write_polygons_streamed

    with rasterio.open(classes) as ds:
        transform, crs = ds.transform, ds.crs
    def timed(name: str, **options) -> tuple[float, int]:
        target = Path(args.out) / f"{name}.gpkg"
        start = time.perf_counter()
        write_polygons_streamed(classes, transform, crs, target, scheme, **options)
        return time.perf_counter() - start, pyogrio.read_info(target)["features"]

    seconds, count = timed("polygons_again", min_area_m2=args.min_area, simplify=args.simplify)
    default_seconds, default_count = timed("polygons_default")
    return {"polygon_seconds": seconds, "polygons": count,
            "polygon_default_seconds": default_seconds, "polygon_default_polygons": default_count}


def bare_forward(predictor, scene_path: str, batch_size: int) -> dict:
    """Time only the forward passes over the scene's non-empty tiles, in the batches the pipeline forms
    (they span tile rows); reading and standardizing happen outside the clock, a tile row at a time."""
    import torch

    from eoseg.predict import strip_tile_reader
    from eoseg.scene import SceneReader

    scene = predictor.open(scene_path)
    grid = predictor.scene_grid(scene)
    std = predictor.scene_standardization(scene)
    predictor.warm_up(grid.tile(0, 0).size)  # as predict does, before its clock
    forward = predictor.forward

    def run(batch: list) -> float:
        x = np.stack(batch)
        start = time.perf_counter()
        probs = forward.probabilities(x)
        if probs.device.type == "cuda":
            torch.cuda.synchronize(probs.device)
        batch.clear()
        return time.perf_counter() - start

    seconds, tiles, pending = 0.0, 0, []
    with SceneReader(scene) as reader:
        read = strip_tile_reader(reader, grid, std)
        for tile in grid:
            x, valid = read(tile)
            if valid.any():
                pending.append(x)
                tiles += 1
            if len(pending) == batch_size:
                seconds += run(pending)
        if pending:
            seconds += run(pending)
    return {"seconds": seconds, "pixels": scene.width * scene.height, "tiles": tiles}


def measure(mode: str, scene: Path, out: Path, args: argparse.Namespace, model: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--scene", str(scene), "--out", str(out), "--model",
           model, "--precision", args.precision, "--batch-size", str(args.batch_size),
           "--min-area", str(args.min_area), "--simplify", str(args.simplify),
           "--shoreline-method", args.shoreline_method] + (["--shoreline"] if args.shoreline else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        sys.exit(f"bench child failed ({mode} {model} {scene.name}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=f"resunet,{SMP}", help="models for the e2e / bare forward ratios")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--scene", type=Path, default=VIRGINIA)
    parser.add_argument("--skip-large", action="store_true", help="skip the 60 MP scene (overhead, memory ratio)")
    parser.add_argument("--quick", action="store_true", help="default model only; no 60 MP ratio")
    parser.add_argument("--min-area", type=float, default=900.0, help="m², for the peak RSS runs")
    parser.add_argument("--simplify", type=float, default=10.0, help="CRS units, for the peak RSS runs")
    parser.add_argument("--product", action="store_true",
                        help="also predict the scene as a Sentinel-2 product folder (per-band files, 20 m bands)")
    parser.add_argument("--collar", action="store_true",
                        help="also predict the scene with a slanted nodata collar over its west part")
    parser.add_argument("--shoreline", action="store_true", help="the peak RSS runs also trace the shoreline")
    parser.add_argument("--shoreline-method", default="prob", choices=["prob", "index"])
    parser.add_argument("--child", choices=["e2e", "e2e-polygons", "forward"])
    parser.add_argument("--model", default="resunet", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        child(args)
        return
    if not args.scene.exists():
        sys.exit(f"{args.scene}: benchmark scene not found (../shared/data)")
    models = ["resunet"] if args.quick else args.models.split(",")
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} at the start")
    with tempfile.TemporaryDirectory(prefix="eoseg-bench-") as tmp:
        tmp = Path(tmp)
        big = None if args.skip_large else resample(args.scene, tmp / "virginia_resampled_4x.tif", 4)
        scenes = [("3.8 MP", args.scene)] + ([("60 MP", big)] if big and not args.quick else [])
        for model in models:
            for label, scene in scenes:
                e2e = measure("e2e", scene, tmp / f"{model}-{label}", args, model)
                fwd = measure("forward", scene, tmp / "fwd", args, model)
                report(f"{model} on {label} ({scene.name})", e2e, fwd)
        if args.product:
            stack = measure("e2e", args.scene, tmp / "stack", args, "resunet")
            product = measure("e2e", make_product(args.scene, tmp / "S2A_18SVG_20160112_0_L1C"), tmp / "product",
                              args, "resunet")
            report_product(stack, product)
        if args.collar:
            plain = measure("e2e", args.scene, tmp / "plain", args, "resunet")
            collared = measure("e2e", make_collar(args.scene, tmp / "collar.tif"), tmp / "collared", args,
                               "resunet")
            report_collar(plain, collared)
        if big is not None:
            e2e = measure("e2e", big, tmp / "free", args, FREE)
            fwd = measure("forward", big, tmp / "free-fwd", args, FREE)
            report_overhead(e2e, fwd)
        small = measure("e2e-polygons", args.scene, tmp / "small-polygons", args, "resunet")
        report_polygons(f"resunet on {args.scene.name}", small, args)
        if big is not None:
            large = measure("e2e-polygons", big, tmp / "large", args, "resunet")
            report_polygons("resunet on the scene resampled 4× per side", large, args)
            report_large(small, large)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


def make_product(stack: Path, folder: Path) -> Path:
    """The stack as a Sentinel-2 folder of per-band GeoTIFFs: 10 m bands as they are, B11/B12 at 20 m (the 2 × 2
    means of their nearest-upsampled values, i.e. the original 20 m pixels)."""
    import rasterio

    folder.mkdir()
    with rasterio.open(stack) as ds:
        for i, name in enumerate(ds.descriptions, start=1):
            data = ds.read(i)
            transform = ds.transform
            if name in ("B11", "B12"):
                data = data.reshape(data.shape[0] // 2, 2, data.shape[1] // 2, 2).mean(axis=(1, 3)).astype(data.dtype)
                transform = transform * transform.scale(2)
            meta = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
                    "dtype": data.dtype.name, "crs": ds.crs, "transform": transform, "tiled": True,
                    "compress": "deflate", "blockxsize": 256, "blockysize": 256}
            with rasterio.open(folder / f"{name}.tif", "w", **meta) as dst:
                dst.write(data, 1)
    return folder


def make_collar(scene: Path, dst: Path) -> Path:
    """``scene`` with the nodata value written over a slanted west part (about a third of it)."""
    import rasterio

    with rasterio.open(scene) as src:
        data, profile, names = src.read(), src.profile, src.descriptions
    rows, cols = np.mgrid[:src.height, :src.width]
    data[:, cols + 0.3 * rows < 0.2 * src.width + 0.3 * src.height] = profile["nodata"]
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        out.descriptions = names
    return dst


def report_collar(plain: dict, collared: dict) -> None:
    def per_valid_mp(m: dict) -> float:
        return m["seconds"] / (m["pixels"] * m["valid_fraction"] / 1e6)

    print(f"the scene with a slanted nodata collar ({1 - collared['valid_fraction']:.0%} nodata) vs as it is:")
    for label, m in (("as it is", plain), ("collar", collared)):
        print(f"  {label:9s} {m['seconds']:6.2f} s  {per_valid_mp(m):.3f} s per valid MP  {m['tiles']} tiles  "
              f"(stage CPU s: {stages(m)})")
    print(f"  ratio s per valid MP collar / as it is = {per_valid_mp(collared) / per_valid_mp(plain):.3f}")


def report_product(stack: dict, product: dict) -> None:
    import rasterio

    with rasterio.open(stack["classes"]) as a, rasterio.open(product["classes"]) as b:
        identical = bool((a.read() == b.read()).all())
    print("the same scene as a Sentinel-2 product folder (per-band files, B11/B12 at 20 m, VRT on the fly):")
    print(f"  end-to-end    {product['seconds']:7.2f} s  {mps(product):6.3f} MP/s  "
          f"peak RSS {product['peak_rss_mib']:.0f} MiB")
    print(f"  ratio product / stack: MP/s {mps(product) / mps(stack):.3f}, peak RSS "
          f"{product['peak_rss_mib'] / stack['peak_rss_mib']:.3f}; class rasters identical: {identical}")


def mps(m: dict) -> float:
    return m["pixels"] / 1e6 / m["seconds"]


def stages(m: dict) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in m.get("stages", {}).items())


def report(name: str, e2e: dict, fwd: dict) -> None:
    print(f"{name}: {e2e['pixels'] / 1e6:.2f} MP, {e2e['tiles']} tiles of {e2e['tile']}/{e2e['overlap']}, "
          f"{e2e['device']}/{e2e['precision']}")
    print(f"  end-to-end    {e2e['seconds']:7.2f} s  {mps(e2e):6.3f} MP/s  peak RSS {e2e['peak_rss_mib']:.0f} MiB"
          f"  (stage CPU s: {stages(e2e)})")
    print(f"  bare forward  {fwd['seconds']:7.2f} s  {mps(fwd):6.3f} MP/s  ({fwd['tiles']} non-empty tiles)")
    print(f"  ratio end-to-end / bare forward = {mps(e2e) / mps(fwd):.3f}  (target >= 0.9)")


def report_overhead(e2e: dict, fwd: dict) -> None:
    left = e2e["seconds"] - fwd["seconds"]
    print(f"near-free model (1×1 conv) on {e2e['pixels'] / 1e6:.1f} MP: end-to-end {e2e['seconds']:.2f} s, bare "
          f"forward {fwd['seconds']:.2f} s  (stage CPU s: {stages(e2e)})")
    print(f"  non-model overhead {left:.2f} s = {e2e['pixels'] / 1e6 / max(left, 1e-9):.1f} MP/s  (target >= 30)")


def report_polygons(name: str, m: dict, args: argparse.Namespace) -> None:
    shoreline = f" --shoreline ({args.shoreline_method}: {m['shoreline_lines']} lines)" if args.shoreline else ""
    print(f"{name} with --min-area {args.min_area:g} --simplify {args.simplify:g}{shoreline}: "
          f"{m['pixels'] / 1e6:.1f} MP, {m['tiles']} tiles")
    print(f"  end-to-end    {m['seconds']:7.2f} s  {mps(m):6.3f} MP/s  peak RSS {m['peak_rss_mib']:.0f} MiB")
    for label, seconds, count in (("with those options", m["polygon_seconds"], m["polygons"]),
                                  ("default options", m["polygon_default_seconds"], m["polygon_default_polygons"])):
        print(f"  polygons alone, {label}: {seconds:6.2f} s  {count} polygons  {count / seconds:,.0f} polygons/s  "
              f"{m['pixels'] / 1e6 / seconds:.1f} MP/s")


def report_large(small: dict, large: dict) -> None:
    print(f"  peak RSS ratio 16× area / 1× (both with the polygon options) = "
          f"{large['peak_rss_mib'] / small['peak_rss_mib']:.3f}  (target <= 1.2)")
    print(f"  throughput ratio 16× / 1× = {mps(large) / mps(small):.3f}")


if __name__ == "__main__":
    main()
