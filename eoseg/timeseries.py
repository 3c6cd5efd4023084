"""Shoreline change over an archive: chainages per scene and transect, tide correction, trends, plots.

Outputs (:func:`write_timeseries`), as CoastSat gives them (Vos et al. 2019):

- ``shoreline_timeseries.csv``: one row per scene (``date``, ``scene``), one column per transect, chainage in m;
- ``shoreline_timeseries_long.csv``: the tidy form, one row per scene and transect: ``date``, ``transect``,
  ``chainage``, ``scene``, ``cloud_fraction`` (the transect's fraction on nodata in that scene), ``crossings``,
  ``spread`` (m between the first and last crossing), and with tides ``tide_level`` and ``chainage_uncorrected``;
- ``shoreline_trends.gpkg``: the transects with ``trend_m_per_yr`` (least-squares slope of chainage over time;
  positive = seaward, accretion), ``n``, ``r2``, first / last date, styled red (erosion) to blue (accretion);
- ``plots/<transect>.png``: chainage over time with the linear trend.

Tide correction (``tides`` with ``beach_slope``): each chainage moves along its transect by
(tide level − reference level) / beach slope, seaward for a tide above the reference (the waterline of a higher
tide lies landward of the reference contour), as CoastSat does. Levels are interpolated linearly in time from the
tide table to each scene's acquisition time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from eoseg.errors import ConfigError
from eoseg.outputs.atomic import atomic_write
from eoseg.outputs.qgis import graduated_line_qml
from eoseg.outputs.shoreline import read_lines
from eoseg.outputs.stac import date_in_text
from eoseg.outputs.vectors import _write_layer, _write_style
from eoseg.transects import chainages

WIDE_NAME = "shoreline_timeseries.csv"
LONG_NAME = "shoreline_timeseries_long.csv"
TRENDS_NAME = "shoreline_trends.gpkg"
PLOTS_DIR = "plots"
SECONDS_PER_YEAR = 365.25 * 86400
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
TREND_BREAKS = [(-1e9, -1.0, (202, 0, 32), "erosion < -1 m/yr"), (-1.0, -0.25, (244, 165, 130), "-1 to -0.25"),
                (-0.25, 0.25, (190, 190, 190), "stable ±0.25 m/yr"), (0.25, 1.0, (146, 197, 222), "0.25 to 1"),
                (1.0, 1e9, (5, 113, 176), "accretion > 1 m/yr")]


@dataclass(frozen=True)
class SceneShoreline:
    """One scene's shoreline for the time series: name, acquisition time, its shoreline and class raster."""

    scene: str
    date: dt.datetime
    shoreline: Path
    classes: Path | None = None


def scene_shoreline_from_file(path: Path) -> SceneShoreline:
    """A ``<stem>_shoreline.gpkg`` written by ``eoseg predict --shoreline``: the date from its ``date``
    attribute (else from the file name), the class raster ``<stem>_classes.tif`` next to it when present."""
    path = Path(path)
    stem = path.name.removesuffix(".gpkg").removesuffix("_shoreline")
    frame = read_lines(path)
    date = None
    if "date" in frame.columns and frame["date"].notna().any():
        date = pd.Timestamp(frame["date"].dropna().iloc[0]).to_pydatetime()
    date = date or date_in_text(path.name)
    if date is None:
        raise ConfigError("has no acquisition date (no 'date' attribute, no date in the file name)", path=path,
                          fix="name the scene with its date (e.g. 2020-01-31_...) and predict again")
    classes = path.with_name(f"{stem}_classes.tif")
    return SceneShoreline(scene=stem, date=_utc(date), shoreline=path, classes=classes if classes.exists() else None)


def _utc(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------- tides


def read_tides(path: Path) -> pd.Series:
    """A tide table (CSV: a date / datetime column and a level column, in that order or so named) as a series of
    levels indexed by UTC time."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the tide table ({exc})", path=path,
                          fix="give a CSV with columns date,level") from None
    cols = {c.lower().strip(): c for c in table.columns}
    time_col = next((cols[c] for c in ("date", "datetime", "time", "dates") if c in cols), table.columns[0])
    level_col = next((cols[c] for c in ("level", "tide", "water_level", "tide_level") if c in cols),
                     table.columns[-1])
    try:
        times = pd.to_datetime(table[time_col], utc=True)
        levels = pd.to_numeric(table[level_col])
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot parse the tide table ({exc})", path=path,
                          fix="dates as ISO times (2020-01-31T10:30:00Z), levels in metres") from None
    return pd.Series(levels.values, index=times).sort_index()


def tide_at(tides: pd.Series, when: dt.datetime, path: Path | str = "--tides") -> float:
    """The tide level at ``when``, interpolated linearly between the table's neighbouring entries."""
    t = pd.Timestamp(_utc(when))
    if len(tides) == 0 or t < tides.index[0] or t > tides.index[-1]:
        raise ConfigError(f"the tide table does not cover {t.isoformat()}", path=path,
                          fix="give tide levels that span every scene's acquisition time")
    x = _seconds(pd.Series(tides.index))
    return float(np.interp((t - EPOCH).total_seconds(), x, tides.values.astype(np.float64)))


def _seconds(times: pd.Series) -> np.ndarray:
    """Seconds since 1970 (whatever the datetime64 unit pandas chose)."""
    return (pd.to_datetime(times, utc=True) - EPOCH).dt.total_seconds().to_numpy(dtype=np.float64)


def tide_correction(level: float, beach_slope: float, reference_level: float = 0.0) -> float:
    """Metres to add to a chainage (origin on land): (level − reference) / slope."""
    return (level - reference_level) / beach_slope


# ---------------------------------------------------------------------------------------------- series


def shoreline_timeseries(scenes: list[SceneShoreline], transects: gpd.GeoDataFrame, *, tides: pd.Series | None = None,
                         beach_slope: float | None = None, reference_level: float = 0.0,
                         nodata: int = 255) -> pd.DataFrame:
    """The long table (see the module notes), sorted by date and transect."""
    if tides is not None and (beach_slope is None or beach_slope <= 0):
        raise ConfigError("a tide correction needs the beach slope", path="--beach-slope",
                          fix="pass --beach-slope (e.g. 0.1 for a 1:10 beach face)")
    names = [s.scene for s in scenes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        first = scenes[names.index(repeated[0])].shoreline
        raise ConfigError(f"two shorelines for scene {repeated[0]!r}", path=first,
                          fix="give each scene's shoreline once (scene names come from the file names)")
    parts = []
    for s in scenes:
        table = chainages(transects, read_lines(s.shoreline), s.classes, nodata)
        table.insert(0, "date", pd.Timestamp(_utc(s.date)))
        table["scene"] = s.scene
        if tides is not None:
            level = tide_at(tides, s.date)
            table["tide_level"] = level
            table["chainage_uncorrected"] = table["chainage"]
            table["chainage"] = table["chainage"] + tide_correction(level, beach_slope, reference_level)
        parts.append(table)
    columns = ["date", "transect", "chainage", "scene", "cloud_fraction", "crossings", "spread"]
    if not parts:
        return pd.DataFrame(columns=columns)
    long = pd.concat(parts, ignore_index=True)
    extra = [c for c in long.columns if c not in columns]
    return long[columns + extra].sort_values(["date", "scene", "transect"], kind="stable").reset_index(drop=True)


def wide_table(long: pd.DataFrame, transect_ids: list[str]) -> pd.DataFrame:
    """One row per scene (date, scene), one column per transect (in the transects' order)."""
    wide = long.pivot(index=["date", "scene"], columns="transect", values="chainage")
    return wide.reindex(columns=transect_ids).reset_index().sort_values(["date", "scene"], kind="stable")


def linear_trend(dates: pd.Series, values: pd.Series) -> dict:
    """Least-squares slope (m/yr), intercept at the first date, r², n over the non-empty values."""
    ok = values.notna().to_numpy()
    t = _seconds(dates)[ok] / SECONDS_PER_YEAR
    y = values.to_numpy(dtype=float)[ok]
    n = int(ok.sum())
    if n < 2 or np.ptp(t) == 0:
        return {"n": n, "trend_m_per_yr": np.nan, "intercept_m": np.nan, "r2": np.nan}
    slope, intercept = np.polyfit(t - t[0], y, 1)
    fit = intercept + slope * (t - t[0])
    ss = np.sum((y - y.mean()) ** 2)
    r2 = 1 - np.sum((y - fit) ** 2) / ss if ss > 0 else np.nan
    return {"n": n, "trend_m_per_yr": float(slope), "intercept_m": float(intercept), "r2": float(r2)}


def trends(long: pd.DataFrame, transects: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Per transect: the linear trend of its chainage over time, with the transect's geometry."""
    rows = []
    for tid in transects["id"]:
        sub = long[long["transect"] == tid]
        trend = linear_trend(sub["date"], sub["chainage"])
        valid = sub[sub["chainage"].notna()]
        rows.append({"id": tid, **trend,
                     "first_date": valid["date"].min().date().isoformat() if len(valid) else None,
                     "last_date": valid["date"].max().date().isoformat() if len(valid) else None,
                     "mean_chainage_m": float(valid["chainage"].mean()) if len(valid) else np.nan})
    return gpd.GeoDataFrame(rows, geometry=transects.geometry.values, crs=transects.crs)


def _write_trends(frame: gpd.GeoDataFrame, path: Path) -> None:
    with atomic_write(path) as tmp:
        layer = "shoreline_trends"
        _write_layer(frame, tmp, layer, geometry_type="LineString")
        _write_style(tmp, layer, graduated_line_qml("trend_m_per_yr", TREND_BREAKS),
                     description="eoseg shoreline trends (m/yr, positive = seaward)")


def _plot(sub: pd.DataFrame, tid: str, trend: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ok = sub["chainage"].notna()
    ax.plot(sub["date"][ok], sub["chainage"][ok], "o-", color="#1f78b4", markersize=4, linewidth=0.8)
    if np.isfinite(trend["trend_m_per_yr"]):
        dates = sub["date"][ok]
        years = (dates - dates.iloc[0]).dt.total_seconds() / SECONDS_PER_YEAR
        ax.plot(dates, trend["intercept_m"] + trend["trend_m_per_yr"] * years, "--", color="#e41a1c",
                label=f"{trend['trend_m_per_yr']:+.2f} m/yr (n={trend['n']}, r²={trend['r2']:.2f})")
        ax.legend(loc="best", fontsize=8)
    ax.set_title(f"transect {tid}", fontsize=10)
    ax.set_ylabel("chainage from origin (m)")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")


def write_timeseries(out_dir: Path, long: pd.DataFrame, transects: gpd.GeoDataFrame, *,
                     plots: bool = True) -> dict[str, Path]:
    """Write the wide and long CSVs, the styled trends GeoPackage and (``plots``) a PNG per transect."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = list(transects["id"])
    paths = {"timeseries": out_dir / WIDE_NAME, "timeseries_long": out_dir / LONG_NAME,
             "trends": out_dir / TRENDS_NAME}
    wide = wide_table(long, ids) if len(long) else pd.DataFrame(columns=["date", "scene", *ids])
    for key, table in (("timeseries", wide), ("timeseries_long", long)):
        out = table.copy()
        if len(out):
            out["date"] = pd.to_datetime(out["date"]).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        with atomic_write(paths[key]) as tmp:
            out.to_csv(tmp, index=False, float_format="%.3f")
    trend = trends(long, transects) if len(long) else trends(pd.DataFrame(columns=["transect", "date", "chainage"]),
                                                              transects)
    _write_trends(trend, paths["trends"])
    if plots:
        (out_dir / PLOTS_DIR).mkdir(exist_ok=True)
        for tid, row in zip(ids, trend.itertuples(), strict=True):
            sub = long[long["transect"] == tid].sort_values("date")
            _plot(sub, tid, {"n": row.n, "trend_m_per_yr": row.trend_m_per_yr, "intercept_m": row.intercept_m,
                             "r2": row.r2}, out_dir / PLOTS_DIR / f"{tid}.png")
        paths["plots"] = out_dir / PLOTS_DIR
    return paths


def run_timeseries(scenes: list[SceneShoreline], transects_path: Path, out_dir: Path, *, tides: Path | None = None,
                   beach_slope: float | None = None, reference_level: float = 0.0,
                   plots: bool = True) -> tuple[dict[str, Path], pd.DataFrame]:
    """Read the transects (and the tide table), compute the long table and write every output."""
    from eoseg.transects import read_transects

    transects = read_transects(transects_path)
    if tides is not None and beach_slope is None:
        raise ConfigError("a tide correction needs the beach slope", path="--beach-slope",
                          fix="pass --beach-slope (e.g. 0.1 for a 1:10 beach face)")
    table = read_tides(tides) if tides is not None else None
    long = shoreline_timeseries(scenes, transects, tides=table, beach_slope=beach_slope,
                                reference_level=reference_level)
    return write_timeseries(out_dir, long, transects, plots=plots), long
