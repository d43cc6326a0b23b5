"""Steady-rate sources inside post-seismic parts (hotspots.rate): the step search against series
with a known step, and simulated fields with a known answer (an uplift inside a post-seismic lobe,
the lobe alone, a bowl, a second step source)."""
import numpy as np
import pytest

from insarlake.hotspots.geometry import from_local_m
from insarlake.hotspots.rate import STEP_EDGE_EPOCHS, best_step, design, rate_cores

CENTRE = (11.35, 44.5)
T_YEARS = np.arange(150) * 12.0 / 365.25          # 150 epochs, 12-day revisit (~4.9 years)
EVENT = 70                                         # the post-seismic event's epoch
NOISE_MM = 1.5                                     # white noise per epoch and pixel
SIGMA_MM_YR = 0.15                                 # the velocity noise that excess_z is in units of
# rate_cores' defaults in conf/default.yaml
SETTINGS = dict(eps_m=300.0, min_samples=10, min_pixels=30, step_f=30.0, z_pixel=3.0, z_hotspot=4.0,
                grow_z=1.5, grow_radius_m=300.0, epoch_tolerance=3)


def _afterslip(t, event=EVENT):
    """The post-seismic time function: 0 before the event, a unit step and logarithmic afterslip."""
    lag_days = (t - t[event]) * 365.25
    return np.where(lag_days >= 0, 1.0 + 0.45 * np.log1p(np.maximum(lag_days, 0) / 40.0), 0.0)


def _field(rng, uplift=False, bowl=False, second_step=False):
    """One cluster's pixels on a 50 m grid 4 x 2 km: a post-seismic lobe moving up (its gain
    decaying from the fault at y = 0), with an uplift blob at (2000, 900) m, or a bowl instead of
    the lobe, or a second post-seismic patch with a later event. Returns lon, lat, excess_z, series
    (n, T) mm and every pixel's distance from the blob's centre in m."""
    x, y = np.meshgrid(np.arange(0, 4000, 50.0), np.arange(50, 2050, 50.0))
    x, y = x.ravel(), y.ravel()
    t = T_YEARS
    blob = np.exp(-0.5 * ((x - 2000) ** 2 + (y - 900) ** 2) / 250.0 ** 2)
    if bowl:
        series = np.outer(6.0 * np.exp(-0.5 * ((x - 2000) ** 2 + (y - 1000) ** 2) / 1200.0 ** 2), t)
    else:
        series = np.outer(15.0 * np.exp(-y / 1500.0), _afterslip(t))
    if uplift:
        series += np.outer(5.0 * blob, t)
    if second_step:
        series += np.outer(12.0 * blob, _afterslip(t, event=120))
    series = series + rng.normal(0, NOISE_MM, series.shape)
    velocity = np.linalg.lstsq(design(t), series.T, rcond=None)[0][1]
    lon, lat = from_local_m(x, y, *CENTRE)
    return lon, lat, velocity / SIGMA_MM_YR, series, np.hypot(x - 2000, y - 900)


def _check_the_uplift(found, distance_m):
    """The uplift's part holds its core (rate > 2 mm/yr: within 340 m) and little beyond its tail
    (0.1 mm/yr at 700 m, ~1 noise sigma of a pixel's rate: 1.5 mm over 150 epochs)."""
    core = distance_m < 340
    assert found[core].mean() > 0.95
    assert (distance_m[found] < 700).mean() > 0.9


def test_best_step_finds_a_known_step_and_none_in_a_trend():
    rng = np.random.default_rng(1)
    t = T_YEARS
    trend = 3.0 * t + 2.0 * np.sin(2 * np.pi * t + 0.7)
    stepped = trend + 8.0 * (np.arange(t.size) >= 90) + rng.normal(0, NOISE_MM, t.size)
    f_stat, k, step = best_step(stepped, t)
    assert k == 90
    # the step's standard error: NOISE_MM * sqrt(1/60 + 1/90) (the epochs after and before), ~0.25
    assert step == pytest.approx(8.0, abs=4 * NOISE_MM * np.sqrt(1 / 60 + 1 / 90) * 1.5)
    assert f_stat > 100
    # no step: F is the largest of ~140 F(1, 145) draws; P(F(1, 145) > 30) ~ 2e-7 for each
    f_none, _, _ = best_step(trend + rng.normal(0, NOISE_MM, t.size), t)
    assert f_none < 30
    # missing epochs are left out and the epoch index stays the series' own
    gappy = stepped.copy()
    gappy[[3, 50, 91]] = np.nan
    assert best_step(gappy, t)[1] == 90
    # too short to hold a step
    assert best_step(stepped[:2 * STEP_EDGE_EPOCHS + 5], t[:2 * STEP_EDGE_EPOCHS + 5]) == (0.0, -1, 0.0)


def test_an_uplift_inside_a_post_seismic_lobe_is_split_off():
    rng = np.random.default_rng(2)
    lon, lat, excess_z, series, distance_m = _field(rng, uplift=True)
    moving = np.abs(excess_z) > 3
    part = rate_cores(lon[moving], lat[moving], excess_z[moving], series[moving], T_YEARS,
                      np.zeros(moving.sum(), np.int64), **SETTINGS)
    assert set(np.unique(part)) == {0, 1}
    _check_the_uplift(part == 1, distance_m[moving])


@pytest.mark.parametrize("kind", ["lobe", "bowl", "second_step"])
def test_a_part_with_one_time_function_or_a_step_of_its_own_stays_whole(kind):
    rng = np.random.default_rng(3)
    lon, lat, excess_z, series, _ = _field(rng, bowl=kind == "bowl", second_step=kind == "second_step")
    moving = np.abs(excess_z) > 3
    part = rate_cores(lon[moving], lat[moving], excess_z[moving], series[moving], T_YEARS,
                      np.zeros(moving.sum(), np.int64), **SETTINGS)
    np.testing.assert_array_equal(part, 0)
    if kind == "second_step":
        # its later step is what keeps it: with no tolerance on the epoch it is split off
        loose = rate_cores(lon[moving], lat[moving], excess_z[moving], series[moving], T_YEARS,
                           np.zeros(moving.sum(), np.int64), **(SETTINGS | {"epoch_tolerance": T_YEARS.size}))
        assert loose.max() == 1


def test_missing_epochs_and_pixels_outside_any_part():
    rng = np.random.default_rng(2)
    lon, lat, excess_z, series, distance_m = _field(rng, uplift=True)
    moving = np.abs(excess_z) > 3
    lon, lat, excess_z, series, distance_m = (lon[moving], lat[moving], excess_z[moving], series[moving],
                                              distance_m[moving])
    series[rng.random(series.shape) < 0.05] = np.nan
    series[0] = np.nan                                   # a pixel with no epoch at all
    part = np.zeros(len(lon), np.int64)
    part[1] = -1                                         # in no part: stays out
    got = rate_cores(lon, lat, excess_z, series, T_YEARS, part, **SETTINGS)
    assert got[1] == -1 and set(np.unique(got)) == {-1, 0, 1}
    _check_the_uplift(got == 1, distance_m)


def test_bad_input_is_refused():
    lon, lat = from_local_m(np.zeros(3), np.zeros(3), *CENTRE)
    z, part, series = np.ones(3), np.zeros(3, np.int64), np.zeros((3, 40))
    with pytest.raises(ValueError, match="same shape"):
        rate_cores(lon, lat[:2], z, series, np.arange(40.0), part, **SETTINGS)
    with pytest.raises(ValueError, match="t_years"):
        rate_cores(lon, lat, z, series, np.arange(39.0), part, **SETTINGS)
    with pytest.raises(ValueError, match="eps_m"):
        rate_cores(lon, lat, z, series, np.arange(40.0), part, **(SETTINGS | {"eps_m": 0.0}))
    with pytest.raises(ValueError, match="same shape"):
        best_step(np.zeros(5), np.zeros(6))
