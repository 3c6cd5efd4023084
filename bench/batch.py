"""Benchmark: `eoseg batch` throughput (scenes/s) with 1 and with 2 Dask workers, and their ratio.

Measured in one run, on this machine (machines are noisy, so the ratio is what counts; target >= 1.7 on
2 cores):
- archive: ``--scenes`` crops (default 8 × 768 × 768 px) of the Sentinel-2 Virginia 10 m 6-band scene
  (../shared/data/scenes/sentinel2_virginia), at different offsets, named like a dated archive;
- model: a random-weight Res-UNet bundle (filters 8, tiles 256 px, overlap 32; blue, green, red, nir), or
  ``--model``. Random weights cost the same forward time as trained ones but give a noisier class map, so
  polygonizing costs more than it would with a trained model;
- for each configuration a local cluster is started (processes, 127.0.0.1), warmed with a first batch (workers
  import torch and load the model), then the whole archive is run through ``run_batch(scheduler=...)`` into
  a fresh folder and timed: scenes / wall seconds;
- configurations: 1 worker × 1 torch thread, 2 workers × 1 torch thread each (the ratio of these two is the
  headline), and 1 worker × 2 torch threads (what a single process gets from intra-op threads);
- ``--repeats`` rounds, alternating the order; the best round of each configuration is reported, all rounds
  are printed. The load average is printed too: other processes on the machine lower the ratio.

Usage: python bench/batch.py [--scenes 8] [--size 768] [--repeats 2] [--model PATH] [--precision auto]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIRGINIA = ROOT.parent / "shared/data/scenes/sentinel2_virginia/S2A_18SVG_20160112_L1C_virginia_10m_6band.tif"
CONFIGS = (("1 worker × 1 thread", 1, 1), ("2 workers × 1 thread", 2, 1), ("1 worker × 2 threads", 1, 2))


def make_archive(directory: Path, n: int, size: int) -> list[Path]:
    """``n`` size × size crops of the Virginia scene at offsets spread over it, one file each."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(VIRGINIA) as ds:
        step_x = max(1, (ds.width - size) // max(1, (n + 1) // 2 - 1))
        for i in range(n):
            col = min((i // 2) * step_x, ds.width - size)
            row = 0 if i % 2 == 0 else ds.height - size
            profile = ds.profile | {"width": size, "height": size, "driver": "GTiff", "tiled": True,
                                    "blockxsize": 256, "blockysize": 256, "compress": "deflate",
                                    "transform": ds.transform @ Affine.translation(col, row)}
            path = directory / f"S2A_18SVG_201601{10 + i:02d}_crop{i}.tif"
            with rasterio.open(path, "w", **profile) as out:
                out.write(ds.read(window=Window(col, row, size, size)))
                out.descriptions = ds.descriptions
            paths.append(path)
    return paths


def make_bundle(directory: Path) -> Path:
    """A random-weight Res-UNet bundle (seeded) taking blue, green, red, nir."""
    import torch

    from eoseg.bundle import ModelCard, save_bundle
    from eoseg.models import build_model

    torch.manual_seed(0)
    bands = ("blue", "green", "red", "nir")
    model = build_model("resunet", in_channels=len(bands), num_classes=4, filters=8)
    card = ModelCard(name="bench-resunet", arch="resunet", bands=bands, arch_params={"filters": 8},
                     standardization={"mode": "scene", "mean": None, "std": None}, tile_size=256, overlap=32,
                     description="random weights for the batch benchmark")
    save_bundle(model.eval(), card, directory)
    return directory


def timed_round(archive: list[Path], model: str, work: Path, workers: int, threads: int,
                precision: str) -> tuple[float, float]:
    """(scenes per second, mean seconds per scene task) of one warmed batch over the archive on a fresh cluster."""
    from distributed import LocalCluster

    from eoseg.batch import run_batch

    settings = {"precision": precision}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster:
        address = cluster.scheduler_address
        warm = run_batch(archive[: 2 * workers], model, work / "warm", settings=settings, scheduler=address,
                         torch_threads=threads, progress=False)
        assert warm.ok, warm.table()
        out = work / f"out-{workers}w{threads}t-{time.monotonic_ns()}"
        start = time.perf_counter()
        report = run_batch(archive, model, out, settings=settings, scheduler=address, torch_threads=threads,
                           progress=False)
        seconds = time.perf_counter() - start
        assert report.ok and report.counts["ok"] == len(archive), report.table()
    shutil.rmtree(work / "warm", ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return len(archive) / seconds, sum(r["seconds"] for r in report.results) / len(report.results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default=None, help="bundle path or name (default: a random-weight Res-UNet)")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with tempfile.TemporaryDirectory(prefix="eoseg-bench-batch-") as tmp:
        work = Path(tmp)
        archive = make_archive(work / "archive", args.scenes, args.size)
        model = args.model or str(make_bundle(work / "bundle"))
        print(f"archive: {args.scenes} crops of {args.size}×{args.size} px of {VIRGINIA.name}; model: "
              f"{'random-weight Res-UNet (f=8, tile 256)' if args.model is None else model}; "
              f"precision {args.precision}; CPUs: {len(os.sched_getaffinity(0))}")
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        rounds: dict[str, list[float]] = {name: [] for name, _, _ in CONFIGS}
        for r in range(args.repeats):
            order = CONFIGS if r % 2 == 0 else tuple(reversed(CONFIGS))
            for name, workers, threads in order:
                rate, task = timed_round(archive, model, work, workers, threads, args.precision)
                rounds[name].append(rate)
                print(f"  round {r + 1}: {name}: {rate:.3f} scenes/s (a scene task took {task:.2f} s on average)")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        best = {name: max(rates) for name, rates in rounds.items()}
        for name, rate in best.items():
            print(f"{name:<22} {rate:.3f} scenes/s (best of {len(rounds[name])})")
        one, two, threaded = (best[name] for name, _, _ in CONFIGS)
        print(f"ratio 2 workers / 1 worker (1 thread each): {two / one:.2f}  (target >= 1.7)")
        print(f"ratio 2 workers × 1 thread / 1 worker × 2 threads: {two / threaded:.2f}")


if __name__ == "__main__":
    main()
