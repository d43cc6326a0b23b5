"""Hotspot geometry kernels: standard distance (Eq. 7), standard-deviation ellipse, local frame, series summary.

Pure numpy/shapely: no Spark session is started here.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
import shapely.wkt
from shapely.geometry import Point

from insarlake.geo import EARTH_RADIUS_M, haversine_m
from insarlake.hotspots.geometry import (
    ClusterGeometry, cluster_geometry, ellipse_polygon, ellipse_wkt, from_local_m, mean_centre, mean_series,
    onset_peak, to_local_m,
)


def destination(lon0_deg, lat0_deg, x_m, y_m):
    """Point at local (x east, y north) metres from a centre: textbook direct great-circle formula.

    Independent of the code under test: bearing atan2(x, y), angular distance hypot(x, y) / R.
    """
    x_m, y_m = np.asarray(x_m, dtype=float), np.asarray(y_m, dtype=float)
    phi0, lam0 = math.radians(lat0_deg), math.radians(lon0_deg)
    delta = np.hypot(x_m, y_m) / EARTH_RADIUS_M
    theta = np.arctan2(x_m, y_m)
    phi = np.arcsin(math.sin(phi0) * np.cos(delta) + math.cos(phi0) * np.sin(delta) * np.cos(theta))
    lam = lam0 + np.arctan2(np.sin(theta) * np.sin(delta) * math.cos(phi0),
                            np.cos(delta) - math.sin(phi0) * np.sin(phi))
    return np.degrees(lam), np.degrees(phi)


def angle_diff(a_deg, b_deg, period=180.0):
    return abs((a_deg - b_deg + period / 2) % period - period / 2)


def lon_diff(a, b):
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


# --- standard distance on a hand-computed cluster --------------------------------------------------------------------

def test_tiny_cluster_hand_computed():
    # 4 corners at (±1 km east, ±2 km north) of (7°E, 45°N). They are symmetric, so their mean unit vector
    # points exactly at the centre and their local coordinates are exactly (±1, ±2) km. By hand:
    # sd_x = sqrt((1+1+1+1)/4) = 1, sd_y = sqrt((4+4+4+4)/4) = 2, S_d = sqrt(1 + 4) = sqrt(5);
    # covariance diag(1, 4), so semi-axes 2 (north-south, angle 0) and 1; ellipse pi*2*1; hull 2 km x 4 km = 8.
    lon, lat = destination(7.0, 45.0, [1000.0, -1000.0, 1000.0, -1000.0], [2000.0, 2000.0, -2000.0, -2000.0])
    g = cluster_geometry(lon, lat)
    assert isinstance(g, ClusterGeometry)
    assert g.n_pixels == 4
    assert g.center_lon == pytest.approx(7.0, abs=1e-10)
    assert g.center_lat == pytest.approx(45.0, abs=1e-10)
    assert g.sd_x_km == pytest.approx(1.0, rel=1e-9)
    assert g.sd_y_km == pytest.approx(2.0, rel=1e-9)
    assert g.standard_distance_km == pytest.approx(math.sqrt(5.0), rel=1e-9)
    assert g.semi_major_km == pytest.approx(2.0, rel=1e-9)
    assert g.semi_minor_km == pytest.approx(1.0, rel=1e-9)
    assert angle_diff(g.angle_deg, 0.0) < 1e-6
    assert g.ellipse_area_km2 == pytest.approx(2.0 * math.pi, rel=1e-9)
    assert g.hull_area_km2 == pytest.approx(8.0, rel=1e-9)

    # n_std scales the axes (and only the axes)
    g2 = cluster_geometry(lon, lat, n_std=2.0)
    assert (g2.semi_major_km, g2.semi_minor_km) == pytest.approx((4.0, 2.0), rel=1e-9)
    assert g2.standard_distance_km == pytest.approx(math.sqrt(5.0), rel=1e-9)


def test_cross_cluster_east_west():
    # a cross (±3 km east, ±1 km north): sd_x = sqrt(2*9/4), sd_y = sqrt(2*1/4), major axis east-west (90°)
    lon, lat = destination(-120.0, 34.0, [3000.0, -3000.0, 0.0, 0.0], [0.0, 0.0, 1000.0, -1000.0])
    g = cluster_geometry(lon, lat)
    assert g.sd_x_km == pytest.approx(math.sqrt(4.5), rel=1e-9)
    assert g.sd_y_km == pytest.approx(math.sqrt(0.5), rel=1e-9)
    assert g.standard_distance_km == pytest.approx(math.sqrt(5.0), rel=1e-9)
    assert g.angle_deg == pytest.approx(90.0, abs=1e-6)
    assert g.hull_area_km2 == pytest.approx(0.5 * 6.0 * 2.0, rel=1e-9)  # a rhombus: half the product of diagonals


@pytest.mark.parametrize("bearing", [30.0, 150.0])
def test_rotated_gaussian_blob_recovers_axes_and_angle(bearing):
    rng = np.random.default_rng(7)
    n, sig_major, sig_minor = 20_000, 3000.0, 1000.0
    beta = math.radians(bearing)
    u = np.array([math.sin(beta), math.cos(beta)])    # major axis (east, north)
    v = np.array([math.cos(beta), -math.sin(beta)])   # minor axis
    z = rng.standard_normal((n, 2))
    local = sig_major * z[:, :1] * u + sig_minor * z[:, 1:] * v
    lon, lat = destination(25.0, 60.0, local[:, 0], local[:, 1])
    g = cluster_geometry(lon, lat)
    assert g.semi_major_km == pytest.approx(3.0, rel=0.02)
    assert g.semi_minor_km == pytest.approx(1.0, rel=0.02)
    assert angle_diff(g.angle_deg, bearing) < 1.0
    assert 0.0 <= g.angle_deg < 180.0
    assert g.standard_distance_km == pytest.approx(math.sqrt(10.0), rel=0.02)
    # the marginal standard deviations of the rotated blob
    assert g.sd_x_km == pytest.approx(math.hypot(3.0 * u[0], 1.0 * v[0]), rel=0.02)
    assert g.sd_y_km == pytest.approx(math.hypot(3.0 * u[1], 1.0 * v[1]), rel=0.02)
    assert g.center_lon == pytest.approx(25.0, abs=0.01)
    assert g.center_lat == pytest.approx(60.0, abs=0.01)
    assert g.hull_area_km2 > g.ellipse_area_km2


def test_geometry_is_the_same_across_the_antimeridian():
    # the same cluster at lon 10 and at lon 180 (straddling it) must have the same shape
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.0, 2000.0, 500), rng.normal(0.0, 700.0, 500)
    lon_a, lat_a = destination(10.0, -35.0, x, y)
    lon_b = (lon_a + 170.0 + 180.0) % 360.0 - 180.0  # rotated about the polar axis, wrapped to [-180, 180)
    assert lon_b.min() < -179.0 and lon_b.max() > 179.0
    ga, gb = cluster_geometry(lon_a, lat_a), cluster_geometry(lon_b, lat_a)
    assert lon_diff(gb.center_lon, ga.center_lon + 170.0) < 1e-9
    for field in ("center_lat", "standard_distance_km", "sd_x_km", "sd_y_km", "semi_major_km", "semi_minor_km",
                  "angle_deg", "hull_area_km2"):
        assert getattr(gb, field) == pytest.approx(getattr(ga, field), rel=1e-7, abs=1e-9), field
    poly = ellipse_polygon(gb)
    assert poly.is_valid
    assert poly.contains(Point(gb.center_lon, gb.center_lat))
    assert poly.bounds[2] - poly.bounds[0] < 1.0  # not smeared across the globe


def test_mean_centre_near_antimeridian_and_symmetric():
    lon, lat = mean_centre([179.9, -179.9], [10.0, 10.0])
    assert lon_diff(lon, 180.0) < 1e-9
    assert lat == pytest.approx(10.0, abs=0.01)
    assert lat > 10.0  # the chord midpoint projects poleward of the endpoints' latitude
    # a naive mean of longitudes would give 0
    assert mean_centre([-0.5, 0.5], [0.0, 0.0]) == pytest.approx((0.0, 0.0), abs=1e-12)
    with pytest.raises(ValueError, match="undefined"):
        mean_centre([0.0, 180.0], [0.0, 0.0])


# --- the local frame -------------------------------------------------------------------------------------------------

def test_local_frame_round_trip_and_exact_distance():
    rng = np.random.default_rng(11)
    for lon0, lat0 in [(7.0, 45.0), (-118.2, 34.0), (179.95, -60.0), (0.0, 89.99), (30.0, -90.0)]:
        lon, lat = destination(lon0, lat0, rng.normal(0.0, 20_000.0, 300), rng.normal(0.0, 20_000.0, 300))
        lat = np.clip(lat, -90.0, 90.0)
        x, y = to_local_m(lon, lat, lon0, lat0)
        assert x.shape == lon.shape
        lon2, lat2 = from_local_m(x, y, lon0, lat0)
        assert np.max(np.abs(lat2 - lat)) < 1e-9
        far_from_pole = np.abs(lat) < 89.9  # longitude is meaningless at a pole
        assert np.max(lon_diff(lon2, lon)[far_from_pole], initial=0.0) < 1e-9
        # distance from the centre is the great-circle distance
        np.testing.assert_allclose(np.hypot(x, y), haversine_m(lon0, lat0, lon, lat), rtol=1e-10, atol=1e-6)
        # and the other way round: local -> lon/lat -> local
        xr, yr = to_local_m(*from_local_m(x, y, lon0, lat0), lon0, lat0)
        np.testing.assert_allclose(xr, x, atol=1e-6)
        np.testing.assert_allclose(yr, y, atol=1e-6)


def test_local_frame_axes_and_long_distances():
    # due north and due east from the centre; a long distance (5,000 km) is still exact
    x, y = to_local_m([7.0, 7.0], [46.0, 45.0 + 5_000_000.0 / EARTH_RADIUS_M * 180 / math.pi], 7.0, 45.0)
    assert np.abs(x).max() < 1e-6
    assert y[0] == pytest.approx(EARTH_RADIUS_M * math.radians(1.0), rel=1e-12)
    assert y[1] == pytest.approx(5_000_000.0, rel=1e-12)
    xe, ye = to_local_m(1.0, 0.0, 0.0, 0.0)
    assert float(xe) == pytest.approx(EARTH_RADIUS_M * math.radians(1.0), rel=1e-12)
    assert abs(float(ye)) < 1e-6
    lon, lat = from_local_m(0.0, 0.0, 12.5, -3.25)
    assert (float(lon), float(lat)) == pytest.approx((12.5, -3.25), abs=1e-12)


# --- the ellipse polygon ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bearing", [0.0, 30.0, 90.0, 150.0])
def test_ellipse_polygon_valid_ccw_area(bearing):
    beta = math.radians(bearing)
    # four points on the axes of a rotated frame (±4 km along the bearing, ±1.5 km across it)
    lx = np.array([4000.0 * math.sin(beta), -4000.0 * math.sin(beta), 1500.0 * math.cos(beta),
                   -1500.0 * math.cos(beta)])
    ly = np.array([4000.0 * math.cos(beta), -4000.0 * math.cos(beta), -1500.0 * math.sin(beta),
                   1500.0 * math.sin(beta)])
    lon, lat = destination(-118.0, 34.0, lx, ly)
    g = cluster_geometry(lon, lat, n_std=2.0)
    assert angle_diff(g.angle_deg, bearing) < 1e-6
    # by hand: variances 2*16/4 = 8 and 2*2.25/4 = 1.125 km² along and across, times n_std = 2
    assert g.semi_major_km == pytest.approx(2.0 * math.sqrt(8.0), rel=1e-6)
    assert g.semi_minor_km == pytest.approx(2.0 * math.sqrt(1.125), rel=1e-6)
    poly = ellipse_polygon(g, n_vertices=72)
    assert poly.is_valid and poly.geom_type == "Polygon"
    coords = np.asarray(poly.exterior.coords)
    assert len(coords) == 73 and np.array_equal(coords[0], coords[-1])
    assert poly.exterior.is_ccw
    assert poly.contains(Point(g.center_lon, g.center_lat))
    # area in the local frame
    x, y = to_local_m(coords[:, 0], coords[:, 1], g.center_lon, g.center_lat)
    local_area_km2 = shapely.Polygon(np.column_stack([x, y]) / 1000.0).area
    assert local_area_km2 == pytest.approx(math.pi * g.semi_major_km * g.semi_minor_km, rel=0.005)
    # every vertex lies on the ellipse: distance along the major axis a cos t, along the minor b sin t
    u = np.array([math.sin(beta), math.cos(beta)])
    v = np.array([-math.cos(beta), math.sin(beta)])
    pts = np.column_stack([x, y]) / 1000.0
    r = (pts @ u / g.semi_major_km) ** 2 + (pts @ v / g.semi_minor_km) ** 2
    np.testing.assert_allclose(r, 1.0, atol=1e-6)
    # WKT parses back to the same polygon
    back = shapely.wkt.loads(ellipse_wkt(g))
    assert back.is_valid and back.equals_exact(poly, 1e-12)


def test_single_pixel_gives_tiny_valid_polygon():
    g = cluster_geometry([12.0], [41.9])
    assert g.n_pixels == 1
    assert (g.center_lon, g.center_lat) == pytest.approx((12.0, 41.9), abs=1e-12)
    assert g.standard_distance_km == 0.0 and g.sd_x_km == 0.0 and g.sd_y_km == 0.0
    assert g.semi_major_km == g.semi_minor_km == 0.001
    assert g.hull_area_km2 == 0.0
    assert g.ellipse_area_km2 == pytest.approx(math.pi * 1e-6)
    poly = ellipse_polygon(g)
    assert poly.is_valid and poly.area > 0.0 and poly.exterior.is_ccw
    assert poly.contains(Point(12.0, 41.9))
    assert max(haversine_m(12.0, 41.9, *np.asarray(poly.exterior.coords).T)) == pytest.approx(1.0, rel=1e-6)
    assert shapely.wkt.loads(ellipse_wkt(g)).is_valid


def test_collinear_and_duplicate_points():
    lon, lat = destination(5.0, 50.0, [-2000.0, 0.0, 2000.0], [0.0, 0.0, 0.0])
    g = cluster_geometry(lon, lat, min_axis_km=0.01)
    assert g.hull_area_km2 == 0.0
    assert g.semi_minor_km == 0.01  # floored
    assert g.semi_major_km == pytest.approx(math.sqrt(8.0 / 3.0), rel=1e-6)
    assert g.angle_deg == pytest.approx(90.0, abs=1e-6)
    assert ellipse_polygon(g).is_valid
    g_dup = cluster_geometry([5.0, 5.0, 5.0], [50.0, 50.0, 50.0])
    assert g_dup.standard_distance_km == pytest.approx(0.0, abs=1e-9) and g_dup.angle_deg == 0.0


# --- bad input -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lon, lat, message", [
    ([], [], "empty"),
    ([1.0, np.nan], [45.0, 45.0], "lon_deg has 1 NaN"),
    ([1.0, 2.0], [45.0, np.inf], "lat_deg has 1 NaN/inf"),
    ([1.0], [91.0], r"outside \[-90, 90\]"),
    ([1.0, 2.0, 3.0], [45.0, 45.0], "incompatible shapes"),
])
def test_bad_input_raises(lon, lat, message):
    with pytest.raises(ValueError, match=message):
        cluster_geometry(lon, lat)


def test_bad_input_elsewhere_raises():
    with pytest.raises(ValueError, match="latitude"):
        to_local_m([0.0], [0.0], 0.0, 91.0)
    with pytest.raises(ValueError, match=r"outside \[-90, 90\]"):
        to_local_m([0.0], [-90.5], 0.0, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        from_local_m([np.nan], [0.0], 0.0, 0.0)
    with pytest.raises(ValueError, match="empty"):
        mean_centre([], [])
    with pytest.raises(ValueError, match="n_std"):
        cluster_geometry([0.0], [0.0], n_std=0.0)
    with pytest.raises(ValueError, match="n_vertices"):
        ellipse_polygon(cluster_geometry([0.0], [0.0]), n_vertices=3)


# --- series summary --------------------------------------------------------------------------------------------------

def test_mean_series_ignores_nan():
    disp = np.array([[1.0, np.nan, 3.0, np.nan],
                     [3.0, 4.0, np.nan, np.nan],
                     [5.0, 8.0, 5.0, np.nan]])
    out = mean_series(disp)
    assert out.shape == (4,)
    np.testing.assert_allclose(out[:3], [3.0, 6.0, 4.0])
    assert np.isnan(out[3])
    with pytest.raises(ValueError, match="2-D"):
        mean_series([1.0, 2.0])


T_YEARS = np.arange(120) * 12.0 / 365.25  # a 12-day revisit


def _flat_then_subsiding(seed=0, n_pixels=100, noise_mm=2.0):
    """Mean series of a cluster: flat for epochs 0..39, then -20 mm/yr; each pixel with 2 mm white noise."""
    rng = np.random.default_rng(seed)
    y = np.where(np.arange(120) < 40, 0.0, -20.0 * (T_YEARS - T_YEARS[39]))
    return mean_series(y + rng.normal(0.0, noise_mm, (n_pixels, 120)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_onset_peak_flat_then_linear(seed):
    y = _flat_then_subsiding(seed)
    onset, peak = onset_peak(y, T_YEARS)
    assert abs(onset - 40) <= 3
    assert peak == 119
    assert isinstance(onset, int) and isinstance(peak, int)


def test_onset_peak_ignores_nan_epochs():
    y = _flat_then_subsiding(0)
    y_gaps = y.copy()
    y_gaps[[0, 5, 17, 60, 61, 119]] = np.nan
    onset, peak = onset_peak(y_gaps, T_YEARS)
    assert abs(onset - 40) <= 3
    assert peak == 118  # the last finite epoch
    assert not np.isnan(y_gaps[onset])


def test_onset_peak_linear_from_start():
    y = -20.0 * T_YEARS + 3.0
    assert onset_peak(y, T_YEARS) == (0, 119)
    y_gap = y.copy()
    y_gap[:2] = np.nan
    assert onset_peak(y_gap, T_YEARS) == (2, 119)  # the first finite epoch
    # uplift: the peak is the largest |departure| whatever its sign
    assert onset_peak(-y, T_YEARS)[1] == 119


def test_onset_peak_peak_before_the_end():
    # a rise and a partial recovery: the peak is at the top, not at the last epoch
    y = np.concatenate([np.zeros(20), np.linspace(0.0, 30.0, 50), np.linspace(30.0, 10.0, 50)])
    assert onset_peak(y, T_YEARS)[1] == 69


def test_onset_peak_bad_input():
    with pytest.raises(ValueError, match="all NaN"):
        onset_peak(np.full(10, np.nan), np.arange(10.0))
    with pytest.raises(ValueError, match="strictly increasing"):
        onset_peak(np.zeros(3), [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        onset_peak(np.zeros(3), np.arange(4.0))
