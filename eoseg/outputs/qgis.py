"""QGIS layer styles (QML) for the class raster and the class polygons.

QGIS applies ``<name>.qml`` next to ``<name>.tif`` automatically when the raster is opened (its
"default style"), so ``<stem>_classes.qml`` colours and labels the class raster with no clicks.
The polygon style goes into the GeoPackage's ``layer_styles`` table instead (see
:func:`eoseg.outputs.vectors.write_polygons`).

Symbol-layer properties are written both as ``<Option type="Map">`` (read by QGIS ≥ 3.26) and as
``<prop k= v=>`` (read by older 3.x), so the same file styles the layer across QGIS 3 releases.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from eoseg.classes import ClassScheme
from eoseg.outputs.atomic import atomic_write

QGIS_VERSION = "3.28.0-Firenze"
DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"


def _rgba(colour: tuple[int, int, int], alpha: int = 255) -> str:
    return "{},{},{},{}".format(*colour, alpha)


def _hex(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def _outline(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """A darker edge so white classes (white water) stay visible on a white canvas."""
    return tuple(int(c * 0.6) for c in colour)


def _document(root: ET.Element) -> str:
    ET.indent(root)
    return DOCTYPE + "\n" + ET.tostring(root, encoding="unicode") + "\n"


def _qgis_root(categories: str) -> ET.Element:
    return ET.Element("qgis", version=QGIS_VERSION, styleCategories=categories,
                      hasScaleBasedVisibilityFlag="0", minScale="1e+08", maxScale="0")


def raster_qml(scheme: ClassScheme) -> str:
    """A paletted renderer on band 1: one entry per class (value, colour, label, alpha 255).

    Nodata (the scheme's nodata id, also the GeoTIFF's nodata value) has no entry and is not drawn.
    """
    root = _qgis_root("AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="paletted", band="1", opacity="1",
                             alphaBand="-1", nodataColor="")
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for info in scheme.classes:
        ET.SubElement(palette, "paletteEntry", value=str(info.id), color=_hex(info.colour),
                      label=info.name, alpha="255")
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0",
                  colorizeRed="255", colorizeGreen="128", colorizeBlue="128", colorizeStrength="100")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    return _document(root)


def _fill_props(colour: tuple[int, int, int]) -> dict[str, str]:
    return {
        "color": _rgba(colour), "style": "solid", "outline_color": _rgba(_outline(colour)),
        "outline_style": "solid", "outline_width": "0.1", "outline_width_unit": "MM",
        "joinstyle": "bevel", "offset": "0,0", "offset_unit": "MM",
    }


def _symbol(kind: str, layer_class: str, name: str, props: dict[str, str]) -> ET.Element:
    """A one-layer QGIS symbol (``fill``/``SimpleFill``, ``line``/``SimpleLine``) with ``props`` written both as
    the Option map (QGIS ≥ 3.26) and as the older ``prop`` elements."""
    symbol = ET.Element("symbol", type=kind, name=name, alpha="1", clip_to_extent="1", force_rhr="0")
    layer = ET.SubElement(symbol, "layer", attrib={"class": layer_class, "enabled": "1", "locked": "0",
                                                   "pass": "0"})
    options = ET.SubElement(layer, "Option", type="Map")
    for key, value in props.items():
        ET.SubElement(options, "Option", type="QString", name=key, value=value)
    for key, value in props.items():
        ET.SubElement(layer, "prop", k=key, v=value)
    return symbol


def _fill_symbol(name: str, colour: tuple[int, int, int]) -> ET.Element:
    return _symbol("fill", "SimpleFill", name, _fill_props(colour))


def vector_qml(scheme: ClassScheme, field: str = "class_id") -> str:
    """A categorized renderer on ``field``: one category per class, class colour and class name."""
    root = _qgis_root("Symbology")
    renderer = ET.SubElement(root, "renderer-v2", type="categorizedSymbol", attr=field, symbollevels="0",
                             forceraster="0", enableorderby="0")
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for index, info in enumerate(scheme.classes):
        ET.SubElement(categories, "category", value=str(info.id), symbol=str(index), label=info.name,
                      render="true")
        symbols.append(_fill_symbol(str(index), info.colour))
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerOpacity").text = "1"
    return _document(root)


def write_qml(path: Path, qml: str) -> Path:
    """Write a QML style atomically (UTF-8)."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(qml, encoding="utf-8")
    return path


SHORELINE_COLOUR = (228, 26, 28)


def _line_symbol(name: str, colour: tuple[int, int, int], width_mm: float) -> ET.Element:
    props = {"line_color": _rgba(colour), "line_style": "solid", "line_width": f"{width_mm:g}",
             "line_width_unit": "MM", "capstyle": "round", "joinstyle": "round", "offset": "0",
             "offset_unit": "MM"}
    return _symbol("line", "SimpleLine", name, props)


def line_qml(colour: tuple[int, int, int] = SHORELINE_COLOUR, width_mm: float = 0.6) -> str:
    """A single-symbol renderer for lines (the shoreline): one solid line of ``colour``."""
    root = _qgis_root("Symbology")
    renderer = ET.SubElement(root, "renderer-v2", type="singleSymbol", symbollevels="0", forceraster="0",
                             enableorderby="0")
    symbols = ET.SubElement(renderer, "symbols")
    symbols.append(_line_symbol("0", colour, width_mm))
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerOpacity").text = "1"
    return _document(root)


def graduated_line_qml(field: str, breaks: list[tuple[float, float, tuple[int, int, int], str]],
                       width_mm: float = 0.8) -> str:
    """A graduated renderer on ``field``: ``(lower, upper, colour, label)`` ranges (e.g. trends in m/yr)."""
    root = _qgis_root("Symbology")
    renderer = ET.SubElement(root, "renderer-v2", type="graduatedSymbol", attr=field, symbollevels="0",
                             forceraster="0", enableorderby="0", graduatedMethod="GraduatedColor")
    ranges = ET.SubElement(renderer, "ranges")
    symbols = ET.SubElement(renderer, "symbols")
    for index, (lower, upper, colour, label) in enumerate(breaks):
        ET.SubElement(ranges, "range", lower=f"{lower:g}", upper=f"{upper:g}", symbol=str(index), label=label,
                      render="true")
        symbols.append(_line_symbol(str(index), colour, width_mm))
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerOpacity").text = "1"
    return _document(root)
