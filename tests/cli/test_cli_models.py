"""``eoseg models``: what a user needs to choose a packaged bundle, as a table and as JSON."""

import json

from click.testing import CliRunner

import eoseg.bundle as bundle_mod
from eoseg.cli import main

FIVE = "blue, green, red, nir, swir1"


def models(*args):
    result = CliRunner().invoke(main, ["models", *args])
    assert result.exit_code == 0, result.output
    return result.output


def bundle_block(output: str, name: str) -> str:
    """The lines of one bundle's entry in the table (its header line to the next header)."""
    lines = output.split("Packaged bundles", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line[2:].startswith(f"{name}  "))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("      ")), len(lines))
    return "\n".join(lines[start:end])


def test_table_shows_bands_units_resolution_tiles_metrics_and_default(packaged_pair, monkeypatch):
    monkeypatch.setattr(bundle_mod, "weights_dir", lambda: packaged_pair)
    out = models()
    five = bundle_block(out, "resunet")
    assert five.startswith("* resunet  resunet on 5 bands: " + FIVE)
    assert "units: reflectance (0-1) from product metadata" in five
    assert "resolution: 10-30 m; tile 128 px, overlap 32 px" in five
    assert ("mIoU: held-out sites 0.780, held-out strokes 0.900, held-out points 0.760, validation 0.810 "
            "(peers, held-out sites: coastsat 0.700)") in five
    rgb = bundle_block(out, "resunet-rgb")
    assert rgb.startswith("  resunet-rgb  resunet on 3 bands: red, green, blue")
    assert "units: any (per-scene percentile stretch)" in rgb and "resolution: 10 m;" in rgb
    assert "mIoU: test 0.740" in rgb and "peers" not in rgb


def test_json_carries_the_same_facts(packaged_pair, monkeypatch):
    monkeypatch.setattr(bundle_mod, "weights_dir", lambda: packaged_pair)
    data = json.loads(models("--json"))
    assert data["default"] == "resunet"
    rows = {row["name"]: row for row in data["bundles"]}
    five, rgb = rows["resunet"], rows["resunet-rgb"]
    assert five["default"] is True and rgb["default"] is False
    assert five["bands"] == FIVE.split(", ") and five["standardization"] == "reflectance"
    assert five["units"] == "reflectance (0-1) from product metadata"
    assert five["resolution_m"] == [10.0, 30.0] and (five["tile_size"], five["overlap"]) == (128, 32)
    assert five["metrics"] == {"held_out_sites": 0.78, "held_out_strokes": 0.9, "held_out_points": 0.76,
                               "validation": 0.81}
    assert five["peers"] == {"coastsat": 0.7}
    assert rgb["metrics"] == {"test": 0.74} and rgb["units"] == "any (per-scene percentile stretch)"


def test_bundle_without_resolution_or_metrics_and_unreadable_card(bundle_factory, tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_mod, "weights_dir", lambda: tmp_path)
    bundle_factory(tmp_path / "plain", bands=("red", "green", "blue"), mode="scene")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "card.json").write_text("{")
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"")
    out = models()
    plain = bundle_block(out, "plain")
    assert "units: any (per-scene z-score)" in plain and "resolution: not recorded" in plain
    assert "mIoU: —" in plain
    assert "  broken  unreadable card: card is not valid JSON" in out
    rows = {row["name"]: row for row in json.loads(models("--json"))["bundles"]}
    assert rows["plain"]["resolution_m"] is None and rows["plain"]["metrics"] == {}
    assert "error" in rows["broken"]


def test_ensemble_bundle_shows_its_members(bundle_factory, tmp_path, monkeypatch):
    from eoseg.bundle import ensemble_bundle

    members = [bundle_factory(tmp_path / "m" / f"s{seed}", seed=seed) for seed in (1, 2, 3)]
    ensemble_bundle(members, tmp_path / "w" / "seeds", name="seeds")
    monkeypatch.setattr(bundle_mod, "weights_dir", lambda: tmp_path / "w")
    assert bundle_block(models(), "seeds").startswith("  seeds  ensemble of 3 resunet on 4 bands: blue, green")
    row = json.loads(models("--json"))["bundles"][0]
    assert row["arch"] == "ensemble" and row["ensemble_of"] == {"arch": "resunet", "members": 3}
