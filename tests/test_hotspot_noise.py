"""The stable ground's level and noise (hotspots.noise): mixtures with a known answer."""
import math

import numpy as np
import pytest
from scipy.stats import norm, truncnorm

from insarlake.hotspots.noise import MAD_TO_SIGMA, clipped_mad_to_sigma, speed_z, stable_level


def _scene(n_stable=40_000, n_moving=10_000, v0=0.7, sigma=0.8, seed=0):
    """Stable velocities N(v0, sigma) and a moving share spread over -40..-3 and 3..15 mm/yr."""
    rng = np.random.default_rng(seed)
    moving = np.concatenate([rng.uniform(-40, -3, n_moving * 3 // 4), rng.uniform(3, 15, n_moving // 4)])
    return np.concatenate([rng.normal(v0, sigma, n_stable), v0 + moving])


def test_the_clipped_level_finds_the_stable_ground_where_the_mad_of_all_does_not():
    v = _scene()
    v0, sigma = stable_level(v)
    # a median of n normal values has standard error ~1.25 sigma / sqrt(n); the MAD ~1.65 sigma /
    # sqrt(n) (both relative to sigma); 5 of these, and the moving share left inside the clip
    # (uniform densities of < 0.0003 per mm/yr per stable pixel, ~+0.5 %) fit well within 3 %
    n = 40_000
    assert abs(v0 - 0.7) < 5 * 1.25 * 0.8 / math.sqrt(n)
    assert abs(sigma / 0.8 - 1) < 0.03
    naive = MAD_TO_SIGMA * np.median(np.abs(v - np.median(v)))
    assert naive > 1.2 * 0.8                        # what the MAD of all velocities makes of it


def test_a_histogram_gives_the_level_of_its_values_within_a_bin():
    v = _scene(seed=1)
    width = 0.01
    bins = np.floor(v / width)
    centres, counts = np.unique(bins, return_counts=True)
    binned = stable_level((centres + 0.5) * width, counts)
    exact = stable_level(v)
    assert abs(binned[0] - exact[0]) <= width
    assert abs(binned[1] - exact[1]) <= clipped_mad_to_sigma(2.5) * width


def test_the_clipped_mad_factor_is_the_truncated_normal_s():
    for clip_z in (1.5, 2.5, 4.0):
        mad = truncnorm(-clip_z, clip_z).ppf(0.75)      # the MAD of a normal clipped at +-clip_z
        assert clipped_mad_to_sigma(clip_z) == pytest.approx(1.0 / mad, rel=1e-9)
    assert clipped_mad_to_sigma(40.0) == pytest.approx(1.0 / norm.ppf(0.75), rel=1e-12)


def test_speed_z_counts_both_lobes_of_a_sign_changing_field():
    v = np.array([-6.0, -4.0, 4.0, 8.0])          # v0 = 1: deviations -7, -5, 3, 7
    assert speed_z(v, 1.0, 2.0) == pytest.approx(-(22 / 4) / 2.0)
    assert speed_z(np.array([3.0, 5.0]), 1.0, 2.0) == pytest.approx(1.5)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="finite"):
        stable_level(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="no velocity"):
        stable_level(np.array([]))
    with pytest.raises(ValueError, match="clip_z"):
        stable_level(np.array([1.0, 2.0]), clip_z=1.0)
    with pytest.raises(ValueError, match="spread is 0"):
        stable_level(np.full(10, 2.0))
    with pytest.raises(ValueError, match="one length"):
        stable_level(np.array([1.0, 2.0]), weights=np.array([1.0]))
