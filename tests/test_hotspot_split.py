"""Splitting a candidate at its velocity peaks (hotspots.split): simulated bowls with a known answer."""
import numpy as np
import pytest

from insarlake.hotspots.geometry import from_local_m
from insarlake.hotspots.split import candidate_parts, split_candidate

CENTRE = (11.35, 44.5)


def _bowls(centres_m, peak_z=20.0, width_m=700.0, z_start=1.5, seed=0):
    """Pixels on a jittered 60 m grid whose excess (noise sigmas) is a sum of Gaussian bowls plus
    noise, kept where it exceeds z_start (the candidate); also the index of the nearest bowl."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(-5000, 5000, 60.0), np.arange(-3000, 3000, 60.0))
    x = gx.ravel() + rng.uniform(-20, 20, gx.size)
    y = gy.ravel() + rng.uniform(-20, 20, gy.size)
    d2 = np.stack([(x - cx) ** 2 + (y - cy) ** 2 for cx, cy in centres_m])
    z = (peak_z * np.exp(-d2 / (2 * width_m ** 2))).sum(axis=0) + rng.normal(0, 0.3, x.size)
    keep = z > z_start
    lon, lat = from_local_m(x[keep], y[keep], *CENTRE)
    return lon, lat, z[keep], d2[:, keep].argmin(axis=0)


def _split(lon, lat, z, ratio=2.5):
    return split_candidate(lon, lat, z, z_start=1.5, level_ratio=ratio, eps_m=150.0, min_samples=10, min_pixels=30)


def _agreement(part, truth):
    """Share of pixels whose part is the majority part of their true bowl (parts as sets)."""
    hits = sum(np.bincount(part[truth == t]).max() for t in np.unique(truth))
    return hits / len(part)


def test_two_bowls_joined_by_their_rims_are_split_between_their_peaks():
    lon, lat, z, truth = _bowls([(-1500, 0), (1500, 0)])
    part = _split(lon, lat, z)
    assert sorted(np.unique(part)) == [0, 1]
    assert _agreement(part, truth) > 0.97
    majority = [np.bincount(truth[part == q]).argmax() for q in (0, 1)]
    assert sorted(majority) == [0, 1]               # one part per bowl


def test_three_bowls_give_three_parts_and_every_pixel_has_one():
    lon, lat, z, truth = _bowls([(-3000, 0), (0, 1000), (3000, -500)])
    part = _split(lon, lat, z)
    assert part.shape == lon.shape and part.min() == 0
    assert sorted(np.unique(part)) == [0, 1, 2]
    assert _agreement(part, truth) > 0.95


def test_one_bowl_with_noise_stays_whole():
    lon, lat, z, _ = _bowls([(0, 0)], peak_z=30.0)
    for ratio in (1.5, 2.5, 4.0):
        assert (_split(lon, lat, z, ratio) == 0).all()


def test_a_secondary_peak_smaller_than_min_pixels_does_not_split():
    lon, lat, z, _ = _bowls([(-1500, 0), (1500, 0)], seed=1)
    # flatten the second bowl's top: it never holds 30 pixels above the next level on its own
    lon2, lat2, z2, truth2 = _bowls([(-1500, 0)], seed=1)
    assert (_split(lon2, lat2, z2) == 0).all()
    assert len(np.unique(_split(lon, lat, z))) == 2


def test_a_broad_field_keeps_its_rim_around_a_small_core_inside_it():
    """A tunnel's trough (a narrow strip, its own peak) on the flank of a broad bowl: the strip is a
    part of its own, and the bowl's rim beyond it stays with the bowl (by plain nearest core the
    strip took nearly all of it)."""
    rng = np.random.default_rng(0)
    gx, gy = np.meshgrid(np.arange(-5000, 5000, 60.0), np.arange(-3000, 3000, 60.0))
    x = gx.ravel() + rng.uniform(-20, 20, gx.size)
    y = gy.ravel() + rng.uniform(-20, 20, gy.size)
    bowl = 40.0 * np.exp(-(x ** 2 + y ** 2) / (2 * 1500.0 ** 2))
    strip = 30.0 * np.exp(-((y - 2000.0) ** 2 + np.maximum(np.abs(x) - 800.0, 0.0) ** 2) / (2 * 100.0 ** 2))
    z = bowl + strip + rng.normal(0, 0.3, x.size)
    keep = z > 1.5
    lon, lat = from_local_m(x[keep], y[keep], *CENTRE)
    part = _split(lon, lat, z[keep])
    on_strip, y = (strip > bowl)[keep], y[keep]
    assert sorted(np.unique(part)) == [0, 1]
    assert len(np.unique(part[on_strip])) == 1
    in_strip_part = part == part[on_strip][0]
    assert not in_strip_part[y < 1500].any()           # the bowl's side of the strip
    beyond = y > 2300                                   # the bowl's rim beyond the strip
    assert in_strip_part[beyond].mean() < 0.5


def test_bad_input_is_refused():
    lon, lat, z, _ = _bowls([(0, 0)])
    with pytest.raises(ValueError, match="same shape"):
        split_candidate(lon[:-1], lat, z, 1.5, 2.5, 150.0, 10, 30)
    with pytest.raises(ValueError, match="level_ratio"):
        split_candidate(lon, lat, z, 1.5, 1.0, 150.0, 10, 30)
    with pytest.raises(ValueError, match="finite"):
        split_candidate(np.r_[lon[:-1], np.nan], lat, z, 1.5, 2.5, 150.0, 10, 30)
    assert split_candidate([], [], [], 1.5, 2.5, 150.0, 10, 30).shape == (0,)


def _fault(offset_m=0.0, seed=0):
    """A post-seismic field across a fault along x = 0: excess z = +-peak * exp(-|x| / decay), the
    fastest at the trace, towards the radar on one side and away on the other; with an uplift
    bowl (positive) ``offset_m`` beyond it when given. Kept where |z| > 1.5."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(-6000, 8000, 60.0), np.arange(-3000, 3000, 60.0))
    x = gx.ravel() + rng.uniform(-20, 20, gx.size)
    y = gy.ravel() + rng.uniform(-20, 20, gy.size)
    along = np.exp(-(y / 2500.0) ** 4)
    z = np.sign(x) * 15.0 * np.exp(-np.abs(x) / 900.0) * along
    if offset_m:
        z = z + 12.0 * np.exp(-((x - offset_m) ** 2 + y ** 2) / (2 * 700.0 ** 2))
    z = z + rng.normal(0, 0.3, x.size)
    keep = np.abs(z) > 1.5
    lon, lat = from_local_m(x[keep], y[keep], *CENTRE)
    return lon, lat, z[keep], x[keep]


def _parts(lon, lat, z, contact_ratio=1.3):
    return candidate_parts(lon, lat, z, z_start=1.5, level_ratio=2.5, eps_m=150.0, min_samples=10,
                           min_pixels=30, contact_ratio=contact_ratio)


def test_a_field_whose_sign_changes_at_its_fault_is_one_part():
    lon, lat, z, _ = _fault()
    part = _parts(lon, lat, z)
    assert (z[part == 0] > 0).any() and (z[part == 0] < 0).any()
    assert set(np.unique(part)) <= {-1, 0}
    assert (part[np.abs(z) > 3.0] == 0).all()       # only stray pixels at the fringe are in no lobe (-1)
    never = _parts(lon, lat, z, contact_ratio=1e6)   # the merge is what joins them
    assert sorted(np.unique(never[never >= 0])) == [0, 1]


def test_an_uplift_beside_the_fault_stays_apart_from_the_field():
    lon, lat, z, x = _fault(offset_m=4500.0)
    part = _parts(lon, lat, z)
    uplift, field = part[x > 3200], part[np.abs(x) < 1500]
    assert np.bincount(field[field >= 0]).argmax() != np.bincount(uplift[uplift >= 0]).argmax()
    # the field's two lobes are still one part
    west, east = part[(x < 0) & (x > -800)], part[(x > 0) & (x < 800)]
    assert np.bincount(west[west >= 0]).argmax() == np.bincount(east[east >= 0]).argmax()


def test_a_bowl_beside_an_uplift_is_two_parts():
    # opposite signs that touch at their slow rims: no merge
    lon, lat, z, truth = _bowls([(-1000, 0), (1000, 0)], peak_z=12.0, width_m=500.0)
    z = np.where(truth == 0, -z, z)
    part = _parts(lon, lat, z)
    assert sorted(np.unique(part[part >= 0])) == [0, 1]
    assert _agreement(part[part >= 0], truth[part >= 0]) > 0.99


def test_candidate_parts_rejects_bad_input():
    lon, lat, z, _ = _fault()
    with pytest.raises(ValueError, match="same shape"):
        _parts(lon, lat[:-1], z)
    with pytest.raises(ValueError, match="finite"):
        _parts(lon, lat, np.where(np.arange(z.size) == 3, np.nan, z))
    with pytest.raises(ValueError, match="contact_ratio"):
        _parts(lon, lat, z, contact_ratio=0.0)
