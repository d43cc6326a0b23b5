"""Hotspot figures: a map of the hotspot pixels with their standard-deviation ellipses (and a run's alerts), and a
grid of the hotspots' mean displacement series (and their forecasts). Pure pandas/numpy/matplotlib (no Spark).

Both functions use matplotlib's object API (``Figure`` + ``FigureCanvasAgg``; no pyplot, no global state), write a
PNG (dpi 110, ``bbox_inches="tight"``), create the parent folder and return the path. A hotspot has the same colour
in both figures: a qualitative palette (tab10 without its grey) cycled over ``hotspot_id``.
"""
from __future__ import annotations

import datetime
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import shapely.wkt
from matplotlib import colormaps
from matplotlib import dates as mdates
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

logger = logging.getLogger(__name__)

__all__ = ["plot_hotspot_map", "plot_hotspot_series", "series_frame"]

PIXEL_COLUMNS = ("lon", "lat", "hotspot_id")
HOTSPOT_COLUMNS = ("hotspot_id", "retained", "geometry", "center_lon", "center_lat", "mean_velocity")
SERIES_COLUMNS = ("hotspot_id", "mean_disp_mm", "mean_velocity", "n_pixels", "onset_index", "peak_index")
ALERT_COLUMNS = ("center_lon", "center_lat", "kind", "severity")
FORECAST_COLUMNS = ("hotspot_id", "date", "p05", "p50", "p95")

DPI = 110
_PALETTE = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]   # tab10 without grey (index 7)
_NO_HOTSPOT = "0.85"      # pixels in no retained hotspot
_DROPPED = "0.55"         # ellipses of dropped hotspots
_SEVERITY = {"high": "#c00000", "medium": "#e07000", "low": "#c8a000"}    # alert marker colours


def _colour(hotspot_id: int):
    """Colour of one hotspot (the palette cycles for many hotspots)."""
    return _PALETTE[int(hotspot_id) % len(_PALETTE)]


def _check_columns(df: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing} (has {list(df.columns)})")


def _number(value) -> float:
    """``value`` as a float; NaN when missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt(value, spec: str = ".1f") -> str:
    """A number for a label; 'n/a' when missing or not finite."""
    v = _number(value)
    return format(v, spec) if math.isfinite(v) else "n/a"


def _exteriors(wkt) -> list[np.ndarray]:
    """Exterior rings (k, 2) of a (multi)polygon WKT in lon/lat; [] when the geometry is missing or empty."""
    if isinstance(wkt, str):
        if not wkt.strip():
            return []
        geom = shapely.wkt.loads(wkt)
    elif hasattr(wkt, "geom_type"):   # already a shapely geometry
        geom = wkt
    else:                             # None / NaN / pd.NA
        return []
    if geom.is_empty:
        return []
    parts = getattr(geom, "geoms", [geom])
    return [np.asarray(p.exterior.coords) for p in parts if p.geom_type == "Polygon" and not p.is_empty]


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    logger.info("wrote %s", path)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# map


def plot_hotspot_map(pixels: pd.DataFrame, hotspots: pd.DataFrame, path: Path, title: str,
                     alerts: pd.DataFrame | None = None) -> Path:
    """PNG map of hotspot pixels and ellipses; returns ``path`` (its parent folder is created).

    pixels: columns lon, lat (degrees), hotspot_id (int; -1 = in no retained hotspot). Pixels in no hotspot are
    drawn small and light grey, the others coloured by hotspot.
    hotspots: columns hotspot_id, retained (bool), geometry (WKT of the ellipse, lon/lat degrees), center_lon,
    center_lat (degrees), mean_velocity (mm/yr). Retained hotspots: ellipse outline in the hotspot's colour and a
    label "id: v mm/yr" at the centre; dropped hotspots: thin dashed grey outline. A missing geometry is skipped.
    alerts (optional): columns center_lon, center_lat (degrees), kind, severity (high, medium, low): a triangle
    at each alert's centre coloured by severity, labelled with its kind (an alert without a centre is skipped).
    Zero rows (in any frame) is fine. The aspect is corrected for latitude (1 / cos(mean latitude)).
    """
    _check_columns(pixels, PIXEL_COLUMNS, "plot_hotspot_map: pixels")
    if len(hotspots):
        _check_columns(hotspots, HOTSPOT_COLUMNS, "plot_hotspot_map: hotspots")
    alerts = alerts if alerts is not None else pd.DataFrame(columns=list(ALERT_COLUMNS))
    if len(alerts):
        _check_columns(alerts, ALERT_COLUMNS, "plot_hotspot_map: alerts")

    fig = Figure(figsize=(8, 8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()

    lon = pixels["lon"].to_numpy(dtype=np.float64)
    lat = pixels["lat"].to_numpy(dtype=np.float64)
    ids = pixels["hotspot_id"].to_numpy()
    in_hotspot = ids >= 0
    handles = []
    if (~in_hotspot).any():
        ax.scatter(lon[~in_hotspot], lat[~in_hotspot], s=1, c=_NO_HOTSPOT, linewidths=0, rasterized=True, zorder=1)
        handles.append(Line2D([], [], ls="", marker="o", ms=3, color=_NO_HOTSPOT, label="no hotspot"))

    n_retained = n_dropped = 0
    if len(hotspots):
        retained = hotspots["retained"].fillna(False).astype(bool).to_numpy()
        for row, keep in zip(hotspots.itertuples(index=False), retained):
            if keep:
                continue
            for ring in _exteriors(row.geometry):
                ax.plot(ring[:, 0], ring[:, 1], ls="--", lw=0.7, color=_DROPPED, zorder=2)
            n_dropped += 1
        if n_dropped:
            handles.append(Line2D([], [], ls="--", lw=0.7, color=_DROPPED, label="dropped hotspot"))

    if in_hotspot.any():
        ax.scatter(lon[in_hotspot], lat[in_hotspot], s=3, c=[_colour(i) for i in ids[in_hotspot]], linewidths=0,
                   rasterized=True, zorder=3)

    if len(hotspots):
        for row, keep in zip(hotspots.itertuples(index=False), retained):
            if not keep:
                continue
            colour = _colour(row.hotspot_id)
            for ring in _exteriors(row.geometry):   # drawn over the label, so the outline always shows
                ax.plot(ring[:, 0], ring[:, 1], lw=1.2, color=colour, zorder=5)
            if math.isfinite(float(row.center_lon)) and math.isfinite(float(row.center_lat)):
                ax.text(row.center_lon, row.center_lat, f"{int(row.hotspot_id)}: {_fmt(row.mean_velocity)} mm/yr",
                        fontsize=7, ha="center", va="center", color="black", zorder=4, clip_on=True,
                        path_effects=[patheffects.withStroke(linewidth=2.0, foreground="white")])
            n_retained += 1
        if n_retained:
            handles.append(Line2D([], [], lw=1.2, color=_colour(0), label="retained hotspot (ellipse)"))
    handles += _draw_alerts(ax, alerts)

    if len(pixels):
        mean_lat = float(np.nanmean(lat))
    elif len(hotspots):
        mean_lat = float(np.nanmean(hotspots["center_lat"].to_numpy(dtype=np.float64)))
    else:
        mean_lat = 0.0
    if not math.isfinite(mean_lat):
        mean_lat = 0.0
    ax.set_aspect(1.0 / max(math.cos(math.radians(mean_lat)), 1e-6))
    alert_note = f", {len(alerts)} alert(s)" if len(alerts) else ""
    ax.set(xlabel="longitude (deg)", ylabel="latitude (deg)",
           title=f"{title}\n{n_retained} retained, {n_dropped} dropped hotspot(s){alert_note}")
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.8)
    logger.info("hotspot map: %d pixels (%d in hotspots), %d retained and %d dropped hotspot(s)",
                len(pixels), int(in_hotspot.sum()), n_retained, n_dropped)
    return _save(fig, path)


def _draw_alerts(ax, alerts: pd.DataFrame) -> list:
    """Triangles at the alerts' centres coloured by severity, labelled with the kind; the legend handles."""
    drawn = set()
    for row in alerts.itertuples(index=False):
        lon, lat = _number(row.center_lon), _number(row.center_lat)
        if not (math.isfinite(lon) and math.isfinite(lat)):
            continue
        colour = _SEVERITY.get(str(row.severity), "black")
        ax.scatter([lon], [lat], marker="^", s=70, facecolors="none", edgecolors=colour, linewidths=1.6, zorder=6)
        ax.annotate(str(row.kind), (lon, lat), xytext=(0, 7), textcoords="offset points", fontsize=7, ha="center",
                    color=colour, zorder=6, clip_on=True,
                    path_effects=[patheffects.withStroke(linewidth=2.0, foreground="white")])
        drawn.add(str(row.severity))
    return [Line2D([], [], ls="", marker="^", ms=7, mfc="none", mec=_SEVERITY.get(s, "black"), label=f"{s} alert")
            for s in sorted(drawn, key=lambda s: list(_SEVERITY).index(s) if s in _SEVERITY else 9)]


# ---------------------------------------------------------------------------------------------------------------------
# series


def _as_dates(dates) -> np.ndarray:
    """datetime64[D] array (T,) from a list of datetime.date or an array of datetime64."""
    if isinstance(dates, (pd.DatetimeIndex, pd.Series)):
        dates = dates.to_numpy()
    if len(dates) and isinstance(dates[0], datetime.datetime):
        dates = [d.date() for d in dates]
    return np.asarray(dates, dtype="datetime64[D]")


def _series_values(values, n_epochs: int, hotspot_id) -> np.ndarray:
    """mean_disp_mm of one hotspot as float (T,); all NaN when missing."""
    if values is None or (np.isscalar(values) and pd.isna(values)):
        return np.full(n_epochs, np.nan)
    y = np.asarray(values, dtype=np.float64).ravel()
    if y.size != n_epochs:
        raise ValueError(f"plot_hotspot_series: hotspot {hotspot_id}: mean_disp_mm has {y.size} values, "
                         f"expected {n_epochs} (one per date)")
    return y


def _epoch(index, n_epochs: int) -> int | None:
    """A valid epoch index in [0, T), else None (missing or out of range)."""
    if index is None or pd.isna(index):
        return None
    i = int(index)
    return i if 0 <= i < n_epochs else None


def series_frame(hotspots: pd.DataFrame, dates: list) -> pd.DataFrame:
    """The ``series`` frame of plot_hotspot_series from `hotspots` rows (mean_disp, onset_date,
    peak_date, ...) and the epoch dates (datetime.date) their mean_disp is aligned with."""
    if not len(hotspots):
        return pd.DataFrame(columns=list(SERIES_COLUMNS))
    series = hotspots.rename(columns={"mean_disp": "mean_disp_mm"}).copy()
    series["onset_index"] = [dates.index(d) if d in dates else -1 for d in series["onset_date"]]
    series["peak_index"] = [dates.index(d) if d in dates else -1 for d in series["peak_date"]]
    return series


def plot_hotspot_series(dates, series: pd.DataFrame, path: Path, title: str, max_panels: int = 24,
                        forecasts: pd.DataFrame | None = None) -> Path:
    """PNG grid of the hotspots' mean displacement series, one small panel per hotspot; returns ``path``.

    dates: (T,) list of datetime.date or array of datetime64, the epochs.
    series: one row per hotspot, columns hotspot_id, mean_disp_mm (T floats in mm aligned with dates, NaN allowed),
    mean_velocity (mm/yr), n_pixels, onset_index, peak_index (epoch indices; a missing or out-of-range index draws
    no marker). Each panel shows the mean series and vertical markers at the onset (dashed) and peak (dotted) dates,
    titled "hotspot id (n px, v mm/yr)". The first ``max_panels`` rows (in the frame's order) are drawn and the
    title says how many were left out. Zero rows writes a figure saying "no hotspot".
    forecasts (optional): columns hotspot_id, date, p05, p50, p95 (mm, the same reference as mean_disp_mm): drawn
    after the series as the median (dashed) in a shaded band p05..p95; hotspots without rows get none.
    """
    max_panels = int(max_panels)
    if max_panels < 1:
        raise ValueError(f"plot_hotspot_series: max_panels must be >= 1, got {max_panels}")
    if len(series):
        _check_columns(series, SERIES_COLUMNS, "plot_hotspot_series: series")
    t = _as_dates(dates)
    if t.ndim != 1:
        raise ValueError(f"plot_hotspot_series: dates must be 1-D, got shape {t.shape}")
    n_epochs, n_total = t.size, len(series)
    ahead = {}
    if forecasts is not None and len(forecasts):
        _check_columns(forecasts, FORECAST_COLUMNS, "plot_hotspot_series: forecasts")
        ahead = {int(h): g.sort_values("date") for h, g in forecasts.groupby("hotspot_id")}

    if n_total == 0:
        fig = Figure(figsize=(6, 3))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no hotspot", ha="center", va="center", fontsize=16, color="0.4", transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title(f"{title}\n0 hotspots, {n_epochs} epochs")
        logger.info("hotspot series: no hotspot")
        return _save(fig, path)

    shown = series.iloc[:max_panels]
    n = len(shown)
    left_out = n_total - n
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(3.3 * ncols, 2.4 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    note = f"{n_total} hotspot(s)" if left_out == 0 else f"first {n} of {n_total} hotspots, {left_out} left out"
    fig.suptitle(f"{title}\n{note}", fontsize=11)

    for i, row in enumerate(shown.itertuples(index=False)):
        ax = axes[i // ncols][i % ncols]
        hid = int(row.hotspot_id)
        y = _series_values(row.mean_disp_mm, n_epochs, hid)
        colour = _colour(hid)
        ax.axhline(0.0, color="0.8", lw=0.6, zorder=0)
        ax.plot(t, y, color=colour, lw=1.0, marker=".", ms=2)
        onset, peak = _epoch(row.onset_index, n_epochs), _epoch(row.peak_index, n_epochs)
        if onset is not None:
            ax.axvline(t[onset], color="tab:orange", ls="--", lw=0.9, label="onset")
        if peak is not None:
            ax.axvline(t[peak], color="tab:red", ls=":", lw=1.1, label="peak")
        end = t[-1] if n_epochs else None
        if hid in ahead:
            f = ahead[hid]
            tf = _as_dates(list(f["date"]))
            ax.fill_between(tf, f["p05"].to_numpy(float), f["p95"].to_numpy(float), color=colour, alpha=0.25, lw=0,
                            label="forecast 90 %")
            ax.plot(tf, f["p50"].to_numpy(float), color=colour, ls="--", lw=1.0, label="forecast median")
            end = max(end, tf[-1]) if end is not None else tf[-1]
        n_px = _fmt(row.n_pixels, ".0f")
        ax.set_title(f"hotspot {hid} ({n_px} px, {_fmt(row.mean_velocity)} mm/yr)", fontsize=8)
        ax.tick_params(labelsize=7)
        locator = mdates.AutoDateLocator(minticks=2, maxticks=5)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        if n_epochs:
            pad = max((end - t[0]) // 50, np.timedelta64(1, "D"))   # markers at the first/last date stay visible
            ax.set_xlim(t[0] - pad, end + pad)
        if i % ncols == 0:
            ax.set_ylabel("mean disp. (mm)", fontsize=7)
        if i == 0 and (onset is not None or peak is not None or hid in ahead):
            ax.legend(fontsize=6, loc="best", framealpha=0.7)
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_axis_off()
    logger.info("hotspot series: %d hotspot(s), %d drawn, %d left out", n_total, n, left_out)
    return _save(fig, path)
