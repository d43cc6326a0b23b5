"""Nested sources by the local residual velocity (hotspots.residual): brute-force neighbourhood
medians, and simulated fields with a known answer (a trough inside a bowl, a bowl alone, a
landslide and its rim)."""
import numpy as np
import pytest

from insarlake.geo import haversine_m
from insarlake.hotspots.geometry import from_local_m
from insarlake.hotspots.residual import MIN_NEIGHBOURS, local_residual, residual_cores
from insarlake.hotspots.split import candidate_parts

CENTRE = (11.35, 44.5)


def _brute_force(lon, lat, velocity, sign, radius_m):
    """The residual from every pairwise haversine distance (the independent reference)."""
    out = np.full(len(lon), np.nan)
    for i in range(len(lon)):
        near = haversine_m(lon[i], lat[i], lon, lat) <= radius_m
        if sign[i] != 0:
            near &= sign != -sign[i]
        if near.sum() >= MIN_NEIGHBOURS:
            out[i] = velocity[i] - np.median(velocity[near])
    return out


def test_the_residual_is_the_velocity_minus_its_neighbours_median():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1500, 1500, 800), rng.uniform(-1500, 1500, 800)
    lon, lat = from_local_m(x, y, *CENTRE)
    velocity = rng.normal(0, 2, 800)
    sign = rng.choice(np.array([-1, 0, 1], np.int8), 800)
    got = local_residual(lon, lat, velocity, sign, 200.0)
    expected = _brute_force(lon, lat, velocity, sign, 200.0)
    # pixels right on the radius may fall either side of it: compare all but those
    d = np.abs(haversine_m(lon[:, None], lat[:, None], lon[None, :], lat[None, :]) - 200.0).min(axis=1)
    clear = d > 1e-3
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(np.isnan(got[clear]), np.isnan(expected[clear]))
    np.testing.assert_allclose(got[clear], expected[clear], rtol=0, atol=1e-12)
    assert np.isnan(got).any() and np.isfinite(got).any()
    # the query rows alone
    query = rng.random(800) < 0.3
    np.testing.assert_array_equal(local_residual(lon, lat, velocity, sign, 200.0, query=query), got[query])


def test_the_moving_pixels_of_the_other_sign_are_left_out():
    # six pixels 10 m apart: two moving down fast (-10), four moving up (+4 .. +7)
    lon, lat = from_local_m(np.arange(6) * 10.0, np.zeros(6), *CENTRE)
    velocity = np.array([-10.0, -10.0, 4.0, 5.0, 6.0, 7.0])
    sign = np.array([-1, -1, 1, 1, 1, 1], np.int8)
    got = local_residual(lon, lat, velocity, sign, 100.0)
    # the up-movers' median is over the four of them; the down-movers keep two (< MIN_NEIGHBOURS)
    np.testing.assert_allclose(got[2:], velocity[2:] - 5.5)
    assert np.isnan(got[:2]).all()
    # not moving: every neighbour counts (the median of all six is 4.5)
    still = local_residual(lon, lat, velocity, np.zeros(6, np.int8), 100.0)
    np.testing.assert_allclose(still, velocity - 4.5)


def test_bad_input_is_refused():
    lon, lat = from_local_m(np.arange(5) * 10.0, np.zeros(5), *CENTRE)
    with pytest.raises(ValueError, match="same shape"):
        local_residual(lon, lat[:4], np.zeros(5), np.zeros(5, np.int8), 100.0)
    with pytest.raises(ValueError, match="finite"):
        local_residual(lon, lat, np.array([0, 0, np.nan, 0, 0.0]), np.zeros(5, np.int8), 100.0)
    with pytest.raises(ValueError, match="radius_m"):
        local_residual(lon, lat, np.zeros(5), np.zeros(5, np.int8), 0.0)
    with pytest.raises(ValueError, match="rim_share"):
        residual_cores(lon, lat, np.ones(5), np.ones(5), np.zeros(5, np.int64), 1.0, 0.1, 100.0, 3, 3, 1.5)
    assert local_residual(lon[:0], lat[:0], np.zeros(0), np.zeros(0, np.int8), 100.0).shape == (0,)


def _field(parts, seed=0, sigma=0.1, common_sigma=0.4):
    """Pixels on a jittered 50 m grid whose velocity (mm/yr) is a sum of the ``parts`` (functions of
    x, y in metres) plus white noise of sigma and a smooth common term (the atmosphere's share) of
    common_sigma; also x, y."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(-4000, 4000, 50.0), np.arange(-4000, 4000, 50.0))
    x = gx.ravel() + rng.uniform(-15, 15, gx.size)
    y = gy.ravel() + rng.uniform(-15, 15, gy.size)
    common = common_sigma * np.sin(x / 2500.0 + 1.0) * np.cos(y / 3000.0)
    velocity = sum(p(x, y) for p in parts) + common + rng.normal(0, sigma, x.size)
    return x, y, velocity


def _bowl(peak, width_m, cx=0.0, cy=0.0):
    return lambda x, y: peak * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width_m ** 2))


def _trough(peak, half_width_m, y0, half_length_m):
    return lambda x, y: peak * np.exp(-((y - y0) ** 2 + np.maximum(np.abs(x) - half_length_m, 0) ** 2)
                                      / (2 * half_width_m ** 2))


def _parts(x, y, velocity, radius_m=250.0, sigma=0.3, z_pixel=3.0):
    """candidate_parts, then residual_cores, on the moving pixels (v0 = 0; sigma: the velocity's
    noise, white and common together)."""
    lon, lat = from_local_m(x, y, *CENTRE)
    excess = velocity / sigma
    moving = np.abs(excess) > z_pixel
    sign = np.where(moving, np.sign(excess), 0).astype(np.int8)
    residual = local_residual(lon, lat, velocity, sign, radius_m)
    stable = residual[~moving & np.isfinite(residual)]
    sigma_r = 1.4826 * np.median(np.abs(stable - np.median(stable)))
    idx = np.flatnonzero(moving)
    before = candidate_parts(lon[idx], lat[idx], excess[idx], z_pixel, 3.0, 400.0, 10, 30, 1.3)
    after = residual_cores(lon[idx], lat[idx], excess[idx], residual[idx] / sigma, before, 4.0 * sigma_r / sigma,
                           0.15, radius_m, 10, 30, 0.5)
    return idx, before, after


def test_a_trough_inside_a_bowl_without_a_peak_of_its_own_is_split_off():
    """A tunnel's trough (80 m sigma across, 2 km long, -5 mm/yr) across the flank of a bowl (-20
    mm/yr at the centre, 1.2 km sigma; -5 mm/yr under the trough): the velocity has one peak, so
    the peak split keeps one part; the residual finds the trough."""
    trough = _trough(-5.0, 80.0, 2000.0, 1000.0)
    x, y, velocity = _field([_bowl(-20.0, 1200.0), trough])
    idx, before, after = _parts(x, y, velocity)
    assert len(np.unique(before[before >= 0])) == 1
    on_trough = (trough(x, y) < -2.5)[idx]          # where the trough adds at least half its peak
    parts = np.unique(after[after >= 0])
    assert len(parts) == 2
    trough_part = np.bincount(after[on_trough & (after >= 0)]).argmax()
    found = after == trough_part
    jaccard = (found & on_trough).sum() / (found | on_trough).sum()
    assert jaccard > 0.5
    # and the bowl's part keeps the bowl's centre
    assert after[np.argmin(np.hypot(x[idx], y[idx]))] != trough_part


def test_a_bowl_alone_stays_whole_for_any_size():
    for peak, width in ((-40.0, 500.0), (-20.0, 1000.0), (-8.0, 1500.0)):
        x, y, velocity = _field([_bowl(peak, width)], seed=1)
        _, before, after = _parts(x, y, velocity)
        np.testing.assert_array_equal(before, after)


def test_a_landslide_and_its_slower_rim_stay_one_part():
    """A small fast source (a landslide: the residual stands out at its centre) with nothing
    around: the rest of its part is its own rim, within 2 radii of the centre, so no split."""
    x, y, velocity = _field([_bowl(-25.0, 150.0)], seed=2)
    _, before, after = _parts(x, y, velocity)
    assert len(np.unique(before[before >= 0])) == 1
    np.testing.assert_array_equal(before, after)
