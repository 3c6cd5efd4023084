"""Config loading: unknown keys named, --set overrides, resolved values saved."""

import pytest
import yaml

from eoseg.config import DatasetConfig, TrainConfig, dump_config, load_config, parse_overrides
from eoseg.errors import ConfigError


def write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_presets_validate():
    for name in ("resunet-gym", "unet-resnet34"):
        cfg = load_config(TrainConfig, f"configs/{name}.yaml")
        assert cfg.batch_size == 8 and cfg.early_stopping.patience == 10
    gym = load_config(TrainConfig, "configs/resunet-gym.yaml")
    assert gym.model.params["kernel_size"] == 7 and gym.model.params["dropout"] == 0.1 and gym.loss.name == "dice"
    assert (gym.schedule.name, gym.schedule.min_lr, gym.schedule.max_lr) == ("ramp", 1e-7, 1e-4)
    unet = load_config(TrainConfig, "configs/unet-resnet34.yaml")
    assert unet.loss.name == "dice_focal" and unet.loss.class_weights == [1, 1, 1, 1] and unet.optimizer.lr == 1e-4
    ds = load_config(DatasetConfig, "configs/ocean-beach-dataset.yaml")
    assert ds.split.group_by == "date" and [r for b in ds.sources[0].bands for r in b.roles][-1] == "nir"


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, {"data": "d", "model": {"name": "resunet", "paramz": {}}})
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'model.paramz'"):
        load_config(TrainConfig, path)


def test_unknown_top_level_and_bad_value(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'epochz'"):
        load_config(TrainConfig, write(tmp_path, {"data": "d", "epochz": 3}))
    with pytest.raises(ConfigError, match=r"epochs: .*greater than or equal to 1"):
        load_config(TrainConfig, write(tmp_path, {"data": "d", "epochs": 0}))
    with pytest.raises(ConfigError, match="missing key 'data'"):
        load_config(TrainConfig, write(tmp_path, {}))
    with pytest.raises(ConfigError, match="optimizer.name"):
        load_config(TrainConfig, write(tmp_path, {"data": "d", "optimizer": {"name": "sgd"}}))


def test_overrides(tmp_path):
    path = write(tmp_path, {"data": "d", "model": {"name": "resunet", "params": {"filters": 8}}})
    cfg = load_config(TrainConfig, path, ["epochs=5", "model.params.filters=4", "loss.class_weights=[1, 2, 1, 1]",
                                          "bands=[red, nir]"])
    assert cfg.epochs == 5 and cfg.model.params == {"filters": 4} and cfg.loss.class_weights == [1, 2, 1, 1]
    assert cfg.bands == ["red", "nir"]
    with pytest.raises(ConfigError, match="unknown key 'optimiser'"):
        load_config(TrainConfig, path, ["optimiser.lr=1"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])


def test_bundle_resolution_range(tmp_path):
    path = write(tmp_path, {"data": "d"})
    assert load_config(TrainConfig, path).bundle.resolution_m is None
    cfg = load_config(TrainConfig, path, ["bundle.resolution_m=[10, 30]"])
    assert cfg.bundle.resolution_m == (10.0, 30.0) and dump_config(cfg)["bundle"]["resolution_m"] == [10.0, 30.0]
    with pytest.raises(ConfigError, match=r"bundle.resolution_m: .*30 is coarser than 10"):
        load_config(TrainConfig, path, ["bundle.resolution_m=[30, 10]"])
    for bad in ("[0, 30]", "[10]", "10"):
        with pytest.raises(ConfigError, match="bundle.resolution_m"):
            load_config(TrainConfig, path, [f"bundle.resolution_m={bad}"])


def test_dump_is_yaml_safe_and_round_trips(tmp_path):
    cfg = load_config(TrainConfig, "configs/resunet-gym.yaml")
    text = yaml.safe_dump(dump_config(cfg))
    again = TrainConfig.model_validate(yaml.safe_load(text))
    assert again == cfg


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(TrainConfig, bad)


def test_dataset_source_kind_required(tmp_path):
    with pytest.raises(ConfigError, match="sources"):
        load_config(DatasetConfig, write(tmp_path, {"sources": [{"labels": "x", "bands": []}]}))
