"""A hotspot's slow rim (hotspots.rims): simulated velocity bumps on a grid with a hand-computed
answer (which pixels pass the low level, on which side), chains reaching two hotspots, the other
sign, candidates not retained, and bad input."""
import numpy as np
import pytest

from insarlake.hotspots.geometry import from_local_m
from insarlake.hotspots.rims import grow_rims, rim_candidates

CENTRE = (11.35, 44.5)
SPACING_M = 50.0
# hotspots.rim_grow_z, rim_grow_radius_m and z_pixel in conf/default.yaml
GROW_Z, RADIUS_M, Z_PIXEL = 2.0, 250.0, 3.0


def _scene(bumps):
    """A 6 x 2 km grid of pixels every 50 m; excess_z the sum of Gaussian bumps (x_m, amplitude in
    sigma, width_m) centred at y = 1 km. Returns lon, lat, excess_z, x_m."""
    x, y = np.meshgrid(np.arange(0, 6000, SPACING_M), np.arange(0, 2000, SPACING_M))
    x, y = x.ravel(), y.ravel()
    z = sum(a * np.exp(-0.5 * ((x - x0) ** 2 + (y - 1000.0) ** 2) / w ** 2) for x0, a, w in bumps)
    lon, lat = from_local_m(x, y, *CENTRE)
    return lon, lat, z, x


def _hotspots(z, x, sides):
    """Candidates as the stage makes them: the pixels above z_pixel, one candidate per x range
    (lo, hi) in ``sides``; returns hotspot_id (n,) (the candidate's index, -1: none) and member."""
    hotspot = np.full(z.shape, -1, np.int64)
    for h, (lo, hi) in enumerate(sides):
        hotspot[(np.abs(z) > Z_PIXEL) & (x >= lo) & (x < hi)] = h
    return hotspot, hotspot >= 0


def test_each_hotspot_takes_the_pixels_above_the_low_level_around_it():
    # two bumps 3 km apart: each one's 2-sigma disc (radius 300 x sqrt(2 ln 4) = 500 m) is one
    # chain with its 3-sigma core and touches nothing else
    lon, lat, z, x = _scene([(1500.0, 8.0, 300.0), (4500.0, 8.0, 300.0)])
    hotspot, member = _hotspots(z, x, [(0, 3000), (3000, 6000)])
    got = grow_rims(lon, lat, z, hotspot, member, GROW_Z, RADIUS_M)
    expected = np.where(z > GROW_Z, np.where(x < 3000, 0, 1), -1)
    np.testing.assert_array_equal(got, expected)
    assert (got[member] == hotspot[member]).all()
    # the rim is the ring between the two levels: 2 < z <= 3
    grown = (got >= 0) & ~member
    assert grown.sum() > 0 and (z[grown] > GROW_Z).all() and (z[grown] <= Z_PIXEL).all()


def test_a_chain_reaching_two_hotspots_is_given_to_neither():
    # two bumps 900 m apart: their 2-sigma discs overlap, so every rim pixel is one chain with both
    # cores; a third bump far off keeps its rim
    lon, lat, z, x = _scene([(1500.0, 8.0, 300.0), (2400.0, 8.0, 300.0), (5000.0, 8.0, 300.0)])
    hotspot, member = _hotspots(z, x, [(0, 1950), (1950, 3500), (3500, 6000)])
    got = grow_rims(lon, lat, z, hotspot, member, GROW_Z, RADIUS_M)
    near = x < 3500
    np.testing.assert_array_equal(got[near], hotspot[near])
    np.testing.assert_array_equal(got[~near], np.where(z[~near] > GROW_Z, 2, -1))


def test_the_other_sign_candidates_not_retained_and_isolated_pixels_stay_out():
    # a rising bump (the hotspot), a sinking one beside it (no hotspot of its sign), a second rising
    # bump that is a candidate not retained, and a weak rising bump (peak 2.5 sigma) 1.5 km off
    lon, lat, z, x = _scene([(1500.0, 8.0, 300.0), (2100.0, -8.0, 200.0), (3300.0, 8.0, 300.0),
                             (5000.0, 2.5, 300.0)])
    hotspot, member = _hotspots(z, x, [(0, 1850), (2700, 4000)])
    member = member | ((z < -Z_PIXEL) & (x > 1850) & (x < 2700))    # the sinking candidate
    retained = np.where(hotspot == 0, 0, -1)                          # the second rising one dropped
    got = grow_rims(lon, lat, z, retained, member, GROW_Z, RADIUS_M)
    assert (got[z < 0] == -1).all()
    assert (got[(x > 2600) & (x < 4000)] == -1).all()
    assert (got[x > 4000] == -1).all() and (z[x > 4000] > GROW_Z).sum() > 0
    grown = (got == 0) & ~member
    assert grown.sum() > 0 and (x[grown] < 2400).all()


def test_a_pixel_without_velocity_is_never_grown():
    lon, lat, z, x = _scene([(1500.0, 8.0, 300.0)])
    hotspot, member = _hotspots(z, x, [(0, 6000)])
    rim = np.flatnonzero((z > GROW_Z) & ~member)
    z = z.copy()
    z[rim[:5]] = np.nan
    assert not rim_candidates(z, member, GROW_Z)[rim[:5]].any()
    got = grow_rims(lon, lat, z, hotspot, member, GROW_Z, RADIUS_M)
    assert (got[rim[:5]] == -1).all() and (got[rim[5:]] == 0).all()


def test_bad_input_is_refused():
    lon, lat, z, x = _scene([(1500.0, 8.0, 300.0)])
    hotspot, member = _hotspots(z, x, [(0, 6000)])
    with pytest.raises(ValueError, match="same shape"):
        grow_rims(lon, lat[:-1], z, hotspot, member, GROW_Z, RADIUS_M)
    with pytest.raises(ValueError, match="member of a candidate"):
        grow_rims(lon, lat, z, hotspot, np.zeros_like(member), GROW_Z, RADIUS_M)
    with pytest.raises(ValueError, match="must be > 0"):
        grow_rims(lon, lat, z, hotspot, member, 0.0, RADIUS_M)
    with pytest.raises(ValueError, match="finite"):
        grow_rims(np.where(x == 0, np.nan, lon), lat, z, hotspot, member, GROW_Z, RADIUS_M)
