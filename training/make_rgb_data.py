"""Build the training data of an RGB model with whole-scene context (configs/resunet-rgb-context.yaml).

Run from the repository root, after training/make_data.py:

    python training/make_data.py --out data/ms            # the multispectral sites' pieces and labels
    python training/make_rgb_data.py [--ms data/ms] [--out data/rgb]

The RGB model learns from two kinds of pieces, cut into 256 px tiles so that it sees whole-scene context:

- the training pieces of the multispectral sites (Virginia training rows, Klamath, Benin-Togo, the inland
  no-coast crop), their labels densified from the committed strokes; only red, green and blue are fed;
- the human-labelled Ocean Beach chips (about 72 × 153 px, padded into the tile; padding is ignored) of every
  date that ``configs/ocean-beach-dataset.yaml`` does not hold out for testing. The held-out test dates stay
  out entirely, so ``eoseg evaluate --data data/ocean-beach --split test`` remains an independent test.

Whole groups (an Ocean Beach date; a site piece and its repeats) go to training or validation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_data import TILE, dataset_config  # noqa: E402

from eoseg.config import DatasetConfig, load_config, validate  # noqa: E402
from eoseg.dataset import assign_splits, group_key, make_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OCEAN_BEACH = ROOT / "configs" / "ocean-beach-dataset.yaml"
# an Ocean Beach chip is grouped by its date (20181231T...); a site piece by its name without the _repN suffix
GROUPS = r"^(\d{8}(?=T)|.+?(?=(?:_rep\d+)?$))"
# the Ocean Beach chips are small (a sixth of a tile each): listed twice, they are about 15 % of the labelled
# pixels (6 copies, a third: Ocean Beach test 0.680 instead of 0.675, held-out sites 0.705 instead of 0.778)
OB_REPEAT = 2


def held_out_dates(cfg: DatasetConfig) -> set[str]:
    """The Ocean Beach dates the RGB model is tested on: the test split of the Ocean Beach dataset config."""
    folder = cfg.sources[0].labels
    groups = [group_key(p.stem, cfg.split) for p in sorted(Path(folder).glob("*.png"))]
    return {g for g, split in assign_splits(groups, cfg.split).items() if split == "test"}


def kept_chips(cfg: DatasetConfig, dates: set[str], tmp: Path, repeat: int = OB_REPEAT) -> list[dict]:
    """Folder sources over links to the chips of every date but ``dates`` (listed ``repeat`` times)."""
    source = cfg.sources[0]
    sources = []
    for k in range(repeat):
        links = tmp / f"copy{k}"
        bands = []
        for i, band in enumerate(source.bands):
            (links / f"band{i}").mkdir(parents=True)
            for image in sorted(Path(band.folder).iterdir()):
                if image.name[:8] not in dates:
                    (links / f"band{i}" / f"{image.stem}_rep{k}{image.suffix}").symlink_to(image.resolve())
            bands.append({"folder": str(links / f"band{i}"), "roles": band.roles,
                          "stem_replace": [list(r) for r in band.stem_replace]})
        (links / "labels").mkdir()
        for label in sorted(Path(source.labels).glob("*.png")):
            if label.name[:8] not in dates:
                (links / "labels" / f"{label.stem}_rep{k}{label.suffix}").symlink_to(label.resolve())
        sources.append({"kind": "folder", "labels": str(links / "labels"), "bands": bands})
    return sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ms", type=Path, default=Path("data/ms"), help="training/make_data.py's output")
    parser.add_argument("--out", type=Path, default=Path("data/rgb"))
    parser.add_argument("--ob-repeat", type=int, default=OB_REPEAT, help="copies of each Ocean Beach chip")
    args = parser.parse_args()
    if not (args.ms / "train").is_dir():
        sys.exit(f"{args.ms / 'train'}: no pieces; build them first with: python training/make_data.py --out {args.ms}")
    ocean = load_config(DatasetConfig, OCEAN_BEACH)
    dates = held_out_dates(ocean)
    print(f"Ocean Beach test dates kept out: {', '.join(sorted(dates))}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = dataset_config(args.ms, "train")
        roles = list(ocean.sources[0].bands[0].roles + ocean.sources[0].bands[1].roles)  # red green blue nir
        for source in cfg["sources"]:  # the same roles in the same order as the chips
            source["bands"] = [source["bands"][source["roles"].index(r)] for r in roles]
            source["roles"] = roles
        cfg["sources"] += kept_chips(ocean, dates, Path(tmp), args.ob_repeat)
        cfg["split"] = {"train": 0.85, "validation": 0.15, "test": 0.0, "seed": 114, "group_by": "pattern",
                        "group_pattern": GROUPS}
        manifest = make_dataset(validate(DatasetConfig, cfg), args.out, overwrite=True)
    print(f"{args.out}: {len(manifest.tiles())} tiles of {TILE} px "
          f"(train {len(manifest.tiles('train'))}, validation {len(manifest.tiles('validation'))})")


if __name__ == "__main__":
    main()
