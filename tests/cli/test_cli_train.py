"""eoseg dataset / train / evaluate through the click group."""

from pathlib import Path

import yaml
from click.testing import CliRunner

from eoseg.cli import main

OB = Path(__file__).parents[1] / "data" / "ocean_beach"


def _dataset_yaml(tmp_path: Path) -> Path:
    cfg = {"sources": [{"kind": "folder", "labels": str(OB / "labels"), "bands": [
        {"folder": str(OB / "images_rgb"), "roles": ["red", "green", "blue"]},
        {"folder": str(OB / "images_nir"), "roles": ["nir"], "stem_replace": [["_ir-", "-"]]}]}],
        "tile_size": 64, "split": {"train": 0.34, "validation": 0.33, "test": 0.33}}
    path = tmp_path / "ds.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_dataset_train_evaluate(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["dataset", "-c", str(_dataset_yaml(tmp_path)), "-o", str(tmp_path / "ds"), "-q"])
    assert res.exit_code == 0, res.output
    assert "bands red,green,blue,nir" in res.output
    args = ["train", "-c", "configs/resunet-gym.yaml", "--data", str(tmp_path / "ds"), "-o", str(tmp_path / "run"),
            "-q", "--set", "epochs=1", "--set", "model.params.filters=4", "--set", "batch_size=4"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "best epoch 1/1" in res.output and (tmp_path / "run" / "bundle" / "card.json").is_file()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["params"]["filters"] == 4 and saved["schedule"]["name"] == "ramp"
    res = runner.invoke(main, ["evaluate", "--model", str(tmp_path / "run" / "bundle"), "--data", str(tmp_path / "ds"),
                               "--split", "validation", "-o", str(tmp_path / "eval"), "-q"])
    assert res.exit_code == 0, res.output
    assert "mean IoU" in res.output and "whitewater" in res.output
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_unknown_config_key_exit_code_2(tmp_path):
    res = CliRunner().invoke(main, ["train", "-c", "configs/resunet-gym.yaml", "--set", "modle.name=unet"])
    assert res.exit_code == 2
    assert "unknown key 'modle'" in res.output


def test_evaluate_needs_one_pair():
    res = CliRunner().invoke(main, ["evaluate", "--model", "x"])
    assert res.exit_code == 2 and "give either --model and --data, or --pred and --labels" in res.output


def test_seed_sweep_bundles_the_best_validation_run(tmp_path):
    """``--seeds``: one run per seed on the real Ocean Beach chips, the bundle of the best val_miou, seeds.csv."""
    import csv
    import json

    runner = CliRunner()
    assert runner.invoke(main, ["dataset", "-c", str(_dataset_yaml(tmp_path)), "-o", str(tmp_path / "ds"),
                                "-q"]).exit_code == 0
    args = ["train", "-c", "configs/resunet-gym.yaml", "--data", str(tmp_path / "ds"), "-o", str(tmp_path / "run"),
            "-q", "--set", "epochs=1", "--set", "model.params.filters=4", "--set", "batch_size=4",
            "--set", "early_stopping.monitor=val_miou"]
    res = runner.invoke(main, [*args, "--seeds", "3,11"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "run" / "seeds.csv").open()))
    assert [r["seed"] for r in rows] == ["3", "11"]
    values = [float(r["best_value"]) for r in rows]
    assert values[0] != values[1]  # the choice between the two runs means something
    chosen = [r for r in rows if r["chosen"] == "True"]
    assert len(chosen) == 1 and float(chosen[0]["best_value"]) == max(values)
    card = json.loads((tmp_path / "run" / "bundle" / "card.json").read_text())
    winner = json.loads((tmp_path / "run" / f"seed-{chosen[0]['seed']}" / "bundle" / "card.json").read_text())
    assert card["weights_sha256"] == winner["weights_sha256"]
    assert [s["seed"] for s in card["training"]["seed_sweep"]] == [3, 11]
    assert card["training"]["config"]["seed"] == int(chosen[0]["seed"])

    before = (tmp_path / "run" / "seeds.csv").read_text()
    res = runner.invoke(main, [*args, "--seeds", "5,6"])  # no --overwrite: refused before any run
    assert res.exit_code != 0 and "a model bundle already exists here" in res.output
    assert not (tmp_path / "run" / "seed-5").exists() and (tmp_path / "run" / "seeds.csv").read_text() == before
    res = runner.invoke(main, [*args, "--seeds", "3,x"])
    assert res.exit_code != 0 and "--seeds" in res.output and "e.g. --seeds 42,7,1" in res.output
    res = runner.invoke(main, [*args, "--seeds", "5"])
    assert res.exit_code != 0 and "two or more different seeds" in res.output
