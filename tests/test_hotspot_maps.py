"""Hotspot figures: the map (pixels + ellipses) and the series grid are written as real PNGs.

Pure pandas/numpy/matplotlib: no Spark session is started here.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from insarlake.geo import EARTH_RADIUS_M
from insarlake.hotspots.geometry import cluster_geometry, ellipse_wkt, mean_series, onset_peak
from insarlake.hotspots.maps import plot_hotspot_map, plot_hotspot_series

LON0, LAT0 = 4.90, 52.37           # scene centre (deg)
DEG_LAT_M = EARTH_RADIUS_M * np.pi / 180.0
START = datetime.date(2020, 1, 5)
N_EPOCHS = 60


def offset(x_m, y_m):
    """lon/lat of local offsets (metres east/north) around the scene centre (small-area approximation)."""
    lon = LON0 + np.asarray(x_m) / (DEG_LAT_M * np.cos(np.radians(LAT0)))
    lat = LAT0 + np.asarray(y_m) / DEG_LAT_M
    return lon, lat


def assert_png(path, min_bytes: int = 5_000):
    data = path.read_bytes()
    assert data[:4] == b"\x89PNG"
    assert len(data) > min_bytes, f"{path.name} is only {len(data)} bytes"


def scene(n_hotspots: int, n_retained: int | None = None, seed: int = 0):
    """(pixels, hotspots, series) of a synthetic scene: 400 background pixels over 10 x 10 km and ~35-pixel
    hotspots in a grid; the first ``n_retained`` hotspots are retained (their pixels carry their id), the others
    dropped (pixels -1)."""
    rng = np.random.default_rng(seed)
    n_retained = n_hotspots if n_retained is None else n_retained
    bx, by = rng.uniform(-5000, 5000, 400), rng.uniform(-5000, 5000, 400)
    blon, blat = offset(bx, by)
    frames = [pd.DataFrame({"lon": blon, "lat": blat, "hotspot_id": -1})]
    t_years = np.arange(N_EPOCHS) * 12 / 365.25
    hotspot_rows, series_rows = [], []
    side = max(int(np.ceil(np.sqrt(n_hotspots))), 1)
    for hid in range(n_hotspots):
        cx, cy = -3500 + 7000 * (hid % side) / max(side - 1, 1), -3500 + 7000 * (hid // side) / max(side - 1, 1)
        n = int(rng.integers(25, 45))
        x, y = cx + rng.normal(0, 250, n), cy + rng.normal(0, 120, n)
        lon, lat = offset(x, y)
        retained = hid < n_retained
        frames.append(pd.DataFrame({"lon": lon, "lat": lat, "hotspot_id": hid if retained else -1}))
        geom = cluster_geometry(lon, lat)
        rate = -5.0 - hid                                     # mm/yr after the onset
        onset_t = t_years[10 + hid % 20]
        disp = rate * np.maximum(t_years - onset_t, 0.0)[None, :] + rng.normal(0, 0.5, (n, N_EPOCHS))
        disp[:, 5] = np.nan                                   # a missing epoch
        mean = mean_series(disp)
        onset, peak = onset_peak(mean, t_years)
        hotspot_rows.append({"hotspot_id": hid, "retained": retained, "geometry": ellipse_wkt(geom),
                             "center_lon": geom.center_lon, "center_lat": geom.center_lat,
                             "mean_velocity": rate, "_geom": geom})
        series_rows.append({"hotspot_id": hid, "mean_disp_mm": mean, "mean_velocity": rate, "n_pixels": n,
                            "onset_index": onset, "peak_index": peak})
    pixels = pd.concat(frames, ignore_index=True)
    hotspots = pd.DataFrame(hotspot_rows, columns=[
        "hotspot_id", "retained", "geometry", "center_lon", "center_lat", "mean_velocity", "_geom"])
    series = pd.DataFrame(series_rows, columns=[
        "hotspot_id", "mean_disp_mm", "mean_velocity", "n_pixels", "onset_index", "peak_index"])
    return pixels, hotspots, series


def epochs(n: int = N_EPOCHS) -> list[datetime.date]:
    return [START + datetime.timedelta(days=12 * i) for i in range(n)]


def test_map_two_retained_one_dropped(tmp_path):
    pixels, hotspots, _ = scene(3, n_retained=2)
    assert 450 <= len(pixels) <= 550
    out = plot_hotspot_map(pixels, hotspots, tmp_path / "sub" / "dir" / "map.png", "two retained, one dropped")
    assert out == tmp_path / "sub" / "dir" / "map.png"
    assert_png(out)


def test_series_two_retained_one_dropped(tmp_path):
    _, _, series = scene(3, n_retained=2)
    out = plot_hotspot_series(epochs(), series, tmp_path / "nested" / "series.png", "series")
    assert out == tmp_path / "nested" / "series.png"
    assert_png(out)
    # datetime64 dates and list-valued series work the same
    series = series.assign(mean_disp_mm=[list(v) for v in series["mean_disp_mm"]])
    dates64 = np.array(epochs(), dtype="datetime64[ns]")
    assert_png(plot_hotspot_series(dates64, series, tmp_path / "series64.png", "series, datetime64"))


def test_zero_hotspots(tmp_path):
    pixels, hotspots, series = scene(0)
    assert len(hotspots) == 0 and len(series) == 0 and (pixels["hotspot_id"] == -1).all()
    assert_png(plot_hotspot_map(pixels, hotspots, tmp_path / "map.png", "no hotspot"))
    assert_png(plot_hotspot_series(epochs(), series, tmp_path / "series.png", "no hotspot"))
    # frames without any column at all
    assert_png(plot_hotspot_map(pixels, pd.DataFrame(), tmp_path / "map_bare.png", "no hotspot"))
    assert_png(plot_hotspot_series(epochs(), pd.DataFrame(), tmp_path / "series_bare.png", "no hotspot"))


@pytest.mark.slow
def test_thirty_hotspots_max_panels(tmp_path, caplog):
    pixels, hotspots, series = scene(30, n_retained=25)
    assert_png(plot_hotspot_map(pixels, hotspots, tmp_path / "map.png", "thirty hotspots"))
    with caplog.at_level(logging.INFO, logger="insarlake.hotspots.maps"):
        assert_png(plot_hotspot_series(epochs(), series, tmp_path / "series.png", "thirty hotspots", max_panels=24))
    assert "30 hotspot(s), 24 drawn, 6 left out" in caplog.text


def test_map_draws_the_ellipses(tmp_path):
    """Moving one ellipse (only its WKT: the pixels and the label stay) changes the image."""
    pixels, hotspots, _ = scene(3, n_retained=2)
    base = imread(plot_hotspot_map(pixels, hotspots, tmp_path / "a.png", "map"))
    again = imread(plot_hotspot_map(pixels, hotspots, tmp_path / "b.png", "map"))
    assert np.array_equal(base, again)                    # deterministic, so a difference means something
    for hid in (0, 2):                                    # a retained and the dropped hotspot
        moved = hotspots.copy()
        g = moved.loc[hid, "_geom"]
        lon, lat = offset(1500.0, -1000.0)                # still inside the pixels' extent: same axis limits
        shifted = dataclasses.replace(g, center_lon=g.center_lon + (lon - LON0), center_lat=g.center_lat + (lat - LAT0))
        moved.loc[hid, "geometry"] = ellipse_wkt(shifted)
        image = imread(plot_hotspot_map(pixels, moved, tmp_path / f"moved{hid}.png", "map"))
        assert image.shape == base.shape
        assert not np.array_equal(image, base), f"moving hotspot {hid}'s ellipse left the image unchanged"


def test_bad_input(tmp_path):
    pixels, hotspots, series = scene(2)
    with pytest.raises(ValueError, match="hotspot_id"):
        plot_hotspot_map(pixels.drop(columns="hotspot_id"), hotspots, tmp_path / "m.png", "bad")
    with pytest.raises(ValueError, match="geometry"):
        plot_hotspot_map(pixels, hotspots.drop(columns="geometry"), tmp_path / "m.png", "bad")
    with pytest.raises(ValueError, match="expected 59"):
        plot_hotspot_series(epochs(N_EPOCHS - 1), series, tmp_path / "s.png", "bad")
    with pytest.raises(ValueError, match="max_panels"):
        plot_hotspot_series(epochs(), series, tmp_path / "s.png", "bad", max_panels=0)
