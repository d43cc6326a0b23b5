"""Steady-rate sources inside post-seismic parts and a post-seismic field's two sides (hotspots.rate):
the step search against series with a known step, and simulated fields with a known answer (an
uplift inside a post-seismic lobe, the lobe alone, a bowl, a second step source; a field across its
fault, its two sides stepping at one event or at two, a bowl beside a lobe)."""
import numpy as np
import pytest

from insarlake.hotspots.geometry import from_local_m
from insarlake.hotspots.rate import STEP_EDGE_EPOCHS, best_step, design, join_by_step, rate_cores, step_f_at

CENTRE = (11.35, 44.5)
T_YEARS = np.arange(150) * 12.0 / 365.25          # 150 epochs, 12-day revisit (~4.9 years)
EVENT = 70                                         # the post-seismic event's epoch
NOISE_MM = 1.5                                     # white noise per epoch and pixel
SIGMA_MM_YR = 0.15                                 # the velocity noise that excess_z is in units of
# rate_cores' defaults in conf/default.yaml
SETTINGS = dict(eps_m=300.0, min_samples=10, min_pixels=30, step_f=30.0, z_pixel=3.0, z_hotspot=4.0,
                grow_z=1.5, grow_radius_m=300.0, epoch_tolerance=3)
# join_by_step's (hotspots.step_join_f, step_join_epoch_f)
JOIN = dict(eps_m=300.0, step_f=30.0, epoch_f=10.0)


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


def _across_a_fault(rng, far_event=EVENT, far_side="lobe"):
    """Pixels on a 50 m grid 4 x 4 km across a fault at y = 0: the near side (y < 0) moves away
    from the radar by a post-seismic step at EVENT, the far side (y > 0) towards it by one at
    far_event, both decaying from the fault, or the far side is an uplift at a steady rate.
    Returns lon, lat, excess_z, series (n, T) mm and the side (n,) int64 (0 near, 1 far)."""
    x, y = np.meshgrid(np.arange(0, 4000, 50.0), np.arange(-1975, 2000, 50.0))
    x, y = x.ravel(), y.ravel()
    gain = 15.0 * np.exp(-np.abs(y) / 1500.0)
    near = np.outer(-gain * (y < 0), _afterslip(T_YEARS))
    if far_side == "lobe":
        far = np.outer(gain * (y > 0), _afterslip(T_YEARS, event=far_event))
    else:
        far = np.outer(6.0 * np.exp(-0.5 * ((x - 2000) ** 2 + (y - 1000) ** 2) / 1200.0 ** 2) * (y > 0), T_YEARS)
    series = near + far + rng.normal(0, NOISE_MM, near.shape)
    velocity = np.linalg.lstsq(design(T_YEARS), series.T, rcond=None)[0][1]
    lon, lat = from_local_m(x, y, *CENTRE)
    return lon, lat, velocity / SIGMA_MM_YR, series, (y > 0).astype(np.int64)


def test_step_f_at_a_given_epoch_is_best_steps_at_its_own_and_small_at_another():
    rng = np.random.default_rng(6)
    stepped = 3.0 * T_YEARS + 8.0 * (np.arange(T_YEARS.size) >= 90) + rng.normal(0, NOISE_MM, T_YEARS.size)
    f_best, k, step = best_step(stepped, T_YEARS)
    assert step_f_at(stepped, T_YEARS, k) == pytest.approx((f_best, step), rel=1e-9)
    # 40 epochs away the step is mostly taken up by the trend: far below the searched F
    assert step_f_at(stepped, T_YEARS, 50)[0] < f_best / 4
    gappy = stepped.copy()
    gappy[[3, 89, 120]] = np.nan
    assert step_f_at(gappy, T_YEARS, 90)[1] == pytest.approx(8.0, abs=1.0)
    with pytest.raises(ValueError, match="epoch 0"):
        step_f_at(stepped, T_YEARS, 0)


def test_the_two_sides_of_a_post_seismic_field_are_joined():
    lon, lat, excess_z, series, side = _across_a_fault(np.random.default_rng(7))
    part = side.copy()
    part[:5] = -1                                        # in no part: stays out
    got = join_by_step(lon, lat, excess_z, series, T_YEARS, part, **JOIN)
    assert got[:5].tolist() == [-1] * 5
    assert set(got[5:].tolist()) == {0}
    # the sides must touch: the near side's 6 rows (of 80 pixels) next to the fault taken out of
    # the parts, 350 m lie between them (eps 300 m) and they stay two
    apart = part.copy()
    apart[np.flatnonzero(side == 0)[-6 * 80:]] = -1
    assert set(join_by_step(lon, lat, excess_z, series, T_YEARS, apart, **JOIN).tolist()) == {-1, 0, 1}


@pytest.mark.parametrize("far", ["later_event", "much_later_event", "uplift"])
def test_sides_that_step_at_two_events_or_a_steady_uplift_stay_apart(far):
    far_event = {"later_event": 100, "much_later_event": 120}.get(far, EVENT)
    lon, lat, excess_z, series, side = _across_a_fault(np.random.default_rng(8), far_event,
                                                       "uplift" if far == "uplift" else "lobe")
    got = join_by_step(lon, lat, excess_z, series, T_YEARS, side, **JOIN)
    np.testing.assert_array_equal(got, side)


def test_parts_of_one_sign_are_never_joined():
    lon, lat, excess_z, series, side = _across_a_fault(np.random.default_rng(9))
    flipped = np.where(side[:, None] == 0, -series, series)   # both sides move towards the radar
    np.testing.assert_array_equal(join_by_step(lon, lat, np.abs(excess_z), flipped, T_YEARS, side, **JOIN), side)


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
    with pytest.raises(ValueError, match="part must have"):
        join_by_step(lon, lat, z, series, np.arange(40.0), part[:2], **JOIN)
    with pytest.raises(ValueError, match="t_years"):
        join_by_step(lon, lat, z, series, np.arange(39.0), part, **JOIN)
    with pytest.raises(ValueError, match="epoch_f"):
        join_by_step(lon, lat, z, series, np.arange(40.0), part, **(JOIN | {"epoch_f": 0.0}))
