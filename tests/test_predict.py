"""predict_scene end to end on real rasters: georeferencing, nodata, outputs, seams, TTA and ensembles."""

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from eoseg.bundle import load_bundle
from eoseg.classes import NODATA_CLASS
from eoseg.errors import OutputError, OutputExistsError, PredictionError
from eoseg.grid import TileGrid
from eoseg.outputs.cog import validate_cog
from eoseg.predict import Forward, Predictor, PredictSettings, predict_scene
from eoseg.scene import SceneReader, open_scene, preflight
from eoseg.standardize import Standardization


def crop_to(src, dst, window):
    with rasterio.open(src) as ds:
        profile = ds.profile | {"width": int(window.width), "height": int(window.height),
                                "transform": ds.window_transform(window), "tiled": False}
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read(window=window))
            out.descriptions = ds.descriptions
    return dst


def test_outputs_are_georeferenced_and_valid(s2_scene, random_bundle, tmp_path):
    result = predict_scene(s2_scene, random_bundle, tmp_path, precision="fp32", probabilities=True)
    assert set(result.outputs) == {"classes", "style", "probabilities", "polygons", "stac"}
    classes = result.outputs["classes"]
    assert classes.name == "s2_virginia_10m_6band_crop_classes.tif"
    ok, errors, _ = validate_cog(classes)
    assert ok, errors
    with rasterio.open(s2_scene) as src, rasterio.open(classes) as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        assert out.nodata == NODATA_CLASS and out.dtypes[0] == "uint8"
        assert out.colormap(1)[0][:3] == (31, 120, 180)
        values = np.unique(out.read(1))
    assert set(values) <= {0, 1, 2, 3}
    with rasterio.open(result.outputs["probabilities"]) as probs:
        total = probs.read().astype(int).sum(axis=0)
    assert abs(total - 255).max() <= 4  # four bands of rounded probabilities sum to ~255
    assert result.tiles == 9 and result.tiles_skipped == 0
    assert "MP/s" in result.summary()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_collar_nodata_stays_nodata_and_polygons_avoid_it(collar_scene, random_rgb_bundle, tmp_path):
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape
    from shapely.ops import unary_union

    result = predict_scene(collar_scene, random_rgb_bundle, tmp_path, precision="fp32")
    with rasterio.open(collar_scene) as src, rasterio.open(result.outputs["classes"]) as out:
        valid = (src.read() != 0).all(axis=0)
        classes = out.read(1)
        transform = out.transform
    assert (classes[~valid] == NODATA_CLASS).all()
    assert (classes[valid] != NODATA_CLASS).all()
    assert result.tiles_skipped > 0
    polygons = gpd.read_file(result.outputs["polygons"], layer="l8_collar_crop")
    nodata = unary_union([shape(g) for g, v in shapes(valid.astype(np.uint8), transform=transform) if v == 0])
    assert unary_union(polygons.geometry).intersection(nodata).area < 1e-6 * nodata.area


def test_tiny_scene_is_padded_and_cropped_back(s2_scene, random_bundle, tmp_path):
    small = crop_to(s2_scene, tmp_path / "small.tif", Window(100, 60, 53, 37))
    result = predict_scene(small, random_bundle, tmp_path / "out", precision="fp32")
    with rasterio.open(result.outputs["classes"]) as out:
        assert out.shape == (37, 53)
        assert (out.read(1) != NODATA_CLASS).all()


def test_float_inf_nodata_scene(klamath_scene, random_bundle, tmp_path):
    result = predict_scene(klamath_scene, random_bundle, tmp_path, precision="fp32")
    with rasterio.open(klamath_scene) as src, rasterio.open(result.outputs["classes"]) as out:
        invalid = ~np.isfinite(src.read()).all(axis=0)
        assert invalid.any() and (out.read(1)[invalid] == NODATA_CLASS).all()


def test_existing_outputs_are_refused_and_untouched(s2_scene, random_bundle, tmp_path):
    first = predict_scene(s2_scene, random_bundle, tmp_path, precision="fp32")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.outputs.values()}
    with pytest.raises(OutputExistsError, match="--overwrite"):
        predict_scene(s2_scene, random_bundle, tmp_path, precision="fp32")
    assert before == {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.outputs.values()}
    again = predict_scene(s2_scene, random_bundle, tmp_path, precision="fp32", overwrite=True)
    assert again.outputs["classes"].stat().st_mtime_ns > before[first.outputs["classes"]][0]


def _fail_polygons(monkeypatch):
    from eoseg.outputs import vectors

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vectors, "_write_style", disk_full)


def _fail_stac(monkeypatch):
    import contextlib

    from eoseg.outputs import stac

    real = stac.atomic_write

    @contextlib.contextmanager
    def full_at_rename(final):
        with real(final) as tmp:
            yield tmp
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(stac, "atomic_write", full_at_rename)


@pytest.mark.parametrize("fail", [_fail_polygons, _fail_stac], ids=["polygons", "stac"])
def test_a_failing_late_output_removes_the_scenes_outputs(s2_scene, random_bundle, tmp_path, monkeypatch, fail):
    """Polygons or the STAC item fail after the class COG is written: nothing of the attempt stays, the error is
    one line, other files stay, and a rerun succeeds without --overwrite."""
    (tmp_path / "notes.txt").write_text("not eoseg's")
    predictor = Predictor(random_bundle, PredictSettings(precision="fp32", probabilities=True, min_area=500))
    with monkeypatch.context() as patch:
        fail(patch)
        with pytest.raises(OutputError, match="No space left") as info:
            predictor.predict(s2_scene, tmp_path, progress=False)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no COG, sidecar, style, temporaries
    result = predictor.predict(s2_scene, tmp_path, progress=False)
    assert all(p.exists() for p in result.outputs.values()) and "probabilities" in result.outputs


def test_a_read_error_during_prediction_keeps_its_own_message(s2_scene, random_bundle, tmp_path):
    """An error while tiles are predicted reaches the caller unchanged (not as a polygon or COG error)."""
    predictor = Predictor(random_bundle, PredictSettings(precision="fp32", tile_size=64, overlap=16))
    real, calls = predictor.forward, []

    def failing(batch):
        calls.append(1)
        if len(calls) == 3:
            raise rasterio.errors.RasterioIOError("read failed in the middle of the scene")
        return real(batch)

    predictor.forward = failing
    with pytest.raises(rasterio.errors.RasterioIOError, match="middle of the scene") as info:
        predictor.predict(s2_scene, tmp_path, progress=False)
    assert not isinstance(info.value, OutputError)
    assert list(tmp_path.iterdir()) == []


def test_polygons_streamed_from_the_rows_match_the_class_cog(s2_scene, random_bundle, tmp_path):
    """Polygons built from the predict loop's finished rows are the regions of the written class COG."""
    import geopandas as gpd
    import shapely
    from rasterio.features import shapes

    result = predict_scene(s2_scene, random_bundle, tmp_path, precision="fp32", tile_size=64, overlap=16)
    got = gpd.read_file(result.outputs["polygons"], layer=s2_scene.stem)
    with rasterio.open(result.outputs["classes"]) as ds:
        classes, transform = ds.read(1), ds.transform
    ref = [(shapely.geometry.shape(g), int(v)) for g, v in shapes(classes, mask=classes != NODATA_CLASS,
                                                                  transform=transform, connectivity=4)]
    assert len(got) == len(ref) > 10
    for value in {v for _, v in ref}:
        ref_area = sum(g.area for g, v in ref if v == value)
        assert shapely.area(got.geometry[got["class_id"] == value].values).sum() == pytest.approx(ref_area, rel=1e-9)


def test_a_failed_overwrite_leaves_the_earlier_set_whole_or_none(s2_scene, random_bundle, tmp_path, monkeypatch):
    """--overwrite that fails before it replaced anything keeps the earlier outputs byte for byte; one that
    fails after replacing the class COG removes the rest of the earlier set too (its STAC item named that COG)."""
    first = predict_scene(s2_scene, random_bundle, tmp_path, precision="fp32")
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    predictor = Predictor(random_bundle, PredictSettings(precision="fp32", overwrite=True))

    def failing(batch):
        raise RuntimeError("the device went away")

    real, predictor.forward = predictor.forward, failing
    with pytest.raises(RuntimeError, match="went away"):
        predictor.predict(s2_scene, tmp_path, progress=False)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
    predictor.forward = real
    with monkeypatch.context() as patch:
        _fail_stac(patch)
        with pytest.raises(OutputError):
            predictor.predict(s2_scene, tmp_path, progress=False)
    assert first.outputs["stac"] in before and list(tmp_path.iterdir()) == []


def test_a_failed_attempt_never_removes_what_another_writer_put_in_place(s2_scene, random_bundle, tmp_path,
                                                                          monkeypatch):
    """A batch attempt that lost its scene (another attempt took it over and finished) fails afterwards: the
    other attempt's outputs stay as that one wrote them."""
    import contextlib
    import threading

    from eoseg.outputs import stac

    real = stac.atomic_write
    winner: dict = {}

    @contextlib.contextmanager
    def overtaken_then_full(final):
        with real(final) as tmp:
            yield tmp
            with monkeypatch.context() as patch:  # the other attempt writes every output, its STAC item too
                patch.setattr(stac, "atomic_write", real)
                other = threading.Thread(target=lambda: winner.update(predict_scene(
                    s2_scene, random_bundle, tmp_path, precision="fp32", overwrite=True, min_area=500).outputs))
                other.start()  # another writer: a thread has a context of its own (not this attempt's journal)
                other.join()
            raise OSError(28, "No space left on device")

    predictor = Predictor(random_bundle, PredictSettings(precision="fp32", overwrite=True))
    with monkeypatch.context() as patch:
        patch.setattr(stac, "atomic_write", overtaken_then_full)
        with pytest.raises(OutputError, match="No space left"):
            predictor.predict(s2_scene, tmp_path, progress=False)
    kept = {path: path.read_bytes() for path in winner.values()}
    assert winner and all(path.exists() for path in winner.values())
    again = predict_scene(s2_scene, random_bundle, tmp_path / "check", precision="fp32", min_area=500)
    assert kept[winner["classes"]] == again.outputs["classes"].read_bytes()


def test_tta_and_ensemble_average_probabilities(s2_scene, random_bundle, bundle_factory, tmp_path):
    other = bundle_factory(tmp_path / "other", seed=7)
    a, b = load_bundle(random_bundle), load_bundle(other)
    x = np.random.default_rng(0).normal(size=(2, 4, 64, 64)).astype(np.float32)
    cpu = torch.device("cpu")
    pa, pb = Forward([a.model], cpu)(x), Forward([b.model], cpu)(x)
    np.testing.assert_allclose(Forward([a.model, b.model], cpu)(x), (pa + pb) / 2, atol=1e-5)
    flipped = Forward([a.model], cpu)(x[..., ::-1].copy())[..., ::-1]
    np.testing.assert_allclose(Forward([a.model], cpu, tta="flip")(x),
                               (pa + flipped + Forward([a.model], cpu)(x[..., ::-1, :].copy())[..., ::-1, :]) / 3,
                               atol=1e-5)
    d4 = Forward([a.model], cpu, tta="d4")(x)
    np.testing.assert_allclose(d4.sum(axis=1), 1, atol=1e-5)
    result = predict_scene(s2_scene, [random_bundle, other], tmp_path, precision="fp32", tta="flip")
    assert result.outputs["classes"].exists()


def test_bf16_autocast_agrees_with_fp32(s2_scene, random_bundle):
    bundle = load_bundle(random_bundle)
    scene = open_scene(s2_scene, roles=bundle.card.bands)
    with SceneReader(scene) as reader:
        x, valid = reader.read(Window(0, 0, 256, 256))
    x = Standardization("scene").for_stats(preflight(scene)).apply(x, valid)[None]
    p32 = Forward([bundle.model], torch.device("cpu"), "fp32")(x)
    p16 = Forward([bundle.model], torch.device("cpu"), "bf16")(x)
    assert np.abs(p32 - p16).mean() < 0.02
    assert (p32.argmax(1) == p16.argmax(1)).mean() > 0.97


def test_blending_beats_pasting_with_the_packaged_model(s2_scene, tmp_path):
    """Overlaps blended by the tapered window agree with a whole-scene forward better than pasted tiles.

    Stitching itself is exact (test_stitch: a per-pixel model gives identical tiled and untiled results). A
    trained Res-UNet is context-dependent (four stride-2 levels), so small tiles never agree with a whole-scene
    pass everywhere (bench/seams.py measures the card's 512/128 tiles: 99.6 % on the Virginia 20 m scene). What
    blending must do is not add seams: where tiles overlap, the blend is closer to the whole-scene answer than
    the last tile's own prediction. Runs 128/32 tiles on the 320 × 256 crop in tests/data (9 tiles, 60 % of its
    pixels in overlaps).
    """
    scene_path = s2_scene
    predictor = Predictor("resunet", PredictSettings(precision="fp32", tile_size=128, overlap=32))
    result = predictor.predict(scene_path, tmp_path / "out")
    scene = open_scene(scene_path, roles=predictor.card.bands)
    grid = TileGrid(scene.height, scene.width, predictor.tile_size, predictor.overlap)
    assert result.tiles == len(grid) >= 9
    std = predictor.scene_standardization(scene)
    with SceneReader(scene) as reader:
        x, valid = reader.read(Window(0, 0, scene.width, scene.height))
    z = std.apply(x, valid)
    whole = predictor.forward(z[None])[0].argmax(0)
    pasted = np.zeros_like(whole)
    covered = np.zeros(whole.shape, int)
    for tile in grid:
        rows = slice(tile.row_off, tile.row_off + tile.height)
        cols = slice(tile.col_off, tile.col_off + tile.width)
        pasted[rows, cols] = predictor.forward(z[None, :, rows, cols])[0].argmax(0)
        covered[rows, cols] += 1
    with rasterio.open(result.outputs["classes"]) as out:
        blended = out.read(1)
    overlaps = covered > 1
    assert overlaps.mean() > 0.3
    # measured with the packaged model: 97.3 % vs 96.9 % in overlaps
    assert (blended == whole)[overlaps].mean() > (pasted == whole)[overlaps].mean()
    assert (blended == whole).mean() > (pasted == whole).mean()


@pytest.mark.parametrize("mode", ["scene", "image"])
def test_strip_reader_standardizes_like_each_tile_alone(s2_scene, mode):
    from eoseg.predict import strip_tile_reader

    scene = open_scene(s2_scene, roles=("blue", "green", "red", "nir"))
    std = Standardization(mode).for_stats(preflight(scene))
    grid = TileGrid(scene.height, scene.width, 128, 32)
    with SceneReader(scene) as reader:
        read = strip_tile_reader(reader, grid, std)
        for tile in (grid.tile(0, 0), grid.tile(1, 2)):
            x, valid = read(tile)
            raw, raw_valid = reader.read(tile.window)
            np.testing.assert_array_equal(valid, raw_valid)
            np.testing.assert_allclose(x, std.apply(raw, raw_valid), rtol=1e-6, atol=1e-6)


REFLECTANCE_MEAN, REFLECTANCE_STD = (0.08, 0.07, 0.06, 0.15, 0.12), (0.04, 0.04, 0.05, 0.1, 0.08)


@pytest.fixture(scope="module")
def reflectance_bundle(bundle_factory, tmp_path_factory):
    return bundle_factory(tmp_path_factory.mktemp("bundle") / "refl5", bands=("blue", "green", "red", "nir", "swir1"),
                          mode="reflectance", mean=REFLECTANCE_MEAN, std=REFLECTANCE_STD)


def recorded_reflectance(predictor):
    """Replace the predictor's forward with one that records its inputs, back in reflectance units."""
    seen, forward = [], predictor.forward

    def record(batch):
        mean = np.asarray(REFLECTANCE_MEAN, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(REFLECTANCE_STD, np.float32).reshape(1, -1, 1, 1)
        seen.append(batch * std + mean)
        return forward(batch)

    predictor.forward = record
    return seen


@pytest.mark.parametrize("scene_name, source, bands", [
    ("s2_virginia_10m_6band_crop.tif", "sentinel2", [1, 2, 3, 4, 5]),
    ("l8_klamath_crop_ms.tif", "float", [1, 2, 3, 4, 5]),
])
def test_reflectance_model_sees_reflectance(data_dir, reflectance_bundle, tmp_path, scene_name, source, bands):
    import json

    predictor = Predictor(reflectance_bundle, PredictSettings(precision="fp32"))
    seen = recorded_reflectance(predictor)
    result = predictor.predict(data_dir / scene_name, tmp_path)
    x = np.concatenate([s.transpose(1, 0, 2, 3).reshape(5, -1) for s in seen], axis=1)
    x = x[:, np.abs(x - np.asarray(REFLECTANCE_MEAN)[:, None]).sum(0) > 1e-6]  # drop nodata (set to the mean)
    assert x.min() >= -0.1 - 1e-5 and x.max() <= 1.5 + 1e-5
    median = np.median(x, axis=1)
    assert np.all((median > 0.0) & (median < 0.4)), median  # coastal scene: water, sand, marsh
    with rasterio.open(data_dir / scene_name) as ds:  # the first tile is the scene's top-left 128 × 128
        raw = ds.read(bands, window=Window(0, 0, 128, 128)).astype(np.float64)
    valid = np.all(np.isfinite(raw) & (raw != 0), axis=0)
    expected = (raw / 1e4 if source == "sentinel2" else raw)[:, valid]
    assert valid.sum() > 1000
    assert seen[0][0][:, valid] == pytest.approx(np.clip(expected, -0.1, 1.5), abs=1e-5)
    item = json.loads(result.outputs["stac"].read_text())
    assert item["properties"]["eoseg:scaling"]["source"] == source
    assert item["properties"]["eoseg:standardization"] == "reflectance"
    assert [b["band"] for b in item["properties"]["eoseg:bands"]] == bands
    assert result.scaling["source"] == source and "reflectance" in result.summary()
    with rasterio.open(result.outputs["classes"]) as ds:
        assert json.loads(ds.tags()["eoseg_scaling"])["source"] == source
        assert [b["band"] for b in json.loads(ds.tags()["eoseg_bands"])] == bands


def test_scale_and_offset_override_and_unknown_units(collar_scene, bundle_factory, tmp_path):
    from eoseg.errors import ConfigError, ScalingError

    bundle = bundle_factory(tmp_path / "rgb", bands=("red", "green", "blue"), mode="reflectance",
                            mean=(0.1, 0.1, 0.1), std=(0.1, 0.1, 0.1))
    with pytest.raises(ScalingError, match="cannot tell the units"):
        predict_scene(collar_scene, bundle, tmp_path / "a", precision="fp32")
    assert not (tmp_path / "a" / "l8_collar_crop_classes.tif").exists()
    result = predict_scene(collar_scene, bundle, tmp_path / "b", precision="fp32", scale=2e-5, offset=-0.1)
    assert result.scaling["source"] == "user" and result.scaling["scale"] == [2e-5] * 3
    with pytest.raises(ConfigError, match="--scale"):
        Predictor(bundle_factory(tmp_path / "scene", bands=("red", "green", "blue")),
                  PredictSettings(precision="fp32", scale=1e-4))


class _OverflowsInHalf(torch.nn.Module):
    """A per-pixel model whose logits are NaN / infinite whenever it runs in reduced precision (as fp16 does
    when activations pass 65504)."""

    def __init__(self, channels: int = 4, classes: int = 4):
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(channels, classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y if y.dtype == torch.float32 else y * float("inf")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_non_finite_logits_under_autocast_rerun_the_batch_in_fp32(precision, caplog):
    model = _OverflowsInHalf()
    x = np.random.default_rng(0).normal(size=(3, 4, 32, 32)).astype(np.float32)
    expected = Forward([model], torch.device("cpu"), "fp32")(x)
    forward = Forward([model], torch.device("cpu"), precision, tta="flip")
    with caplog.at_level("WARNING", logger="eoseg.predict"):
        got = forward(x)
    np.testing.assert_allclose(got, Forward([model], torch.device("cpu"), "fp32", tta="flip")(x), atol=1e-6)
    np.testing.assert_allclose(got, expected, atol=1e-5)  # a per-pixel model is flip-invariant
    assert forward.fp32_reruns == 1 and "running it again in fp32" in caplog.text


def test_non_finite_logits_in_fp32_are_an_error():
    class Broken(torch.nn.Module):
        def forward(self, x):
            return x[:, :4] * float("nan")

    with pytest.raises(PredictionError, match="non-finite"):
        Forward([Broken()], torch.device("cpu"), "fp32")(np.zeros((1, 4, 32, 32), np.float32))


def test_fp16_prediction_never_turns_overflow_into_water(s2_scene, tmp_path, monkeypatch):
    """End to end with the precision policy forced to fp16 (CUDA-only otherwise): overflowing batches are rerun,
    so the class map is the fp32 one and not all class 0."""
    import eoseg.predict as predict_mod
    from eoseg.bundle import ModelBundle, ModelCard

    card = ModelCard(name="overflow", arch="resunet", bands=("blue", "green", "red", "nir"), tile_size=128,
                     overlap=32)
    bundle = ModelBundle(card=card, model=_OverflowsInHalf(), path=None, sha256="0" * 64)
    fp32 = predict_scene(s2_scene, bundle, tmp_path / "fp32", precision="fp32")
    monkeypatch.setattr(predict_mod, "resolve_precision", lambda name, device: "fp16")
    fp16 = predict_scene(s2_scene, bundle, tmp_path / "fp16", precision="auto")
    assert fp16.precision == "fp16"
    with rasterio.open(fp32.outputs["classes"]) as a, rasterio.open(fp16.outputs["classes"]) as b:
        expected, got = a.read(1), b.read(1)
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(got, expected)


def test_forward_copies_a_model_held_on_another_device():
    """A cached CPU bundle's model passed to a Forward for another device ('meta' for CUDA) is not moved."""
    model = torch.nn.Conv2d(4, 4, kernel_size=1)
    forward = Forward([model], torch.device("meta"))
    assert model.weight.device.type == "cpu" and forward.models[0].weight.device.type == "meta"
    same = Forward([model], torch.device("cpu"))
    assert same.models[0] is model  # already there: not copied


def _np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_d4_tta_undoes_each_transform_exactly():
    """A per-pixel model gives the same answer with d4 TTA as without (any wrong inverse moves pixels), and a model
    with a position-dependent bias B gives the mean over the 8 symmetries g of softmax(conv(x) + g⁻¹(B))."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 4, kernel_size=1)
    x = np.random.default_rng(1).normal(size=(2, 4, 32, 32)).astype(np.float32)
    cpu = torch.device("cpu")
    np.testing.assert_allclose(Forward([conv], cpu, tta="d4")(x), Forward([conv], cpu)(x), atol=1e-6)

    bias = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(2)) * 3

    class Biased(torch.nn.Module):
        def forward(self, t):
            return conv(t) + bias

    with torch.no_grad():
        logits = conv(torch.from_numpy(x)).numpy().astype(np.float64)
    b = bias.numpy().astype(np.float64)
    inverses = [np.rot90(b, -k, axes=(-2, -1))[..., ::-1] if flip else np.rot90(b, -k, axes=(-2, -1))
                for k in range(4) for flip in (False, True)]
    assert len({g.tobytes() for g in inverses}) == 8  # eight distinct symmetries of an asymmetric bias
    expected = np.mean([_np_softmax(logits + g) for g in inverses], axis=0)
    np.testing.assert_allclose(Forward([Biased()], cpu, tta="d4")(x), expected, atol=1e-5)


def test_models_for_scene_lists_packaged_bundles_whose_bands_the_scene_has(
        s2_scene, klamath_scene, collar_scene, packaged_pair, tmp_path, monkeypatch):
    import eoseg.bundle
    from eoseg.predict import models_for_scene

    monkeypatch.setattr(eoseg.bundle, "weights_dir", lambda: packaged_pair)
    five, rgb = ("resunet", ("blue", "green", "red", "nir", "swir1")), ("resunet-rgb", ("red", "green", "blue"))
    assert models_for_scene(s2_scene) == [five, rgb]  # Sentinel-2 B02 B03 B04 B08 B11 B12
    assert models_for_scene(klamath_scene) == [five, rgb]  # CoastSat Landsat '_ms': B, G, R, NIR, SWIR1
    assert models_for_scene(collar_scene) == [rgb]  # Landsat B2 B3 B4
    assert models_for_scene(tmp_path / "missing.tif") == []
    (packaged_pair.parent / "unused").mkdir(exist_ok=True)
    monkeypatch.setattr(eoseg.bundle, "weights_dir", lambda: packaged_pair.parent / "unused")
    assert models_for_scene(s2_scene) == []


def test_standardize_in_place_equals_the_whole_strip_transform(s2_scene, monkeypatch):
    import eoseg.predict
    from eoseg.predict import standardize_in_place

    predictor_std = Standardization(mode="reflectance", mean=(0.1,) * 3, std=(0.05,) * 3)
    scene = open_scene(s2_scene, roles=("red", "green", "blue"))
    from eoseg.radiometry import scene_scaling

    std = predictor_std.with_scaling(scene_scaling(scene))
    with SceneReader(scene) as reader:
        x, valid = reader.read(Window(0, 0, scene.width, scene.height))
    expected = std.apply(x, valid)
    monkeypatch.setattr(eoseg.predict, "STANDARDIZE_COLUMNS", 100)  # blocks that do not divide the width
    out = standardize_in_place(std, x.copy(), valid)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("tta", ["flip", "d4"])
def test_tta_views_in_one_batch_equal_view_by_view(tta):
    """On a GPU the TTA views run as one batch; the result is the view-by-view one (checked here on the CPU)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(5, 3, 1))
    x = np.random.default_rng(1).normal(size=(2, 4, 32, 32)).astype(np.float32)
    cpu = torch.device("cpu")
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    one = Forward([model], cpu, tta=tta, tta_one_batch=True)(x)
    assert calls == [len(one) * (3 if tta == "flip" else 8)]  # a single forward pass over every view
    np.testing.assert_allclose(one, Forward([model], cpu, tta=tta, tta_one_batch=False)(x), rtol=0, atol=1e-6)
    wide = np.random.default_rng(2).normal(size=(1, 4, 32, 64)).astype(np.float32)  # rotations change its shape
    np.testing.assert_allclose(Forward([model], cpu, tta=tta, tta_one_batch=True)(wide),
                               Forward([model], cpu, tta=tta, tta_one_batch=False)(wide), rtol=0, atol=1e-6)


def test_compiled_forward_matches_and_warms_up_once_per_shape(s2_scene, random_bundle):
    """--compile wraps the models in torch.compile (the 'eager' backend here: no C++ toolchain in a unit test);
    the warm-up runs once per tile shape and predictions are unchanged."""
    bundle = load_bundle(random_bundle)
    x = np.random.default_rng(0).normal(size=(2, 4, 64, 64)).astype(np.float32)
    cpu = torch.device("cpu")
    compiled = Forward([bundle.model], cpu, "fp32", compile="eager")
    assert all(hasattr(m, "_orig_mod") for m in compiled.models)
    assert compiled.warm_up(2, 4, (64, 64)) > 0 and compiled.warm_up(2, 4, (64, 64)) == 0
    np.testing.assert_allclose(compiled(x), Forward([bundle.model], cpu, "fp32")(x), rtol=0, atol=1e-5)
    assert PredictSettings(compile=True).to_dict()["compile"] is True


def test_reflectance_models_count_the_valid_pixels_as_they_read(klamath_scene, tmp_path, monkeypatch):
    """A model that needs no scene statistics skips the full preflight read: the valid fraction reported is
    the count of the pass itself, equal to what reading every block gives."""
    import eoseg.predict as predict_module

    full_reads = []
    monkeypatch.setattr(predict_module, "preflight", lambda scene: full_reads.append(scene) or preflight(scene))
    predictor = Predictor("resunet", PredictSettings(overwrite=True))
    result = predictor.predict(klamath_scene, tmp_path, progress=False)
    assert not full_reads
    expected = preflight(predictor.open(klamath_scene)).valid_fraction
    assert 0.5 < expected < 1  # the crop has a nodata collar
    assert result.quality["valid_fraction"] == pytest.approx(expected, abs=1e-6)
    with rasterio.open(result.outputs["classes"]) as ds:
        assert (ds.read(1) != NODATA_CLASS).mean() == pytest.approx(expected, abs=1e-6)


def test_a_nodata_collar_does_not_change_the_map_beside_it(s2_scene, tmp_path):
    """A scene clipped to a footprint keeps the map it has without the clip next to the clip's edge.

    The real Sentinel-2 crop is given a slanted nodata collar over its left part. Nodata filled with the mean
    (the old fill) showed the packaged model a grey region whose edge looked like a shore: 10 % of the pixels
    within 3 px of the collar, and 1.8 % of those beyond 8 px, changed class (mostly water → other). Filled from
    the nearest valid pixel, 0.3 % and 0.3 % change (measured).
    """
    from scipy.ndimage import distance_transform_edt

    with rasterio.open(s2_scene) as src:
        data, profile, names = src.read(), src.profile, src.descriptions
    rows, cols = np.mgrid[:data.shape[1], :data.shape[2]]
    collar = cols + 0.3 * rows < 120
    data[:, collar] = 0  # the file's nodata value
    clipped = tmp_path / "clipped.tif"
    with rasterio.open(clipped, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = names
    predictor = Predictor("resunet", PredictSettings(precision="fp32"))

    def classes(path):
        with rasterio.open(predictor.predict(path, tmp_path / path.stem).outputs["classes"]) as ds:
            return ds.read(1)

    whole, beside = classes(s2_scene), classes(clipped)
    assert (beside[collar] == NODATA_CLASS).all()
    distance = distance_transform_edt(~collar)
    near, far = (distance > 0) & (distance <= 3), distance > 8
    assert (beside == whole)[near].mean() > 0.98
    assert (beside == whole)[far].mean() > 0.99
