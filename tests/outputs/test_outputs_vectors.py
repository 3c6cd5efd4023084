"""polygonize / write_polygons on class rasters derived from the real test scenes."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.features import shapes
from rasterio.warp import Resampling, calculate_default_transform, reproject

from eoseg.classes import COASTAL
from eoseg.errors import OutputError
from eoseg.outputs import vectors
from eoseg.outputs.regions import regions_of, to_crs
from eoseg.outputs.vectors import measure, polygonize, read_styles, write_polygons

DATA = Path(__file__).resolve().parents[1] / "data"
NODATA = 255
COLUMNS = ["class_id", "class_name", "area_m2", "perimeter_m", "geometry"]


def s2_scene() -> tuple[np.ndarray, rasterio.Affine, CRS]:
    """Classes from the Sentinel-2 crop: NDWI water, bright surf, bright-SWIR sand, other."""
    with rasterio.open(DATA / "s2_virginia_10m_6band_crop.tif") as ds:
        blue, green, _, nir, swir1, _ = ds.read().astype("float32")
        transform, crs = ds.transform, ds.crs
    ndwi = (green - nir) / np.maximum(green + nir, 1)
    classes = np.full(blue.shape, 3, np.uint8)
    classes[ndwi > 0.2] = 0
    classes[(blue > 1500) & (ndwi > 0)] = 1
    classes[(classes == 3) & (swir1 > 2000) & (blue > 1200)] = 2
    return classes, transform, crs


def l8_scene() -> tuple[np.ndarray, rasterio.Affine, CRS]:
    """Brightness classes on the Landsat collar crop, 255 where the input is nodata."""
    with rasterio.open(DATA / "l8_collar_crop.tif") as ds:
        bands = ds.read().astype("float32")
        transform, crs = ds.transform, ds.crs
    classes = np.where(bands[2] < 8100, 0, np.where(bands[2] > 9000, 2, 3)).astype(np.uint8)
    classes[bands[0] > 14000] = 1
    classes[(bands == 0).all(axis=0)] = NODATA
    return classes, transform, crs


@pytest.fixture(scope="module")
def s2():
    return s2_scene()


@pytest.fixture(scope="module")
def l8():
    return l8_scene()


@pytest.fixture(scope="module")
def l8_nodata(l8) -> shapely.Geometry:
    """The collar's nodata pixels as (prepared) polygons."""
    classes, transform, _ = l8
    mask = (classes == NODATA).astype(np.uint8)
    parts = [shapely.geometry.shape(g) for g, _ in shapes(mask, mask=mask.astype(bool), transform=transform)]
    region = shapely.union_all(parts)
    shapely.prepare(region)
    return region


def test_schema_and_crs(s2):
    classes, transform, crs = s2
    gdf = polygonize(classes, transform, crs, COASTAL)
    assert list(gdf.columns) == COLUMNS
    assert gdf.crs == crs
    assert gdf["class_id"].dtype.kind == "i"
    assert set(gdf["class_id"]) == {0, 1, 2, 3}
    assert all(gdf["class_name"] == [COASTAL.name_of(i) for i in gdf["class_id"]])
    assert gdf.is_valid.all() and (gdf.geom_type == "Polygon").all()
    assert (gdf["perimeter_m"] > 0).all()


def test_areas_match_pixel_counts(s2):
    classes, transform, crs = s2
    gdf = polygonize(classes, transform, crs, COASTAL)
    pixel_m2 = abs(transform.a * transform.e)
    for class_id in range(4):
        expected = (classes == class_id).sum() * pixel_m2
        got = gdf.loc[gdf["class_id"] == class_id, "area_m2"].sum()
        assert got == pytest.approx(expected, rel=2e-3)  # ellipsoidal vs UTM map-plane area: ~0.07 %


def test_measure_agrees_with_geodesic_area(s2):
    classes, transform, crs = s2
    gdf = polygonize(classes, transform, crs, COASTAL).nlargest(5, "area_m2")
    areas, perimeters = measure(gdf.geometry.values, crs)
    lonlat = gdf.to_crs("EPSG:4326")
    geod = Geod(ellps="WGS84")
    for area, perimeter, geom in zip(areas, perimeters, lonlat.geometry, strict=True):
        ref_area, _ = geod.geometry_area_perimeter(shapely.geometry.polygon.orient(geom))
        # the perimeter counts the holes' edges too (as shapely and QGIS do; Geod's polygon one does not)
        ref_perimeter = sum(geod.line_length(*ring.xy) for ring in [geom.exterior, *geom.interiors])
        assert area == pytest.approx(abs(ref_area), rel=1e-6)
        assert perimeter == pytest.approx(ref_perimeter, rel=1e-4)


@pytest.mark.parametrize("options", [{}, {"min_area_m2": 2 * 150 * 150}, {"simplify": 200}])
def test_polygons_never_cover_nodata(l8, l8_nodata, options):
    classes, transform, crs = l8
    gdf = polygonize(classes, transform, crs, COASTAL, **options)
    assert len(gdf) > 0
    overlap = shapely.area(shapely.intersection(gdf.geometry.values, l8_nodata)).sum()
    assert overlap < 1e-6 * abs(transform.determinant)


def test_sieve_does_not_grow_into_nodata(l8):
    classes, transform, crs = l8
    pixel_area = abs(transform.determinant)
    sieved = polygonize(classes, transform, crs, COASTAL, min_area_m2=10 * pixel_area)
    plain = polygonize(classes, transform, crs, COASTAL)
    planar_sieved = shapely.area(sieved.geometry.values).sum()
    assert planar_sieved <= (classes != NODATA).sum() * pixel_area + 1e-6
    assert planar_sieved == pytest.approx(shapely.area(plain.geometry.values).sum(), rel=5e-3)


def test_min_area_removes_small_regions(s2):
    classes, transform, crs = s2
    plain = polygonize(classes, transform, crs, COASTAL)
    sieved = polygonize(classes, transform, crs, COASTAL, min_area_m2=1000)  # 10 pixels of 100 m²
    pixels = np.rint(shapely.area(sieved.geometry.values) / 100)
    assert (pixels >= 10).all()
    assert (np.rint(shapely.area(plain.geometry.values) / 100) < 10).any()
    assert len(sieved) < len(plain)
    total = classes.size * 100
    assert shapely.area(sieved.geometry.values).sum() == pytest.approx(total)  # merged, not dropped


def test_simplify_keeps_a_clean_coverage(s2):
    classes, transform, crs = s2
    gdf = polygonize(classes, transform, crs, COASTAL, min_area_m2=1000, simplify=15)
    assert gdf.is_valid.all()
    union = shapely.union_all(gdf.geometry.values)
    extent = shapely.box(*rasterio.transform.array_bounds(*classes.shape, transform))
    assert union.symmetric_difference(extent).area < 1  # no gaps, nothing outside the scene
    assert shapely.area(gdf.geometry.values).sum() == pytest.approx(extent.area, rel=1e-9)  # no overlaps


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # rasterio's own Affine `*`
def test_geographic_crs_gives_the_same_areas(s2):
    classes, transform, crs = s2
    h, w = classes.shape
    dst_crs = CRS.from_epsg(4326)
    dst_transform, dst_w, dst_h = calculate_default_transform(crs, dst_crs, w, h,
                                                              *rasterio.transform.array_bounds(h, w, transform))
    geo = np.full((dst_h, dst_w), NODATA, np.uint8)
    reproject(classes, geo, src_transform=transform, src_crs=crs, dst_transform=dst_transform,
              dst_crs=dst_crs, resampling=Resampling.nearest, src_nodata=NODATA, dst_nodata=NODATA)
    projected = polygonize(classes, transform, crs, COASTAL).groupby("class_id")["area_m2"].sum()
    geographic = polygonize(geo, dst_transform, dst_crs, COASTAL).groupby("class_id")["area_m2"].sum()
    assert geographic.sum() == pytest.approx(projected.sum(), rel=0.01)
    for class_id in (0, 3):  # the large classes; small ones move more with nearest resampling
        assert geographic[class_id] == pytest.approx(projected[class_id], rel=0.01)


def test_geographic_min_area_uses_metres(s2):
    classes, transform, crs = s2
    geo_transform = rasterio.Affine(1e-4, 0, -75.6, 0, -1e-4, 37.67)  # ~8.8 m × 11.1 m pixels at 37.7° N
    gdf = polygonize(classes, geo_transform, CRS.from_epsg(4326), COASTAL, min_area_m2=1000)
    pixel_m2 = vectors.pixel_area(geo_transform, CRS.from_epsg(4326), classes.shape)
    assert 95 < pixel_m2 < 100
    assert gdf["area_m2"].min() >= 1000 * 0.99


def test_all_nodata_gives_an_empty_layer(tmp_path, s2):
    _, transform, crs = s2
    gdf = polygonize(np.full((20, 30), NODATA, np.uint8), transform, crs, COASTAL)
    assert len(gdf) == 0 and list(gdf.columns) == COLUMNS and gdf.crs == crs
    path = write_polygons(gdf, tmp_path / "empty_polygons.gpkg", COASTAL)
    info = pyogrio.read_info(path, layer="empty")
    assert info["features"] == 0 and info["geometry_type"] == "Polygon"
    assert list(info["fields"]) == COLUMNS[:-1]


def test_no_crs_uses_pixel_units(tmp_path):
    with rasterio.open(next(DATA.glob("s2_no_crs_crop*.tif"))) as ds:
        bands = ds.read().astype("float32")
        transform = ds.transform
    classes = np.digitize(bands[0], np.percentile(bands[0], [25, 50, 75])).astype(np.uint8)
    gdf = polygonize(classes, transform, None, COASTAL)
    assert gdf.crs is None
    for class_id in range(4):
        assert gdf.loc[gdf["class_id"] == class_id, "area_m2"].sum() == pytest.approx((classes == class_id).sum())
    path = write_polygons(gdf, tmp_path / "nocrs_polygons.gpkg", COASTAL)
    assert pyogrio.read_info(path, layer="nocrs")["crs"] is None


def test_write_polygons_with_default_style(tmp_path, s2):
    classes, transform, crs = s2
    gdf = polygonize(classes, transform, crs, COASTAL, min_area_m2=500)
    path = write_polygons(gdf, tmp_path / "scene_polygons.gpkg", COASTAL)
    assert [p.name for p in tmp_path.iterdir()] == ["scene_polygons.gpkg"]
    back = gpd.read_file(path, layer="scene", engine="pyogrio")
    assert len(back) == len(gdf) and back.crs == crs
    assert list(back.columns) == COLUMNS
    styles = read_styles(path)
    assert len(styles) == 1
    style = styles[0]
    assert style["f_table_name"] == "scene"
    assert style["f_geometry_column"] == pyogrio.read_info(path, layer="scene")["geometry_name"]
    assert style["f_table_schema"] == "" and style["useAsDefault"] == 1
    for name in COASTAL.names:
        assert f'label="{name}"' in style["styleQML"]
    assert "layer_styles" in dict(pyogrio.list_layers(path))  # registered through OGR, as QGIS does


def test_write_polygons_layer_name_and_overwrite(tmp_path, s2):
    classes, transform, crs = s2
    gdf = polygonize(classes, transform, crs, COASTAL)
    path = tmp_path / "out.gpkg"
    write_polygons(gdf.iloc[:3], path, COASTAL, layer="classes")
    write_polygons(gdf, path, COASTAL, layer="classes")
    assert pyogrio.read_info(path, layer="classes")["features"] == len(gdf)
    assert len(read_styles(path)) == 1


def test_write_polygons_failure_leaves_nothing(tmp_path, s2, monkeypatch):
    classes, transform, crs = s2
    gdf = polygonize(classes, transform, crs, COASTAL)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(vectors, "_write_style", broken)
    with pytest.raises(OutputError, match="disk full"):
        write_polygons(gdf, tmp_path / "x_polygons.gpkg", COASTAL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("min_area", [0, 500])
def test_streamed_writing_equals_the_in_memory_layer(l8, tmp_path, min_area):
    classes, transform, crs = l8
    expected = polygonize(classes, transform, crs, COASTAL, min_area_m2=min_area)
    chunk = len(expected) // 4 + 1
    path = vectors.write_polygons_streamed(classes, transform, crs, tmp_path / "x_polygons.gpkg", COASTAL,
                                           min_area_m2=min_area, chunk=chunk)
    got = gpd.read_file(path, layer="x")
    assert len(expected) > 2 * chunk and len(got) == len(expected)  # several chunks, every region once
    assert sorted(got["class_id"]) == sorted(expected["class_id"])
    np.testing.assert_allclose(sorted(got["area_m2"]), sorted(expected["area_m2"]), rtol=1e-6)
    assert got.crs == expected.crs and read_styles(path)
    assert shapely.union_all(got.geometry.values).equals(shapely.union_all(expected.geometry.values))


def test_streamed_writing_of_an_all_nodata_raster(l8, tmp_path):
    classes, transform, crs = l8
    path = vectors.write_polygons_streamed(np.full_like(classes, 255), transform, crs, tmp_path / "e.gpkg", COASTAL)
    assert len(gpd.read_file(path, layer="e")) == 0


@pytest.mark.parametrize("scene", ["s2", "l8"])
def test_band_by_band_polygons_equal_whole_raster_polygons(scene, request):
    """Regions cut by band edges are merged back: the same regions, areas and coverage as in one pass."""
    classes, transform, _ = request.getfixturevalue(scene)

    def regions(band_rows):
        geoms, values = regions_of(classes, COASTAL.nodata, band_rows=band_rows)
        return to_crs(geoms, transform), values

    whole_g, whole_v = regions(classes.shape[0])
    band_g, band_v = regions(37)
    assert len(band_g) == len(whole_g) and sorted(band_v) == sorted(whole_v)
    for value in np.unique(whole_v):
        np.testing.assert_allclose(sorted(shapely.area(band_g[band_v == value])),
                                   sorted(shapely.area(whole_g[whole_v == value])), rtol=1e-9)
    a, b = shapely.union_all(band_g), shapely.union_all(whole_g)
    assert shapely.symmetric_difference(a, b).area < 1e-9 * b.area  # same coverage up to float noise
    assert shapely.is_valid(band_g).all()


def test_streamed_writing_from_a_class_raster_file(l8, tmp_path):
    classes, transform, crs = l8
    raster = tmp_path / "c.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=classes.shape[1], height=classes.shape[0], count=1,
                       dtype="uint8", crs=crs, transform=transform, nodata=255) as ds:
        ds.write(classes, 1)
    expected = polygonize(classes, transform, crs, COASTAL)
    path = vectors.write_polygons_streamed(raster, transform, crs, tmp_path / "f_polygons.gpkg", COASTAL)
    got = gpd.read_file(path, layer="f")
    assert len(got) == len(expected)
    np.testing.assert_allclose(got["area_m2"].sum(), expected["area_m2"].sum(), rtol=1e-9)
    sieved = vectors.write_polygons_streamed(raster, transform, crs, tmp_path / "s_polygons.gpkg", COASTAL,
                                             min_area_m2=500)
    assert len(gpd.read_file(sieved, layer="s")) == len(polygonize(classes, transform, crs, COASTAL, min_area_m2=500))


def test_streamed_sieve_and_simplify_keep_a_clean_coverage_across_bands(s2, tmp_path):
    """Band by band (37 rows), with --min-area and --simplify: no gaps, no overlaps, no region below min-area."""
    classes, transform, crs = s2
    path = vectors.write_polygons_streamed(classes, transform, crs, tmp_path / "b_polygons.gpkg", COASTAL,
                                           min_area_m2=1000, simplify=15, band_rows=37)
    got = gpd.read_file(path, layer="b")
    assert got.is_valid.all() and (got["area_m2"] >= 1000 * 0.9).all()
    extent = shapely.box(*rasterio.transform.array_bounds(*classes.shape, transform))
    union = shapely.union_all(got.geometry.values)
    assert union.symmetric_difference(extent).area < 1  # no gaps, nothing outside the scene
    assert shapely.area(got.geometry.values).sum() == pytest.approx(extent.area, rel=1e-9)  # no overlaps
    whole = polygonize(classes, transform, crs, COASTAL, min_area_m2=1000)
    assert len(got) == pytest.approx(len(whole), rel=0.05)
