"""The stable ground's level and noise (hotspots.noise): mixtures with a known answer."""
import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm, truncnorm

from insarlake.hotspots.noise import CORE_CLIP_Z, MAD_TO_SIGMA, clipped_mad_to_sigma, speed_z, stable_level


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


def _plateau(share=0.25, sigma=0.6, half_mm_yr=6.0, n=40_000, seed=0):
    """A stable peak N(0, sigma) holding ``share`` of n velocities, the rest a plateau uniform over
    +-half_mm_yr (broad fields' slow shoulders all around zero), and P(|v| <= m) of that mixture."""
    rng = np.random.default_rng(seed)
    v = np.concatenate([rng.normal(0.0, sigma, int(share * n)), rng.uniform(-half_mm_yr, half_mm_yr, n - int(share * n))])

    def within(m):
        return share * (2.0 * norm.cdf(m / sigma) - 1.0) + (1.0 - share) * min(m, half_mm_yr) / half_mm_yr
    return v, within


def _population_sigma(within, clip_z: float, sigma: float) -> float:
    """The clipped iteration's fixed point on the mixture itself (no sample): sigma <- the clipped
    MAD factor x the median |v| of the values within clip_z sigma, from ``sigma``."""
    for _ in range(1000):
        inside = within(clip_z * sigma)
        mad = brentq(lambda m: within(m) - 0.5 * inside, 0.0, clip_z * sigma, xtol=1e-14)
        sigma, before = clipped_mad_to_sigma(clip_z) * mad, sigma
        if abs(sigma - before) < 1e-12:
            break
    return sigma


def test_the_runaway_guard_keeps_the_peak_where_a_plateau_of_moving_pixels_widens_the_clip():
    v, within = _plateau()
    runaway = _population_sigma(within, 2.5, 0.4)           # 3.01: the whole plateau kept
    core = _population_sigma(within, CORE_CLIP_Z, runaway)   # 0.78: the peak and the plateau under it
    assert runaway > 4 * 0.6 and 0.6 < core < 1.5 * 0.6
    # the MAD's relative standard error ~1.65 / sqrt(kept): 0.8 % on all 40,000 values; on the
    # core's ~15,300 divided by (1 - 0.61), the fixed point's slope there: 3.4 %; 4 of each
    _, wide = stable_level(v, start_sigma_mm_yr=0.4)
    assert wide == pytest.approx(runaway, rel=4 * 0.008)
    v0, sigma = stable_level(v, start_sigma_mm_yr=0.4, runaway_ratio=2.5)
    assert sigma == pytest.approx(core, rel=4 * 0.034)
    assert abs(v0) < 5 * 1.25 * core / math.sqrt(15_300)


def test_the_runaway_guard_leaves_a_normal_peak_and_egms_rounded_velocities_alone():
    # EGMS rounds velocities to 0.1 mm/yr: a clip of 1.5 started from a small sigma stops at 0.17,
    # 0.35, 0.52 or 0.70 on its burst (sigma 0.60); started from the wide clip's result it shrinks
    # to the peak's width and the guard does not fire
    rng = np.random.default_rng(3)
    v = np.round(np.concatenate([rng.normal(-1.7, 0.6, 11_000), rng.uniform(-25.0, -4.0, 600)]), 1)
    assert stable_level(v, start_sigma_mm_yr=0.2, runaway_ratio=2.5) == stable_level(v, start_sigma_mm_yr=0.2)
    v = _scene(seed=2)
    assert stable_level(v, runaway_ratio=1.1) == stable_level(v)     # the two differ by ~1 %: sampling


def test_the_runaway_guard_keeps_the_wide_level_where_the_core_has_no_spread():
    # a peak of identical values beside a plateau: from the MAD of all (~2.5) the 2.5 clip keeps
    # plateau around the peak (sigma ~2.6 > 0); the core shrinks onto the peak, MAD 0: no core to
    # measure, the wide level stands
    rng = np.random.default_rng(4)
    v = np.concatenate([np.zeros(12_000), rng.uniform(-6.0, 6.0, 28_000)])
    wide = stable_level(v)
    assert wide[1] > 2.0
    assert stable_level(v, runaway_ratio=2.5) == wide


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
    with pytest.raises(ValueError, match="runaway_ratio"):
        stable_level(np.array([1.0, 2.0]), runaway_ratio=1.0)
    with pytest.raises(ValueError, match="one length"):
        stable_level(np.array([1.0, 2.0]), weights=np.array([1.0]))
