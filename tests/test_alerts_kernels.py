"""The pure kernels of the alerts stage: tracks across runs (tracks.py) and the change tests
(change.py), against hand-made cases, numpy's own least squares and simulated noise."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from insarlake.alerts import change, tracks


def _previous(*rows):
    return pd.DataFrame(rows, columns=["track_id", "first_seen_run"])


def _box(x0, y0, x1, y1) -> str:
    return f"POLYGON (({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"


# ---- tracks ----

def test_tracks_by_hand_continue_split_merge_new_vanish():
    """Previous tracks a..e; now 10 is a again, 11 and 12 are b split, 13 is c and d merged (more
    of c), 14 is new, e is gone."""
    previous = _previous(("a", "r0"), ("b", "r0"), ("c", "r0"), ("d", "r1"), ("e", "r1"))
    linked = pd.DataFrame({"prev_track_id": ["a", "b", "c", "b", "d"], "hotspot_id": [10, 11, 13, 12, 13],
                           "overlap": [0.9, 0.7, 0.8, 0.4, 0.6]}).sort_values("overlap", ascending=False)
    got = tracks.assign_tracks(previous, [10, 11, 12, 13, 14], linked, lambda h: f"new-{h}")
    now = got.current.set_index("hotspot_id")
    assert now.loc[10, ["track_id", "status"]].tolist() == ["a", "continuing"]
    assert now.loc[11, ["track_id", "status"]].tolist() == ["b", "split"]          # the larger part keeps b
    assert now.loc[12, ["track_id", "status"]].tolist() == ["new-12", "split"]
    assert now.loc[13, ["track_id", "status"]].tolist() == ["c", "merged"] and now.loc[13, "linked_tracks"] == ["c", "d"]
    assert now.loc[14, ["track_id", "status"]].tolist() == ["new-14", "new"] and now.loc[14, "linked_tracks"] == []
    assert now.loc[10, "first_seen_run"] == "r0" and now.loc[14, "first_seen_run"] is None
    ended = got.ended.set_index("track_id")
    assert sorted(ended.index) == ["d", "e"]
    assert ended.loc["d", ["status", "hotspot_id", "first_seen_run"]].tolist() == ["absorbed", 13, "r1"]
    assert ended.loc["d", "linked_tracks"] == ["c"]
    assert ended.loc["e", "status"] == "vanished" and pd.isna(ended.loc["e", "hotspot_id"])


def test_first_run_starts_every_track():
    got = tracks.assign_tracks(None, [3, 7], pd.DataFrame({"prev_track_id": [], "hotspot_id": [], "overlap": []}),
                               lambda h: f"t{h}")
    assert got.current["track_id"].tolist() == ["t3", "t7"] and set(got.current["status"]) == {"new"}
    assert got.ended.empty


def test_links_by_pixels_and_by_ellipse_where_the_ids_are_gone():
    """Track a's pixels are still there: linked by shared pixels (30 of min(40, 50)); track b's ids
    are gone (a new release): linked by its ellipse, overlapping half of the smaller square; track
    m was missed (no pixels): linked by its ellipse."""
    previous = pd.DataFrame({"track_id": ["a", "b", "m"], "n_pixels": [40, 100, 0], "present_pixels": [40, 10, 0],
                             "geometry": [_box(0, 0, 1, 1), _box(10, 10, 12, 12), _box(20, 20, 21, 21)]})
    current = pd.DataFrame({"hotspot_id": [7, 8, 9, 4], "n_pixels": [50, 60, 5, 70],
                            "geometry": [_box(0, 0, 1, 1), _box(11, 10, 13, 12), _box(0.5, 0, 1.5, 1),
                                         _box(20.8, 20, 21.8, 21)]})
    shared = pd.DataFrame({"prev_track_id": ["a", "a"], "hotspot_id": [7, 9], "shared_pixels": [30, 1]})
    got = tracks.links(previous, current, shared, min_overlap=0.3, min_present_share=0.5)
    assert got[["prev_track_id", "hotspot_id", "by"]].values.tolist() == [
        ["a", 7, "pixels"], ["b", 8, "ellipse"]]          # m overlaps 4 by 0.2 only
    np.testing.assert_allclose(got["overlap"], [30 / 40, 0.5], rtol=1e-12)
    closer = tracks.links(previous, current.assign(geometry=[*current["geometry"][:3], _box(20.5, 20, 21.5, 21)]),
                          shared, min_overlap=0.3, min_present_share=0.5)
    assert closer[closer["prev_track_id"] == "m"][["hotspot_id", "by"]].values.tolist() == [[4, "ellipse"]]


# ---- change tests ----

def test_departure_equals_numpys_prediction_interval():
    """Line only (baseline under seasonal_min_years): z = residual / (sigma sqrt(1 + x0' (X'X)^-1 x0)),
    sigma^2 = RSS / (n - 2), from numpy.polyfit's unscaled covariance."""
    rng = np.random.default_rng(3)
    t = np.arange(60) * 12 / 365.25
    d = 1.0 - 8.0 * t + rng.normal(0, 1.5, t.size)
    d[40:] += -5.0 * (t[40:] - t[39])
    dep = change.departure(t, d, baseline_end_yr=t[39], baseline_years=5.0)
    slope_intercept, cov = np.polyfit(t[:40], d[:40], 1, cov="unscaled")
    resid = d[:40] - np.polyval(slope_intercept, t[:40])
    sigma = np.sqrt(resid @ resid / 38)
    x0 = np.stack([t[40:], np.ones(20)], axis=1)
    sd = sigma * np.sqrt(1 + np.einsum("ij,jk,ik->i", x0, cov, x0))
    tol = 1e-9 * np.abs(d).max()        # two least-squares solutions of 40 float64 terms
    np.testing.assert_allclose(dep.z, (d[40:] - np.polyval(slope_intercept, t[40:])) / sd, rtol=1e-8, atol=tol)
    assert dep.sigma_mm == pytest.approx(sigma, rel=1e-9)
    assert dep.baseline_rate_mm_yr == pytest.approx(slope_intercept[0], rel=1e-9)
    assert (dep.n_baseline, dep.n_new, dep.seasonal) == (40, 20, False)


def test_departure_needs_a_baseline_and_new_epochs():
    t = np.arange(30) / 30.0
    assert change.departure(t, t.copy(), baseline_end_yr=t[-1], baseline_years=3.0) is None      # nothing new
    assert change.departure(t, t.copy(), baseline_end_yr=t[5], baseline_years=3.0) is None       # 6 < 10 epochs
    d = t.copy()
    d[:25] = np.nan
    assert change.departure(t, d, baseline_end_yr=t[27], baseline_years=3.0) is None             # NaN not counted


def test_persisting_counts_the_latest_epochs_in_the_direction_of_motion():
    dep = change.Departure(np.array([-4.0, 1.0, -3.5, -3.2, -5.0]), np.zeros(5), -10.0, 1.0, -20.0, 30, 5, True)
    assert change.persisting(dep, 3.0) == 3
    assert change.accelerating(dep, 3.0, 3) and not change.accelerating(dep, 3.0, 4)
    slower = change.Departure(np.array([4.0, 4.0, 4.0]), np.zeros(3), -10.0, 1.0, -1.0, 30, 3, True)
    assert change.persisting(slower, 3.0) == 0          # decelerating subsidence is not accelerating
    still = change.Departure(np.array([4.0, -4.0, 4.0]), np.zeros(3), 0.0, 1.0, 0.0, 30, 3, True)
    assert change.persisting(still, 3.0) == 3           # a still track: either direction
    assert not change.accelerating(None, 3.0, 3)


def _series(rng, t, rate_change_mm_yr=0.0, change_yr=3.0):
    """Subsidence at -10 mm/yr with a 3 mm annual term and 2 mm white noise, its rate raised by
    ``rate_change_mm_yr`` after ``change_yr``."""
    return (-10.0 * t - rate_change_mm_yr * np.maximum(t - change_yr, 0) + 3.0 * np.sin(2 * np.pi * t + 1.0)
            + rng.normal(0.0, 2.0, t.size))


def test_no_change_raises_no_alarm_and_a_rate_rise_does():
    """2,000 unchanged series (3 years of baseline, 1 of new epochs every 12 days): the expected
    number of alarms is 2,000 x P(Z >= 3)^3 = 5e-6 for independent departures; none may be
    raised. The same series with the rate raised by 20 mm/yr from the end of the baseline all
    alarm: the latest 3 epochs' expected departure is ~8.7 prediction sigmas, 5.7 above the
    threshold (a miss: ~3 x P(Z < -5.7) = 2e-8 per series)."""
    rng = np.random.default_rng(17)
    t = np.arange(0, 4.0, 12 / 365.25)
    assert 2000 * norm.sf(3.0) ** 3 < 1e-5
    quiet = [change.accelerating(change.departure(t, _series(rng, t), 3.0, 3.0), 3.0, 3) for _ in range(2000)]
    assert sum(quiet) == 0
    faster = [change.accelerating(change.departure(t, _series(rng, t, 20.0), 3.0, 3.0), 3.0, 3) for _ in range(200)]
    assert all(faster)


def test_acceleration_of_an_exact_quadratic():
    t = np.linspace(0, 3, 80)
    d = 2.0 - 5.0 * t + 0.5 * 4.0 * t ** 2 + 1.5 * np.sin(2 * np.pi * t)
    assert change.acceleration_mm_yr2(t, d) == pytest.approx(4.0, rel=1e-9)
    assert np.isnan(change.acceleration_mm_yr2(t[:5], d[:5]))


def test_still_moving_rule():
    assert change.still_moving(40, -9.0, -1.0, 2.0, z_hotspot=2.0, min_pixels=30)        # 8 >= 2 x 2
    assert not change.still_moving(40, -4.0, -1.0, 2.0, z_hotspot=2.0, min_pixels=30)    # 3 < 4
    assert not change.still_moving(20, -9.0, -1.0, 2.0, z_hotspot=2.0, min_pixels=30)    # too few pixels
    assert not change.still_moving(0, float("nan"), -1.0, 2.0, z_hotspot=2.0, min_pixels=30)


def test_growing_rule():
    assert change.growing(100, 160, 1.0, 1.6, ratio=1.5, min_pixels=30)
    assert not change.growing(100, 140, 1.0, 1.6, ratio=1.5, min_pixels=30)      # too few pixels at the level
    assert not change.growing(100, 160, 1.0, 1.2, ratio=1.5, min_pixels=30)      # the ellipse did not grow
    assert not change.growing(40, 61, 1.0, 2.0, ratio=1.5, min_pixels=30)        # 21 more: under min_pixels
