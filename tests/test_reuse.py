"""The model-reuse policy (reuse.py) on hand-made epoch lists."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from insarlake.reuse import ReusePolicy, median_spacing_days, reuse_verdict, window

POLICY = ReusePolicy(reuse_extended=True, reuse_max_new_share=0.25, cadence_tolerance_days=1.0, refit_every_runs=0)


def _dates(n: int, start: str = "2020-01-05", step_days: int = 12) -> list[str]:
    first = dt.date.fromisoformat(start)
    return [(first + dt.timedelta(days=step_days * i)).isoformat() for i in range(n)]


def test_the_same_epochs_and_an_append_at_the_cadence_are_reused():
    fitted = _dates(100)
    same = reuse_verdict(fitted, fitted, 0, POLICY)
    assert same.reuse and same.new_epochs == 0 and same.why == "same epochs"
    extended = reuse_verdict(fitted, _dates(125), 3, POLICY)           # 25 new: exactly the share allowed
    assert extended.reuse and extended.new_epochs == 25 and "25 new epochs (25% of the model's 100)" == extended.why
    as_dates = reuse_verdict([dt.date.fromisoformat(d) for d in fitted], _dates(101), 0, POLICY)
    assert as_dates.reuse and as_dates.new_epochs == 1                # datetime.date and ISO text alike


@pytest.mark.parametrize("dates, why", [
    (_dates(126), "26 new epochs, 26% of the model's 100 (models.reuse_max_new_share 25%)"),
    (_dates(100, start="2020-01-17"), "other epochs"),                   # a release over other dates
    (_dates(99), "other epochs"),                                        # fewer epochs
    (_dates(100)[:50] + _dates(60, start="2021-08-22")[:50], "other epochs"),
    (_dates(100) + _dates(10, start="2023-04-13", step_days=6), "other cadence: the new epochs 6 days apart, "
                                                                   "the model's latest 12"),
])
def test_anything_else_is_refitted_and_says_why(dates, why):
    verdict = reuse_verdict(_dates(100), dates, 0, POLICY)
    assert not verdict.reuse and verdict.why.startswith(why), verdict.why


def test_the_switches_and_the_run_count():
    fitted, longer = _dates(100), _dates(110)
    off = reuse_verdict(fitted, longer, 0, ReusePolicy(reuse_extended=False))
    assert not off.reuse and off.why == "10 new epochs and models.reuse_extended is off"
    every_two = ReusePolicy(refit_every_runs=2)
    assert reuse_verdict(fitted, longer, 1, every_two).reuse
    worn = reuse_verdict(fitted, fitted, 2, every_two)                 # the count applies to the same epochs too
    assert not worn.reuse and worn.why == "reused by 2 runs since its fit (models.refit_every_runs 2)"
    assert reuse_verdict(fitted, longer, 10**6, POLICY).reuse          # 0: no limit


def test_a_gap_in_the_new_epochs_is_tolerated_when_the_median_spacing_holds():
    fitted = _dates(100)
    gap = fitted + _dates(11, start="2023-05-01")     # the last fitted epoch is 2023-04-07: one acquisition missed
    assert np.diff(np.asarray(gap[99:], "datetime64[D]")).astype(int).tolist() == [24] + [12] * 10
    assert median_spacing_days(gap[99:]) == 12.0
    assert reuse_verdict(fitted, gap, 0, POLICY).reuse


def test_window_is_the_latest_epochs():
    series = np.arange(12.0).reshape(2, 6)
    assert window(series, 4).tolist() == [[2, 3, 4, 5], [8, 9, 10, 11]]
    assert window(series, 6) is not None and window(series, 6).shape == (2, 6)
    with pytest.raises(ValueError, match="series of 6 epochs, the model needs 7"):
        window(series, 7)


def test_a_cadence_change_refits_once():
    """6-day acquisitions, then 12-day ones from 2021-12-23 (Sentinel-1B lost): the first append
    at 12 days refits; the model refitted on the mixed record reuses the next 12-day appends."""
    six = _dates(120, start="2020-01-05", step_days=6)                  # up to 2021-12-18
    twelve = _dates(30, start="2021-12-30", step_days=12)
    first = reuse_verdict(six, six + twelve[:8], 0, POLICY)
    assert not first.reuse and first.why.startswith("other cadence: the new epochs 12 days apart, the model's latest 6")
    refitted = six + twelve[:8]
    assert reuse_verdict(refitted, refitted + twelve[8:20], 0, POLICY).reuse
