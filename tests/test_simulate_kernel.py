"""Tests of the simulated-scene kernel (insarlake.simulate.scene): pure numpy/pandas, fast."""
from __future__ import annotations

import pickle
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from insarlake.errors import ConfigError
from insarlake.simulate import scene as S

ROOT = Path(__file__).resolve().parents[1]


def make_sim(**overrides) -> types.SimpleNamespace:
    """The `simulate` section of conf/default.yaml, with overrides."""
    cfg = yaml.safe_load((ROOT / "conf" / "default.yaml").read_text())["simulate"]
    unknown = set(overrides) - set(cfg)
    assert not unknown, unknown
    cfg.update(overrides)
    return types.SimpleNamespace(**cfg)


@pytest.fixture(scope="module")
def small_plan() -> S.ScenePlan:
    return S.plan_scene(make_sim(n_pixels=3000))


@pytest.fixture(scope="module")
def scene():
    """A full 20k-pixel scene (all tiles) with its components."""
    plan = S.plan_scene(make_sim(n_pixels=20000))
    frame, comps = S.generate_scene(plan, return_components=True)
    return plan, frame, comps


def _busiest_tile(plan: S.ScenePlan) -> int:
    return max(plan.tiles, key=lambda t: t.n_pixels).tile_index


# ------------------------------------------------------------------------------------ schema
def test_schema_and_dtypes(small_plan):
    idx = _busiest_tile(small_plan)
    frame = S.generate_tile(small_plan, idx)
    epochs = S.epoch_column_names(small_plan)
    assert list(frame.columns) == list(S.EGMS_STATIC_COLUMNS) + epochs + ["source_id", "source_type"]
    assert len(frame) == small_plan.tiles[idx].n_pixels
    assert all(len(c) == 8 and c.isdigit() for c in epochs)
    assert epochs[0] == str(small_plan.dates[0]).replace("-", "")
    assert (frame[epochs].dtypes == np.float64).all()
    assert frame["source_id"].dtype == np.int64
    assert set(frame["source_type"]) <= {"none", *S.SOURCE_KINDS}
    for col in S.EGMS_STATIC_COLUMNS[1:]:
        assert frame[col].dtype == np.float64, col
        assert np.isfinite(frame[col]).all(), col
    assert frame["pid"].str.match(r"^SIM\d{12}$").all()
    assert (frame["pid"].str[3:9] == f"{idx:06d}").all()


def test_plan_is_small_and_picklable(small_plan):
    blob = pickle.dumps(small_plan)
    assert len(blob) < 200_000
    again = pickle.loads(blob)
    idx = _busiest_tile(small_plan)
    pd.testing.assert_frame_equal(S.generate_tile(again, idx), S.generate_tile(small_plan, idx), check_exact=True)
    assert [s.source_id for s in small_plan.sources] == list(range(1, len(small_plan.sources) + 1))
    kinds = [s.kind for s in small_plan.sources]
    assert kinds == sorted(kinds, key=S.SOURCE_KINDS.index)
    assert {k: kinds.count(k) for k in S.SOURCE_KINDS} == make_sim().sources


# ------------------------------------------------------------------------------ determinism
def test_same_seed_identical_different_seed_differs(small_plan):
    idx = _busiest_tile(small_plan)
    a = S.generate_tile(small_plan, idx)
    b = S.generate_tile(S.plan_scene(make_sim(n_pixels=3000)), idx)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    other = S.plan_scene(make_sim(n_pixels=3000, seed=8))
    c = S.generate_tile(other, idx)
    same_shape = len(c) == len(a)
    assert not same_shape or not np.allclose(c["latitude"], a["latitude"])
    assert not np.array_equal(other.dates, small_plan.dates) or \
        [s.as_dict() for s in other.sources] != [s.as_dict() for s in small_plan.sources]


def test_tile_order_does_not_matter(small_plan):
    order = [t.tile_index for t in small_plan.tiles if t.n_pixels][:6]
    forward = {i: S.generate_tile(small_plan, i, return_components=True) for i in order}
    S._BASIS_CACHE.clear()
    fresh = S.plan_scene(make_sim(n_pixels=3000))
    for i in reversed(order):
        frame, comps = S.generate_tile(fresh, i, return_components=True)
        pd.testing.assert_frame_equal(frame, forward[i][0], check_exact=True)
        for key, arr in comps.items():
            assert np.array_equal(arr, forward[i][1][key]), key


# ----------------------------------------------------------------------------- tiles, pixels
def test_pixel_allocation_positions_and_pids(scene):
    plan, frame, comps = scene
    assert sum(t.n_pixels for t in plan.tiles) == plan.n_pixels == len(frame) == 20000
    assert [t.tile_index for t in plan.tiles] == list(range(len(plan.tiles)))
    assert len(plan.tiles) == 100  # 20 km / 2 km squared
    assert frame["pid"].is_unique
    tile_of_row = np.repeat([t.tile_index for t in plan.tiles], [t.n_pixels for t in plan.tiles])
    boxes = np.array([(t.x0_m, t.y0_m, t.x1_m, t.y1_m) for t in plan.tiles])[tile_of_row]
    x, y = comps["x_m"], comps["y_m"]
    assert ((x >= boxes[:, 0]) & (x <= boxes[:, 2]) & (y >= boxes[:, 1]) & (y <= boxes[:, 3])).all()
    assert (frame["pid"].str[3:9].astype(int).to_numpy() == tile_of_row).all()
    lon0, lat0, lon1, lat1 = S.scene_bounds_lonlat(plan)
    assert frame["longitude"].between(lon0, lon1).all() and frame["latitude"].between(lat0, lat1).all()
    # the scene is centred on (center_lon, center_lat) and has the configured size
    sim = make_sim()
    assert (lon0 + lon1) / 2 == pytest.approx(sim.center_lon) and (lat0 + lat1) / 2 == pytest.approx(sim.center_lat)
    assert (lat1 - lat0) * np.pi / 180 * S.EARTH_RADIUS_M == pytest.approx(sim.height_km * 1000)
    # local <-> lon/lat round trip
    bx, by = S.lonlat_to_local(plan, frame["longitude"].to_numpy(), frame["latitude"].to_numpy())
    assert np.allclose(bx, x, atol=1e-6) and np.allclose(by, y, atol=1e-6)


def test_edge_tiles_are_clipped():
    plan = S.plan_scene(make_sim(n_pixels=500, width_km=5.0, height_km=3.0, tile_km=2.0))
    assert len(plan.tiles) == 3 * 2
    assert max(t.x1_m for t in plan.tiles) == 5000.0 and max(t.y1_m for t in plan.tiles) == 3000.0
    assert sum(t.n_pixels for t in plan.tiles) == 500
    frame = S.generate_scene(plan)
    assert len(frame) == 500 and frame["pid"].is_unique


def test_pixels_cluster_in_urban_patches_with_high_coherence(scene):
    plan, frame, comps = scene
    q = S._urban_quadratic(plan, comps["x_m"], comps["y_m"]).min(axis=1)
    core, far = q < 1.0, q > 16.0
    # density: pixels per unit area in patch cores vs far countryside (areas by Monte Carlo)
    rng = np.random.default_rng(0)
    qu = S._urban_quadratic(plan, rng.uniform(0, plan.width_m, 100_000),
                            rng.uniform(0, plan.height_m, 100_000)).min(axis=1)
    dens_core = core.sum() / (qu < 1.0).mean()
    dens_far = far.sum() / (qu > 16.0).mean()
    assert dens_core > 5 * dens_far
    coh = frame["temporal_coherence"].to_numpy()
    assert coh[core].mean() > 0.8 > coh[far].mean() and coh.min() >= 0.4 and coh.max() < 1.0


# ------------------------------------------------------------------------------------ dates
def test_calendar(small_plan):
    sim = make_sim()
    d = small_plan.dates
    assert d.dtype == np.dtype("datetime64[D]")
    assert (np.diff(d).astype(int) > 0).all()
    assert d[0] == np.datetime64(sim.start_date) and d[-1] <= np.datetime64(sim.end_date)
    change = np.datetime64(sim.cadence_change_date)
    before, after = d[d < change], d[d >= change]
    assert np.median(np.diff(before).astype(int)) == sim.cadence_days
    assert np.median(np.diff(after).astype(int)) == sim.cadence_after_days
    # one orbit grid: every date is a whole number of cycles from the start
    assert ((d - d[0]).astype(int) % sim.cadence_days == 0).all()
    assert ((after - before[-1]).astype(int) % sim.cadence_after_days == 0).all()
    end = np.datetime64(sim.end_date)
    full = len(np.arange(d[0], change, sim.cadence_days)) + len(np.arange(change, end + 1, sim.cadence_after_days))
    assert 0.85 * full <= len(d) < full  # ~5 % of acquisitions missing
    assert np.allclose(small_plan.t_years, (d - d[0]).astype(float) / 365.25)


# ------------------------------------------------------------------------------- components
def test_components_add_up(scene):
    plan, frame, comps = scene
    disp = frame[S.epoch_column_names(plan)].to_numpy()
    miss = comps["missing"]
    assert miss.dtype == bool and not miss[:, 0].any()
    assert np.array_equal(np.isnan(disp), miss)
    total = (comps["deformation_mm"] + comps["atmosphere_mm"] + comps["noise_mm"] + comps["unwrap_mm"]
             + comps["point_mm"])
    assert not comps["point_mm"].any()      # point_velocity_mm_yr 0 in the default
    assert np.allclose(disp[~miss], total[~miss], rtol=0, atol=1e-9)
    assert 0.003 < miss.mean() < 0.007  # missing_share 0.005
    # referenced to the first epoch: only the noise is left there
    assert np.all(comps["deformation_mm"][:, 0] == 0) and np.all(comps["atmosphere_mm"][:, 0] == 0)
    assert np.all(comps["unwrap_mm"][:, 0] == 0)
    assert np.array_equal(disp[:, 0], comps["noise_mm"][:, 0])
    assert np.abs(disp[:, 0]).max() < 10


def test_each_point_moves_on_its_own_and_nothing_else_changes(small_plan):
    """simulate.point_velocity_mm_yr: each point's own linear trend, with the configured spread;
    every other draw of the tile (and so every scene made before the key) is unchanged."""
    sigma = 0.45
    moving = S.plan_scene(make_sim(n_pixels=3000, point_velocity_mm_yr=sigma))
    idx = _busiest_tile(small_plan)
    before, parts_before = S.generate_tile(small_plan, idx, return_components=True)
    after, parts = S.generate_tile(moving, idx, return_components=True)
    for name in ("deformation_mm", "atmosphere_mm", "noise_mm", "unwrap_mm", "missing"):
        assert np.array_equal(parts[name], parts_before[name]), name
    point = parts["point_mm"]
    rate = point[:, -1] / moving.t_years[-1]
    assert np.allclose(point, np.multiply.outer(rate, moving.t_years), rtol=0, atol=1e-9)   # a straight line
    n = rate.size
    # sample std of n normal draws: standard error sigma / sqrt(2 (n - 1)); 5 of them
    assert abs(rate.std(ddof=1) - sigma) < 5 * sigma / np.sqrt(2 * (n - 1))
    assert abs(rate.mean()) < 5 * sigma / np.sqrt(n)
    # the fitted velocity (constant + linear) moves by exactly the point's rate
    shift = after["mean_velocity"].to_numpy() - before["mean_velocity"].to_numpy()
    assert np.allclose(shift, rate, rtol=0, atol=1e-6)
    epochs = S.epoch_column_names(moving)
    kept = ~parts["missing"]
    assert np.allclose((after[epochs].to_numpy() - before[epochs].to_numpy())[kept], point[kept], rtol=0, atol=1e-9)


def test_noise_grows_as_coherence_drops(scene):
    plan, frame, comps = scene
    coh = frame["temporal_coherence"].to_numpy()
    std = comps["noise_mm"].std(axis=1)
    low, high = std[coh < 0.55], std[coh > 0.9]
    assert low.size > 100 and high.size > 100
    assert np.median(low) > 2.5 * np.median(high)
    # Cramer-Rao: std = lambda/(4 pi) sqrt((1-g^2)/(2 L g^2))
    expected = plan.wavelength_mm / (4 * np.pi) * np.sqrt((1 - coh ** 2) / (2 * plan.looks * coh ** 2))
    assert np.median(std / expected) == pytest.approx(1.0, abs=0.05)


def test_unwrapping_errors_are_half_wavelength_steps(scene):
    plan, frame, comps = scene
    half = plan.wavelength_mm / 2
    assert half == pytest.approx(27.73, abs=0.01)
    u = comps["unwrap_mm"]
    k = u / half
    assert np.allclose(k, np.round(k), atol=1e-9)
    hit = (u != 0).any(axis=1)
    assert 0.0005 < hit.mean() < 0.008  # unwrap_error_share 0.003
    jumps = np.diff(u, axis=1)
    assert (np.count_nonzero(jumps, axis=1) <= 2).all()


def test_atmosphere_is_spatially_correlated(scene):
    plan, frame, comps = scene
    rng = np.random.default_rng(0)
    x, y = comps["x_m"], comps["y_m"]
    atm = comps["atmosphere_mm"][:, 1:]
    atm = atm - atm.mean(axis=0)  # per-epoch spatial anomaly
    i = rng.integers(0, x.size, 200_000)
    j = rng.integers(0, x.size, 200_000)
    d = np.hypot(x[i] - x[j], y[i] - y[j])
    near, far = (d < 500) & (i != j), d > 10_000
    assert near.sum() > 200 and far.sum() > 1000

    def corr(sel):
        a, b = atm[i[sel]].ravel(), atm[j[sel]].ravel()
        return np.corrcoef(a, b)[0, 1]
    c_near, c_far = corr(near), corr(far)
    assert c_near > 0.7 and c_far < 0.3 and c_near > c_far + 0.5
    # the relative delay is several mm (atmosphere_sigma_mm = 4) and zero at the reference point
    assert 2.0 < atm.std() < 15.0
    ref = S.atmosphere_mm(plan, np.array([plan.reference_x_m]), np.array([plan.reference_y_m]),
                          S.terrain_height_m(plan, np.array([plan.reference_x_m]), np.array([plan.reference_y_m])))
    assert np.abs(ref).max() < 1e-9


def test_atmosphere_and_terrain_agree_across_tiles(small_plan):
    """Fields are functions of position only: the same point gives the same value from any tile."""
    x = np.array([2000.0, 2000.0, 5123.4])
    y = np.array([4000.0, 4000.0, 7000.1])
    h = S.terrain_height_m(small_plan, x, y)
    a = S.atmosphere_mm(small_plan, x, y, h)
    assert h[0] == h[1] and np.array_equal(a[0], a[1])
    a_single = S.atmosphere_mm(small_plan, x[2:], y[2:], h[2:])
    assert np.allclose(a_single[0], a[2], atol=1e-9)


# ------------------------------------------------------------------------- terrain, geometry
def test_terrain_and_geometry(scene):
    plan, frame, comps = scene
    sim = make_sim()
    h = frame["height_ortho"].to_numpy()
    assert h.min() >= sim.base_height_m - 5 and h.max() <= sim.base_height_m + sim.terrain_relief_m + 5
    assert h.max() - h.min() > 0.5 * sim.terrain_relief_m
    # analytic gradient matches finite differences
    x, y = comps["x_m"][:50], comps["y_m"][:50]
    gx, gy = S.terrain_gradient(plan, x, y)
    e = 0.01
    fx = (S.terrain_height_m(plan, x + e, y) - S.terrain_height_m(plan, x - e, y)) / (2 * e)
    fy = (S.terrain_height_m(plan, x, y + e) - S.terrain_height_m(plan, x, y - e)) / (2 * e)
    assert np.allclose(gx, fx, atol=1e-5) and np.allclose(gy, fy, atol=1e-5)
    los = frame[["los_east", "los_north", "los_up"]].to_numpy()
    assert np.allclose(np.linalg.norm(los, axis=1), 1.0)
    inc = frame["incidence_angle"].to_numpy()
    assert inc.min() >= sim.incidence_near_deg - 1e-9 and inc.max() <= sim.incidence_far_deg + 1e-9
    assert inc.max() - inc.min() > 0.8 * (sim.incidence_far_deg - sim.incidence_near_deg)
    assert np.allclose(np.degrees(np.arccos(los[:, 2])), inc)
    # descending right-looking pass: the satellite is east of the ground (EGMS: los_east > 0)
    assert (los[:, 0] > 0).all() and (frame["track_angle"] == sim.track_angle_deg).all()
    # incidence grows along the look direction (track + 90 deg)
    az = np.radians(sim.track_angle_deg + 90)
    across = comps["x_m"] * np.sin(az) + comps["y_m"] * np.cos(az)
    assert np.corrcoef(across, inc)[0, 1] > 0.999


# ------------------------------------------------------------------------------------ truth
def _velocity(t, series):
    tc = t - t.mean()
    return (series - series.mean(axis=1, keepdims=True)) @ tc / (tc @ tc)


def test_truth_matches_signals(scene):
    plan, frame, comps = scene
    counts = frame["source_type"].value_counts()
    for kind in S.SOURCE_KINDS:
        assert counts.get(kind, 0) >= 20, (kind, counts.to_dict())
    sid = frame["source_id"].to_numpy()
    kinds = np.array(["none"] + [s.kind for s in plan.sources])
    assert np.array_equal(kinds[sid], frame["source_type"].to_numpy())
    peak = comps["peak_by_source"]
    assert peak.shape == (len(frame), len(plan.sources))
    has = sid > 0
    assert np.array_equal(peak[has].argmax(axis=1) + 1, sid[has])
    assert (peak[has].max(axis=1) >= plan.truth_min_mm).all()
    assert (peak[~has].max(axis=1) < plan.truth_min_mm).all()
    # a 'none' pixel has little deformation (tails of two sources may add up)
    none_peak = np.abs(comps["deformation_mm"][~has]).max(axis=1)
    assert np.quantile(none_peak, 0.98) < plan.truth_min_mm + 1.0
    assert none_peak.max() < 3 * plan.truth_min_mm
    vel = _velocity(plan.t_years, comps["deformation_mm"])
    typ = frame["source_type"].to_numpy()
    sub, up = vel[typ == "subsidence"], vel[typ == "uplift"]
    assert (sub < 0).mean() > 0.97 and np.median(sub) < -2.0
    assert (up > 0).mean() > 0.97 and np.median(up) > 0.5
    strong = has & (peak.max(axis=1) > 10)  # (overlapping sources of opposite sign may cancel)
    assert (np.abs(comps["deformation_mm"][strong]).max(axis=1) > 5).mean() > 0.98


def test_source_time_behaviour(scene):
    plan, frame, comps = scene
    t = plan.t_years
    for src in plan.sources:
        p = dict(src.params)
        if src.kind == "tunnel":
            # points along the axis: settlement starts later further along (TBM advance)
            s = np.linspace(0.1, 0.9, 5) * p["length_m"]
            x = src.x_m + s * np.sin(p["azimuth_rad"])
            y = src.y_m + s * np.cos(p["azimuth_rad"])
            _, le, ln, lu = S.los_geometry(plan, x, y)
            los = S._source_los_mm(plan, src, x, y, le, ln, lu)
            first = np.argmax(los < -0.01, axis=1)
            assert (np.diff(first) >= 0).all() and first[-1] > first[0]
            assert (los <= 1e-12).all() and los[:, 0].max() == 0
            assert 0 < p["onset_start_yr"] < p["onset_end_yr"] < t[-1]
        elif src.kind == "postseismic":
            # step at the event on both sides of the fault, opposite signs, then log growth
            off = 300.0
            x = src.x_m + np.array([off, -off]) * np.cos(p["strike_rad"])
            y = src.y_m - np.array([off, -off]) * np.sin(p["strike_rad"])
            _, le, ln, lu = S.los_geometry(plan, x, y)
            los = S._source_los_mm(plan, src, x, y, le, ln, lu)
            before, after = t < p["event_yr"], t >= p["event_yr"]
            assert (los[:, before] == 0).all()
            assert np.sign(los[0, after][0]) == -np.sign(los[1, after][0])
            assert (np.abs(los[0, after][-1]) > np.abs(los[0, after][0])) and abs(los[0, after][0]) > 1.0
        elif src.kind == "landslide":
            x, y = np.array([src.x_m]), np.array([src.y_m])
            _, le, ln, lu = S.los_geometry(plan, x, y)
            los = S._source_los_mm(plan, src, x, y, le, ln, lu)[0]
            fit = S._fit_static(t, los[None, :])
            # LOS series = gain x (v0 t + a t^2 / 2): the fit recovers gain x a
            gain = los[-1] / (p["velocity_mm_yr"] * t[-1] + 0.5 * p["acceleration_mm_yr2"] * t[-1] ** 2)
            assert fit["acceleration"][0] == pytest.approx(gain * p["acceleration_mm_yr2"], rel=1e-6)
            assert abs(gain) >= 0.2  # placed where the radar sees the downslope motion
            slope = S.terrain_slope_deg(plan, x, y)[0]
            assert slope > 5.0  # on steep-ish terrain
        elif src.kind in ("subsidence", "uplift"):
            x, y = np.array([src.x_m]), np.array([src.y_m])
            _, le, ln, lu = S.los_geometry(plan, x, y)
            los = S._source_los_mm(plan, src, x, y, le, ln, lu)[0]
            fit = S._fit_static(t, los[None, :])
            # (a few-mm annual term over ~4 years leaks a little into the linear fit)
            assert fit["mean_velocity"][0] == pytest.approx(p["rate_mm_yr"] * lu[0], abs=0.3 * p["seasonal_mm"])
            assert fit["seasonality"][0] == pytest.approx(p["seasonal_mm"] * lu[0], rel=1e-6)


# ---------------------------------------------------------------------------- static fields
def test_fit_recovers_known_model():
    t = np.sort(np.random.default_rng(1).uniform(0, 4, 150))
    series = np.stack([
        3.0 + 5.0 * t,                                                    # pure linear
        1.0 - 2.0 * t + 0.5 * 3.0 * t ** 2 + 4.0 * np.sin(2 * np.pi * t + 0.7),  # full model
    ])
    series[1, [5, 17, 90]] = np.nan
    fit = S._fit_static(t, series)
    assert fit["mean_velocity"][0] == pytest.approx(5.0, abs=1e-9)
    assert fit["mean_velocity_std"][0] == pytest.approx(0.0, abs=1e-6)
    assert fit["acceleration"][0] == pytest.approx(0.0, abs=1e-8)
    assert fit["seasonality"][0] == pytest.approx(0.0, abs=1e-8)
    assert fit["rmse_ts"][0] == pytest.approx(0.0, abs=1e-8)
    assert fit["acceleration"][1] == pytest.approx(3.0, abs=1e-8)
    assert fit["seasonality"][1] == pytest.approx(4.0, abs=1e-8)
    assert fit["rmse_ts"][1] == pytest.approx(0.0, abs=1e-8)


def test_static_fields_are_fitted_from_the_series(scene):
    plan, frame, comps = scene
    disp = frame[S.epoch_column_names(plan)].to_numpy()
    t = plan.t_years
    rows = np.r_[np.flatnonzero(np.isnan(disp).any(axis=1))[:5], 0, 1, 2]
    X = np.stack([np.ones_like(t), t, t ** 2, np.sin(2 * np.pi * t), np.cos(2 * np.pi * t)], axis=1)
    for r in rows:
        ok = np.isfinite(disp[r])
        tt, yy = t[ok], disp[r, ok]
        slope, icpt = np.polyfit(tt, yy, 1)
        res = yy - (slope * tt + icpt)
        se = np.sqrt(res @ res / (ok.sum() - 2) / ((tt - tt.mean()) @ (tt - tt.mean())))
        assert frame["mean_velocity"].iat[r] == pytest.approx(slope, abs=1e-9)
        assert frame["mean_velocity_std"].iat[r] == pytest.approx(se, rel=1e-9)
        beta, *_ = np.linalg.lstsq(X[ok], yy, rcond=None)
        res5 = yy - X[ok] @ beta
        assert frame["acceleration"].iat[r] == pytest.approx(2 * beta[2], abs=1e-7)
        assert frame["seasonality"].iat[r] == pytest.approx(np.hypot(beta[3], beta[4]), abs=1e-7)
        assert frame["rmse_ts"].iat[r] == pytest.approx(np.sqrt(np.mean(res5 ** 2)), rel=1e-7)
        cov = (res5 @ res5) / (ok.sum() - 5) * np.linalg.inv(X[ok].T @ X[ok])
        assert frame["acceleration_std"].iat[r] == pytest.approx(2 * np.sqrt(cov[2, 2]), rel=1e-6)
    # the deformation signal dominates the fitted velocity where a source is strong
    strong = comps["peak_by_source"].max(axis=1) > 30
    truth_vel = _velocity(t, comps["deformation_mm"])
    err = frame["mean_velocity"].to_numpy()[strong] - truth_vel[strong]
    assert np.median(np.abs(err)) < 2.0


def test_unknown_source_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown kinds"):
        S.plan_scene(make_sim(n_pixels=100, sources={"volcano": 1}))


def test_no_sources_and_empty_tiles():
    plan = S.plan_scene(make_sim(n_pixels=50, sources={}))
    assert plan.sources == ()
    empty = next(t for t in plan.tiles if t.n_pixels == 0)
    frame, comps = S.generate_tile(plan, empty.tile_index, return_components=True)
    assert len(frame) == 0 and list(frame.columns)[:17] == list(S.EGMS_STATIC_COLUMNS)
    assert comps["peak_by_source"].shape == (0, 0)
    frame = S.generate_scene(plan)
    assert len(frame) == 50 and (frame["source_type"] == "none").all()


def test_scheduled_changes_start_a_source_and_raise_its_rate():
    """simulate.changes: at a bowl's centre, seen from straight above (gain 1), the source that
    starts on D is still before D and moves as the unchanged one does since D; the other's
    displacement gains (rate_factor - 1) x rate x (t - D) from D."""
    still_kinds = {"subsidence": 2, "uplift": 0, "landslide": 0, "tunnel": 0, "postseismic": 0}
    day, factor = "2020-06-01", 3.0
    plain = S.plan_scene(make_sim(n_pixels=200, sources=still_kinds))
    changed = S.plan_scene(make_sim(n_pixels=200, sources=still_kinds, changes=[
        {"source": 1, "start_date": day}, {"source": 2, "rate_factor": factor, "change_date": day}]))
    t = plain.t_years
    t0 = float((np.datetime64(day) - plain.dates[0]).astype(float) / S.DAYS_PER_YEAR)
    one = np.ones(1)

    def los(plan, k):
        src = plan.sources[k]
        return S._source_los_mm(plan, src, src.x_m * one, src.y_m * one, 0 * one, 0 * one, one)[0]

    p = dict(plain.sources[0].params)
    at_start = p["rate_mm_yr"] * t0 + p["seasonal_mm"] * (np.sin(2 * np.pi * t0 + p["seasonal_phase_rad"])
                                                          - np.sin(p["seasonal_phase_rad"]))
    late, base = los(changed, 0), los(plain, 0)
    assert np.all(late[t < t0] == 0.0)
    np.testing.assert_allclose(late[t >= t0], base[t >= t0] - at_start, atol=1e-9)
    rate = dict(plain.sources[1].params)["rate_mm_yr"]
    np.testing.assert_allclose(los(changed, 1) - los(plain, 1), (factor - 1) * rate * np.maximum(t - t0, 0), atol=1e-9)
    with pytest.raises(ConfigError, match=r"simulate.changes\[0\].source' must name one of the scene's sources 1..2"):
        S.plan_scene(make_sim(n_pixels=200, sources=still_kinds, changes=[{"source": 3, "start_date": day}]))


def test_nested_sources_sit_in_bowls_and_beside_faults_and_keep_their_own_pixels():
    """simulate.nested_share 1: every landslide and tunnel midpoint within NEST_BOWL_RADII of a
    bowl's centre, the uplift across the post-seismic fault at decay + NEST_UPLIFT_RADII of its
    radius; bowls and faults stay where they were; each moved source still owns pixels in the truth."""
    kinds = {"subsidence": 2, "uplift": 1, "landslide": 3, "tunnel": 1, "postseismic": 1}
    apart = S.plan_scene(make_sim(n_pixels=8000, sources=kinds))
    nested = S.plan_scene(make_sim(n_pixels=8000, sources=kinds, nested_share=1.0))
    W, H = nested.width_m, nested.height_m
    assert [s.kind for s in nested.sources] == [s.kind for s in apart.sources]
    hosts = {s.source_id: s for s in nested.sources if s.kind in ("subsidence", "postseismic")}
    assert hosts == {s.source_id: s for s in apart.sources if s.kind in ("subsidence", "postseismic")}
    bowls = [s for s in hosts.values() if s.kind == "subsidence"]
    (fault,) = [s for s in hosts.values() if s.kind == "postseismic"]

    def clipped(x, y):          # a site pushed inside the scene's 5 % margin
        return min(x, W - x) <= 0.05 * W + 1e-6 or min(y, H - y) <= 0.05 * H + 1e-6

    for src, was in zip(nested.sources, apart.sources):
        p = dict(src.params)
        if src.kind in ("landslide", "tunnel"):
            x, y = src.x_m, src.y_m
            if src.kind == "tunnel":
                x, y = x + 0.5 * p["length_m"] * np.sin(p["azimuth_rad"]), y + 0.5 * p["length_m"] * np.cos(p["azimuth_rad"])
            assert (src.x_m, src.y_m) != (was.x_m, was.y_m)
            within = [np.hypot(x - b.x_m, y - b.y_m) / dict(b.params)["radius_m"] for b in bowls]
            assert min(within) <= S.NEST_BOWL_RADII[1] + 1e-9 or clipped(x, y), (src, within)
        if src.kind == "uplift":
            f = dict(fault.params)
            dx, dy = src.x_m - fault.x_m, src.y_m - fault.y_m
            along = dx * np.sin(f["strike_rad"]) + dy * np.cos(f["strike_rad"])
            across = abs(dx * np.cos(f["strike_rad"]) - dy * np.sin(f["strike_rad"]))
            lo, hi = (f["decay_m"] + r * p["radius_m"] for r in S.NEST_UPLIFT_RADII)
            assert clipped(src.x_m, src.y_m) or (abs(along) < 1e-6 * W and lo - 1e-6 <= across <= hi + 1e-6)
    slides = [(s.x_m, s.y_m, dict(s.params)["length_m"]) for s in nested.sources if s.kind == "landslide"]
    for i, (x, y, length) in enumerate(slides):       # moved apart from each other
        assert all(np.hypot(x - q, y - r) >= 0.5 * (length + e) - 1e-6 for q, r, e in slides[:i])
    truth = S.generate_scene(nested)["source_id"].value_counts()
    assert all(truth.get(s.source_id, 0) > 0 for s in nested.sources), truth
