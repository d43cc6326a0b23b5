"""Forecast windows: chronological split without shared targets, normalisation moments, batches."""
import numpy as np
import pytest

from insarlake.forecast.baselines import harmonic_trend
from insarlake.forecast.windows import (WindowSplit, annual_record_starts, change_moments, future_times, record_fit,
                                       window_batch)


def test_split_targets_never_cross_between_train_validation_and_test():
    split = WindowSplit.of(100, input_len=10, horizon=4, train_share=0.6, validation_share=0.2)
    assert (split.t1, split.t2) == (60, 80)
    targets = {name: {e for s in split.starts(name) for e in range(s + 10, s + 14)}
               for name in ("train", "validation", "test")}
    assert max(targets["train"]) < 60 <= min(targets["validation"])
    assert max(targets["validation"]) < 80 <= min(targets["test"]) and max(targets["test"]) <= 99
    assert split.starts("train")[0] == 0 and split.starts("train")[-1] == 60 - 14
    assert list(split.starts("test")) == [70, 74, 78, 82, 86]        # step H, inputs reach back
    with pytest.raises(ValueError, match="no validation window"):
        WindowSplit.of(40, 10, 4, 0.7, 0.05)     # 2 validation epochs < H


def test_change_moments_by_hand():
    series = np.array([[0.0, 1.0, 3.0, 6.0, 10.0], [0.0, 0.0, 2.0, 2.0, 2.0]])
    count, sumsq = change_moments(series, horizon=2, last_epoch=4)
    # s[t+2] - s[t] for t + 2 < 4: t in {0, 1}: rows (3, 5) and (2, 2)
    assert count == 2 and sumsq.tolist() == [9 + 25, 4 + 4]


def test_window_batch_is_relative_to_the_last_input_and_scaled():
    t = np.arange(12) * 0.1
    series = np.tile(np.arange(12, dtype=float) * 2.0, (3, 1))
    split = WindowSplit(input_len=4, horizon=2, n_epochs=12, t1=8, t2=10)
    edges = np.array([[0, 1], [1, 0]])
    batch, last = window_batch(series, np.zeros((3, 3), np.float32), t, 3, split, 2.0, edges)
    assert np.allclose(last, 12.0)
    assert np.allclose(batch.history.numpy()[0], [-3, -2, -1, 0])
    assert np.allclose(batch.target.numpy()[0], [1, 2])
    assert np.allclose(batch.t_in.numpy(), [-0.3, -0.2, -0.1, 0.0]) and np.allclose(batch.t_out.numpy(), [0.1, 0.2])


def test_window_record_is_the_harmonic_trend_of_the_past_in_batch_units():
    """batch.record: the record model fitted on every epoch before the window's origin, at its input
    epochs and forecast times, relative to the last input value and / scale_mm; its forecast part is
    harmonic_trend's, and a future window (no target) continues at the cadence."""
    rng = np.random.default_rng(1)
    t = np.arange(120) * 12 / 365.25
    series = 3 * np.sin(2 * np.pi * t) - 6 * t + rng.normal(0, 1.0, (4, 120))
    split = WindowSplit(input_len=10, horizon=3, n_epochs=120, t1=84, t2=102)
    edges = np.zeros((2, 0), np.int64)
    for start, with_target in ((60, True), (110, False)):
        origin = start + 10
        batch, last = window_batch(series, np.zeros((4, 3), np.float32), t, start, split, 2.5, edges,
                                   with_target=with_target)
        record = batch.record.numpy().astype(np.float64) * 2.5 + last[:, None]
        t_out = future_times(t, origin, 3)
        np.testing.assert_allclose(record[:, 10:], harmonic_trend(series[:, :origin], t[:origin], t_out, 10),
                                   atol=2e-5 * np.abs(record).max())              # float32 storage
        np.testing.assert_allclose(record, record_fit(series, t, start, split), atol=2e-5 * np.abs(record).max())
        # inside the window: the fit at the input epochs, whose mean residual over the window is 0
        assert np.allclose((series[:, start:origin] - record[:, :10]).mean(axis=1), 0, atol=1e-4)
    given = np.ones((4, 13))
    batch, last = window_batch(series, np.zeros((4, 3), np.float32), t, 60, split, 2.5, edges, record_mm=given)
    np.testing.assert_allclose(batch.record.numpy(), (1.0 - last[:, None]) / 2.5 * np.ones((1, 13)), rtol=1e-6)
    bare, _ = window_batch(series, np.zeros((4, 3), np.float32), t, 60, split, 2.5, edges, with_record=False)
    assert bare.record is None and np.array_equal(bare.history.numpy(), batch.history.numpy())


def test_record_prior_training_windows_start_after_a_year_of_record():
    t = np.arange(200) * 12 / 365.25                        # 12-day epochs: epoch 31 is the first a year on
    split = WindowSplit.of(200, 24, 6, 0.7, 0.15)
    starts = split.starts("train")
    kept = annual_record_starts(starts, split, t)
    origin_years = t[kept + 24 - 1]
    assert origin_years.min() >= 1.0 and t[kept[0] + 24 - 2] < 1.0    # the first with a year behind it
    assert kept[-1] == starts[-1] and len(kept) == len(starts) - 8        # origins at epochs 23..30 dropped
    short = WindowSplit.of(40, 8, 2, 0.7, 0.15)                            # 40 x 12 days: never a year
    assert np.array_equal(annual_record_starts(short.starts("train"), short, t[:40]), short.starts("train"))


def test_future_times_continue_at_the_recent_cadence():
    t = np.r_[np.arange(20) * 6.0, 120 + np.arange(1, 12) * 12.0] / 365.25
    assert np.allclose(future_times(t, len(t), 3) * 365.25, t[-1] * 365.25 + np.array([12.0, 24.0, 36.0]))
    assert np.allclose(future_times(t, len(t) - 1, 3), np.r_[t[-1], t[-1] + np.array([12.0, 24.0]) / 365.25])


def test_monitoring_horizon_is_six_months_at_the_record_cadence():
    from insarlake.config import replace

    from insarlake.config import load_config
    from insarlake.forecast.stage import monitoring_horizon_epochs

    cfg = load_config().forecast                      # 180 days, horizon_epochs 6
    six_days = np.arange(100) * 6 / 365.25
    assert monitoring_horizon_epochs(cfg, six_days) == 30
    twelve_days = np.concatenate([six_days[:80], six_days[79] + np.arange(1, 21) * 12 / 365.25])
    assert monitoring_horizon_epochs(cfg, twelve_days) == 15          # the recent cadence counts
    assert monitoring_horizon_epochs(replace(cfg, monitoring_horizon_days=36.0), six_days) is None  # = horizon_epochs
    assert monitoring_horizon_epochs(replace(cfg, monitoring_horizon_days=None), six_days) is None
    assert monitoring_horizon_epochs(replace(cfg, monitoring_horizon_days=1.0), six_days) == 1
