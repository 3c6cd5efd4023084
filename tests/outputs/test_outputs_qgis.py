"""QGIS QML styles for the class raster and polygons."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from eoseg.classes import COASTAL, ClassInfo, ClassScheme
from eoseg.outputs.qgis import raster_qml, vector_qml, write_qml


def _parse(qml: str) -> ET.Element:
    assert qml.startswith("<!DOCTYPE qgis")
    return ET.fromstring(qml.split("\n", 1)[1])


def test_raster_qml_is_a_paletted_renderer_with_four_entries():
    root = _parse(raster_qml(COASTAL))
    assert root.tag == "qgis"
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = renderer.findall("colorPalette/paletteEntry")
    assert len(entries) == 4
    for entry, info in zip(entries, COASTAL.classes, strict=True):
        assert entry.get("value") == str(info.id)
        assert entry.get("label") == info.name
        assert entry.get("color") == info.hex
        assert entry.get("alpha") == "255"
    assert str(COASTAL.nodata) not in {e.get("value") for e in entries}


def test_vector_qml_is_categorized_by_class_id():
    root = _parse(vector_qml(COASTAL))
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class_id"
    categories = renderer.findall("categories/category")
    assert [c.get("label") for c in categories] == COASTAL.names
    assert [c.get("value") for c in categories] == [str(i) for i in COASTAL.ids]
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    for category, info in zip(categories, COASTAL.classes, strict=True):
        layer = symbols[category.get("symbol")].find("layer")
        assert layer.get("class") == "SimpleFill"
        option = {o.get("name"): o.get("value") for o in layer.findall("Option/Option")}
        prop = {p.get("k"): p.get("v") for p in layer.findall("prop")}
        assert option["color"] == prop["color"] == "{},{},{},255".format(*info.colour)


def test_vector_qml_other_field():
    assert _parse(vector_qml(COASTAL, field="cls")).find("renderer-v2").get("attr") == "cls"


def test_names_are_escaped():
    scheme = ClassScheme((ClassInfo(0, 'a & "b" <c>', (1, 2, 3), ""), ClassInfo(7, "x", (9, 9, 9), "")))
    entries = _parse(raster_qml(scheme)).findall("pipe/rasterrenderer/colorPalette/paletteEntry")
    assert [e.get("label") for e in entries] == ['a & "b" <c>', "x"]
    assert [c.get("label") for c in _parse(vector_qml(scheme)).findall("renderer-v2/categories/category")] == [
        'a & "b" <c>', "x"]


def test_write_qml_is_atomic_and_utf8(tmp_path):
    path = tmp_path / "s_classes.qml"
    write_qml(path, raster_qml(COASTAL))
    assert [p.name for p in tmp_path.iterdir()] == ["s_classes.qml"]
    assert path.read_text(encoding="utf-8") == raster_qml(COASTAL)
