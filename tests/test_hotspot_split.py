"""Splitting a candidate at its velocity peaks (hotspots.split): simulated bowls with a known answer."""
import numpy as np
import pytest

from insarlake.hotspots.geometry import from_local_m
from insarlake.hotspots.split import split_candidate

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


def test_bad_input_is_refused():
    lon, lat, z, _ = _bowls([(0, 0)])
    with pytest.raises(ValueError, match="same shape"):
        split_candidate(lon[:-1], lat, z, 1.5, 2.5, 150.0, 10, 30)
    with pytest.raises(ValueError, match="level_ratio"):
        split_candidate(lon, lat, z, 1.5, 1.0, 150.0, 10, 30)
    with pytest.raises(ValueError, match="finite"):
        split_candidate(np.r_[lon[:-1], np.nan], lat, z, 1.5, 2.5, 150.0, 10, 30)
    assert split_candidate([], [], [], 1.5, 2.5, 150.0, 10, 30).shape == (0,)
