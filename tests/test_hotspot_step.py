"""Sources that settle by a step inside steadily moving ground (hotspots.residual.local_step and
step_cores, rate.best_steps): brute-force least squares, and simulated series with a known answer (a
tunnel's trough across a bowl, a bowl alone, a trough alone, a field that steps as a whole)."""
import numpy as np
import pytest

from insarlake.geo import haversine_m
from insarlake.hotspots.geometry import from_local_m
from insarlake.hotspots.rate import STEP_EDGE_EPOCHS, best_step, best_steps, design
from insarlake.hotspots.residual import MIN_NEIGHBOURS, local_series, local_step, step_cores
from insarlake.hotspots.split import candidate_parts

CENTRE = (11.35, 44.5)
T_YEARS = np.arange(120) * 12 / 365.25          # 120 epochs, 12 days apart: ~3.9 years
SPAN_YR = T_YEARS[-1] - T_YEARS[0]


def _brute_steps(series, t):
    """(F, k, step) of each row by one least-squares fit per candidate epoch (the independent
    reference: np.linalg.lstsq on the full design, no projection)."""
    out = []
    for y in series:
        rss0 = np.sum((y - design(t) @ np.linalg.lstsq(design(t), y, rcond=None)[0]) ** 2)
        best = (np.inf, -1, 0.0)
        for k in range(STEP_EDGE_EPOCHS, t.size - STEP_EDGE_EPOCHS):
            coef = np.linalg.lstsq(design(t, k), y, rcond=None)[0]
            rss = np.sum((y - design(t, k) @ coef) ** 2)
            if rss < best[0]:
                best = (rss, k, coef[-1])
        out.append(((rss0 - best[0]) / (best[0] / (t.size - 5)), best[1], best[2]))
    return tuple(np.array(c) for c in zip(*out))


def test_best_steps_equals_one_fit_per_epoch():
    rng = np.random.default_rng(0)
    n = 40
    series = (rng.normal(0, 2, (n, 1)) * T_YEARS + rng.normal(0, 1.5, (n, 1)) * np.sin(2 * np.pi * T_YEARS)
              + rng.normal(0, 1, (n, T_YEARS.size)))
    at = rng.integers(STEP_EDGE_EPOCHS, T_YEARS.size - STEP_EDGE_EPOCHS, n)
    series[: n // 2] += rng.normal(0, 6, (n // 2, 1)) * (np.arange(T_YEARS.size) >= at[: n // 2, None])
    f_stat, k, step = best_steps(series, T_YEARS)
    f_ref, k_ref, step_ref = _brute_steps(series, T_YEARS)
    np.testing.assert_array_equal(k, k_ref)
    # float64 sums of ~120 terms of O(100) mm^2: agreement to ~1e-10 relative
    np.testing.assert_allclose(f_stat, f_ref, rtol=1e-8)
    np.testing.assert_allclose(step, step_ref, rtol=1e-8, atol=1e-9)
    # best_step on one row is the same computation
    assert best_step(series[0], T_YEARS) == pytest.approx((f_ref[0], k_ref[0], step_ref[0]), rel=1e-8)


def test_best_steps_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        best_steps(np.full((2, T_YEARS.size), np.nan), T_YEARS)
    with pytest.raises(ValueError, match=r"\(n, T\)"):
        best_steps(np.zeros((2, 10)), T_YEARS[:10])
    # a flat series: no step, F 0 (not a division by zero)
    assert best_steps(np.zeros((1, T_YEARS.size)), T_YEARS)[0][0] == 0.0


def test_the_local_step_is_the_best_step_of_the_series_minus_its_neighbours_median():
    """local_series is the series minus its neighbours' median; local_step its best step."""
    rng = np.random.default_rng(1)
    n = 300
    x, y = rng.uniform(-1500, 1500, n), rng.uniform(-1500, 1500, n)
    lon, lat = from_local_m(x, y, *CENTRE)
    series = rng.normal(0, 3, (n, T_YEARS.size)) + rng.normal(0, 5, (n, 1)) * T_YEARS
    series[rng.random((n, T_YEARS.size)) < 0.05] = np.nan
    sign = rng.choice(np.array([-1, 0, 1], np.int8), n)
    radius_m = 300.0
    f_stat, step = local_step(lon, lat, series, T_YEARS, sign, radius_m)
    local = local_series(lon, lat, series, sign, radius_m)
    checked = 0
    for i in range(n):
        d = haversine_m(lon[i], lat[i], lon, lat)
        if np.any(np.abs(d - radius_m) < 1e-3):
            continue                                   # right on the radius: either side
        near = d <= radius_m
        if sign[i] != 0:
            near &= sign != -sign[i]
        assert near.sum() < 64                         # below MAX_STEP_NEIGHBOURS: all are used
        if near.sum() < MIN_NEIGHBOURS:
            assert np.isnan(f_stat[i]) and np.isnan(step[i]) and np.isnan(local[i]).all()
            continue
        residual = series[i] - np.nanmedian(series[near], axis=0)
        np.testing.assert_array_equal(local[i], residual)      # the same median of the same values
        residual = np.where(np.isfinite(residual), residual, np.nanmean(residual))
        f_ref, _, step_ref = _brute_steps(residual[None, :], T_YEARS)
        assert f_stat[i] == pytest.approx(f_ref[0], rel=1e-8)
        assert step[i] == pytest.approx(step_ref[0], rel=1e-8, abs=1e-9)
        checked += 1
    assert checked > 100
    query = rng.random(n) < 0.3
    got = local_step(lon, lat, series, T_YEARS, sign, radius_m, query=query)
    # one batch's matrix product against another's: equal to rounding (a few ulp)
    np.testing.assert_allclose(got[0], f_stat[query], rtol=1e-12)


def _scene(trough_step_mm=0.0, bowl_rate=0.0, field_step_mm=0.0, seed=0):
    """Pixels on a jittered 80 m grid, 6 x 6 km, and their series (n, T) mm: a bowl at the centre
    (bowl_rate mm/yr at its centre, 1.2 km sigma), a tunnel's trough along y = 600 m (80 m sigma
    across, 3 km long) settling by trough_step_mm when the boring machine passes (its onset moves
    from 1.0 to 2.5 years along the line, 60-day settling), a field over x > 0 stepping by
    field_step_mm at 1.5 years, an annual cycle, an atmosphere common to each epoch and smooth in
    space (4 mm), and white noise (2 mm). Also x, y, the trough's share (n,) of its peak and the
    still ground (n,) bool, where every source adds less than 1 % of its peak."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(-3000, 3000, 80.0), np.arange(-3000, 3000, 80.0))
    x = gx.ravel() + rng.uniform(-25, 25, gx.size)
    y = gy.ravel() + rng.uniform(-25, 25, gy.size)
    t = T_YEARS[None, :]
    bowl = bowl_rate * np.exp(-(x ** 2 + y ** 2) / (2 * 1200.0 ** 2))
    trough = np.exp(-0.5 * ((y - 600.0) / 80.0) ** 2 - 0.5 * (np.maximum(np.abs(x) - 1500.0, 0) / 80.0) ** 2)
    onset = 1.0 + 1.5 * np.clip((x + 1500.0) / 3000.0, 0, 1)
    settle = -np.expm1(-np.maximum(t - onset[:, None], 0) * 365.25 / 60.0)
    field = (x > 0) * np.exp(-np.abs(x) / 2000.0)
    phase = rng.uniform(0, 2 * np.pi, T_YEARS.size)
    atmosphere = 4.0 * np.sin(x[:, None] / 3000.0 + phase) * np.cos(y[:, None] / 2500.0 - phase)
    series = (bowl[:, None] * t + trough_step_mm * trough[:, None] * settle
              + field_step_mm * field[:, None] * (t >= 1.5) + 1.5 * np.sin(2 * np.pi * t)
              + atmosphere + rng.normal(0, 2.0, (x.size, T_YEARS.size)))
    still = (np.abs(bowl) < 0.01 * abs(bowl_rate) + 1e-9) & (trough < 0.01) & (field < 0.01)
    return x, y, series, trough, still


def _split(x, y, series, still, min_f=50.0, share=0.15, radius_m=500.0, z_pixel=3.0, host_f=10.0):
    """candidate_parts (v0 = 0, sigma the still ground's velocity spread), then step_cores, on the
    moving pixels: (their indices, the parts before, after)."""
    lon, lat = from_local_m(x, y, *CENTRE)
    velocity = np.linalg.lstsq(design(T_YEARS), series.T, rcond=None)[0][1]
    sigma = 1.4826 * np.median(np.abs(velocity[still] - np.median(velocity[still])))
    excess = velocity / sigma
    moving = np.abs(excess) > z_pixel
    sign = np.where(moving, np.sign(excess), 0).astype(np.int8)
    f_stat, step = local_step(lon, lat, series, T_YEARS, sign, radius_m, query=moving)
    idx = np.flatnonzero(moving)
    before = candidate_parts(lon[idx], lat[idx], excess[idx], z_pixel, 3.0, 400.0, 10, 30, 1.3)
    after = step_cores(lon[idx], lat[idx], velocity[idx] * SPAN_YR, f_stat, step, before, series[idx], T_YEARS,
                       min_f, share, radius_m, 3, 30, 0.5, host_f)
    return idx, before, after


def test_a_trough_that_steps_across_a_bowl_is_split_off():
    """-25 mm of settlement across the flank of a -20 mm/yr bowl: one part by velocity, two by
    their series."""
    x, y, series, trough, still = _scene(trough_step_mm=-25.0, bowl_rate=-20.0)
    idx, before, after = _split(x, y, series, still)
    assert len(np.unique(before[before >= 0])) == 1
    assert len(np.unique(after[after >= 0])) == 2
    on_trough = trough[idx] > 0.5
    trough_part = np.bincount(after[on_trough & (after >= 0)]).argmax()
    found = after == trough_part
    assert (found & on_trough).sum() / (found | on_trough).sum() > 0.5
    assert after[np.argmin(np.hypot(x[idx], y[idx]))] != trough_part     # the bowl keeps its centre


def test_steady_ground_and_a_field_that_steps_as_a_whole_stay_whole():
    for kwargs in ({"bowl_rate": -20.0}, {"bowl_rate": -8.0, "field_step_mm": 30.0}):
        x, y, series, _, still = _scene(seed=2, **kwargs)
        _, before, after = _split(x, y, series, still)
        assert (before >= 0).sum() > 100
        np.testing.assert_array_equal(before, after)


def test_a_trough_alone_keeps_its_edge():
    x, y, series, _, still = _scene(trough_step_mm=-30.0, seed=3)
    _, before, after = _split(x, y, series, still)
    assert len(np.unique(before[before >= 0])) == 1
    np.testing.assert_array_equal(before, after)


def test_a_weak_trough_in_a_fast_bowl_is_left_to_the_bowl():
    """-15 mm across a -40 mm/yr bowl: the step is ~5 % of those pixels' motion over the series
    (the truth gives them to the bowl), below the default share; with no share it is split off."""
    x, y, series, _, still = _scene(trough_step_mm=-15.0, bowl_rate=-40.0, seed=4)
    _, before, after = _split(x, y, series, still, share=0.15)
    np.testing.assert_array_equal(before, after)
    _, _, unshared = _split(x, y, series, still, share=0.0)
    assert len(np.unique(unshared[unshared >= 0])) == 2


def test_a_strip_of_an_event_that_its_host_shares_is_not_split_off():
    """A strip of 120 pixels whose local step stands out (flagged) inside a part of 1,480: split
    off when the rest of the part moves steadily, kept when the rest steps at the strip's epoch
    (the fastest strip of a post-seismic field beside its fault)."""
    rng = np.random.default_rng(6)
    gx, gy = np.meshgrid(np.arange(40) * 60.0, np.arange(40) * 60.0)
    x, y = gx.ravel(), gy.ravel()
    lon, lat = from_local_m(x, y, *CENTRE)
    strip = (x >= 1080) & (x <= 1200)
    motion = np.full(x.size, -20.0)
    step_f = np.where(strip, 100.0, 0.0)
    step_mm = np.where(strip, -10.0, 0.0)
    at = (np.arange(T_YEARS.size) >= 60)
    part = np.zeros(x.size, np.int64)
    for host_step_mm, parts in ((0.0, 2), (-20.0, 1)):
        series = (-5.0 * T_YEARS + np.where(strip, -30.0, host_step_mm)[:, None] * at
                  + rng.normal(0, 2.0, (x.size, T_YEARS.size)))
        out = step_cores(lon, lat, motion, step_f, step_mm, part, series, T_YEARS, 50.0, 0.15, 500.0, 3, 30, 0.5,
                         10.0)
        assert len(np.unique(out)) == parts
        if parts == 2:
            np.testing.assert_array_equal(out == 1, strip)


def test_step_cores_rejects_bad_input():
    lon, lat = from_local_m(np.arange(5.0), np.zeros(5), *CENTRE)
    ones, part = np.ones(5), np.zeros(5, np.int64)
    series = np.zeros((5, T_YEARS.size))
    with pytest.raises(ValueError, match="same shape"):
        step_cores(lon, lat, ones[:4], ones, ones, part, series, T_YEARS, 50.0, 0.1, 500.0, 3, 3, 0.5, 10.0)
    with pytest.raises(ValueError, match="rim_share"):
        step_cores(lon, lat, ones, ones, ones, part, series, T_YEARS, 50.0, 0.1, 500.0, 3, 3, 1.5, 10.0)
    with pytest.raises(ValueError, match="series_mm"):
        step_cores(lon, lat, ones, ones, ones, part, series[:4], T_YEARS, 50.0, 0.1, 500.0, 3, 3, 0.5, 10.0)
    with pytest.raises(ValueError, match="t_years"):
        local_step(lon, lat, np.zeros((5, 30)), T_YEARS, np.zeros(5, np.int8), 100.0)
