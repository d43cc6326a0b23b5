"""insarlake.forecast.metrics: hand-computed scores on tiny arrays, perfect and offset forecasts, input checks."""
from __future__ import annotations

import math

import numpy as np
import pytest

from insarlake.forecast import metrics as fm

Y = np.array([[1.0, 2.0], [3.0, 4.0]])        # mean 2.5, Var 1.25, SS_tot 5, ||Y||_F = sqrt(30)


def test_hand_computed_zero_mean_residual():
    pred = np.array([[1.0, 3.0], [2.0, 4.0]])   # Y - Yhat = [0, -1, 1, 0]: mean 0, Var 0.5, SS_res 2
    assert fm.rmse(Y, pred) == pytest.approx(math.sqrt(0.5))
    assert fm.mae(Y, pred) == pytest.approx(0.5)
    assert fm.acc(Y, pred) == pytest.approx(1 - math.sqrt(2) / math.sqrt(30))   # 0.741801
    assert fm.evs(Y, pred) == pytest.approx(1 - 0.5 / 1.25)                     # 0.6
    assert fm.r2(Y, pred) == pytest.approx(1 - 2 / 5)                           # 0.6


def test_hand_computed_biased_residual():
    pred = np.array([[0.0, 2.0], [3.0, 6.0]])   # Y - Yhat = [1, 0, 0, -2]: mean -0.25, Var 1.1875, SS_res 5
    scores = fm.all_metrics(Y, pred)
    assert set(scores) == {"rmse_mm", "mae_mm", "acc", "evs", "r2"}
    assert scores["rmse_mm"] == pytest.approx(math.sqrt(5 / 4))                 # 1.118034
    assert scores["mae_mm"] == pytest.approx(0.75)
    assert scores["acc"] == pytest.approx(1 - math.sqrt(5 / 30))                # 0.591752
    assert scores["evs"] == pytest.approx(0.05)                                 # 1 - 1.1875 / 1.25
    assert scores["r2"] == pytest.approx(0.0, abs=1e-12)                        # 1 - 5 / 5
    assert all(isinstance(v, float) for v in scores.values())


def test_perfect_forecast():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(7, 3)) * 5
    scores = fm.all_metrics(y, y.copy())
    assert scores == {"rmse_mm": 0.0, "mae_mm": 0.0, "acc": 1.0, "evs": 1.0, "r2": 1.0}


def test_constant_offset_keeps_evs_but_lowers_r2():
    scores = fm.all_metrics(Y, Y + 1.0)          # residual -1 everywhere: Var 0, SS_res 4
    assert scores["evs"] == pytest.approx(1.0)
    assert scores["r2"] == pytest.approx(1 - 4 / 5)                             # 0.2
    assert scores["rmse_mm"] == pytest.approx(1.0) and scores["mae_mm"] == pytest.approx(1.0)
    assert scores["acc"] == pytest.approx(1 - 2 / math.sqrt(30))                # 0.634852


def test_agrees_with_sklearn_style_formulas_on_random_data():
    rng = np.random.default_rng(1)
    y, p = rng.normal(size=(50, 6)), rng.normal(size=(50, 6))
    r = (y - p).ravel()
    assert fm.rmse(y, p) == pytest.approx(np.sqrt(np.mean(r ** 2)))
    assert fm.evs(y, p) == pytest.approx(1 - np.var(r) / np.var(y.ravel()))
    assert fm.r2(y, p) == pytest.approx(1 - np.sum(r ** 2) / np.sum((y.ravel() - y.mean()) ** 2))


def test_degenerate_denominators_are_nan():
    zeros = np.zeros((2, 2))
    assert math.isnan(fm.acc(zeros, zeros + 1))
    assert math.isnan(fm.evs(zeros + 3, zeros))
    assert math.isnan(fm.r2(zeros + 3, zeros))
    assert fm.rmse(zeros, zeros + 1) == 1.0


def test_interval_coverage():
    lower = np.array([[0.0, 2.5], [3.0, 5.0]])
    upper = np.array([[2.0, 3.0], [3.0, 6.0]])
    # 1 in [0, 2] yes; 2 in [2.5, 3] no; 3 in [3, 3] yes (inclusive); 4 in [5, 6] no
    assert fm.interval_coverage(Y, lower, upper) == pytest.approx(0.5)
    assert fm.interval_coverage(Y, Y, Y) == 1.0
    assert fm.interval_coverage(Y, Y + 1, Y + 2) == 0.0


@pytest.mark.parametrize("bad, arg", [
    ((np.array([[1.0, np.nan], [3.0, 4.0]]), Y), "y_true"),
    ((Y, np.array([[1.0, 2.0], [np.inf, 4.0]])), "y_pred"),
    ((Y, np.ones((2, 3))), "y_pred"),
    ((np.ones(4), np.ones(4)), "y_true"),
    ((np.ones((0, 2)), np.ones((0, 2))), "y_true"),
    ((Y, [["a", "b"], ["c", "d"]]), "y_pred"),
])
def test_bad_input_raises_naming_the_argument(bad, arg):
    for fn in (fm.rmse, fm.mae, fm.acc, fm.evs, fm.r2, fm.all_metrics):
        with pytest.raises(ValueError, match=arg):
            fn(*bad)


def test_interval_coverage_bad_input():
    with pytest.raises(ValueError, match="lower"):
        fm.interval_coverage(Y, np.full((2, 2), np.nan), Y)
    with pytest.raises(ValueError, match="upper"):
        fm.interval_coverage(Y, Y, np.ones((2, 1)))
    with pytest.raises(ValueError, match="lower exceeds upper"):
        fm.interval_coverage(Y, Y + 1, Y)


def test_metrics_from_sums_added_over_blocks_equal_the_metrics_of_the_whole():
    from insarlake.forecast.metrics import all_metrics, metrics_from_sums, sufficient_sums

    rng = np.random.default_rng(3)
    y = rng.normal(5.0, 3.0, (40, 6))
    pred = y + rng.normal(0.5, 1.0, y.shape)
    parts = [sufficient_sums(y[i:i + 10], pred[i:i + 10]) for i in range(0, 40, 10)]
    total = {k: sum(p[k] for p in parts) for k in parts[0]}
    got, want = metrics_from_sums(**total), all_metrics(y, pred)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="n must be"):
        metrics_from_sums(0, 0, 0, 0, 0, 0)


def test_histogram_quantile_is_within_one_bin_of_numpy_and_adds_over_parts():
    rng = np.random.default_rng(3)
    values = np.abs(rng.standard_t(4, 20_000))
    upper, bins = 20.0, 4000
    clipped = np.minimum(values, upper * (1 - 1e-12))
    parts = [np.histogram(clipped[i::3], bins=bins, range=(0, upper))[0] for i in range(3)]
    for q in (0.1, 0.5, 0.9, 0.99):
        got = fm.histogram_quantile(sum(parts), upper, q)
        assert abs(got - np.quantile(values, q)) <= upper / bins + 1e-12
    assert fm.histogram_quantile([0, 2, 0, 0], 4.0, 0.5) == pytest.approx(1.5)   # by hand: bin [1, 2), halfway
    with pytest.raises(ValueError):
        fm.histogram_quantile([0, 0], 1.0, 0.5)
    with pytest.raises(ValueError):
        fm.histogram_quantile([1, 1], 1.0, 1.0)


def test_sums_by_column_add_up_to_the_sums_of_all_elements():
    from insarlake.forecast.metrics import SUM_KEYS, sufficient_sums, sufficient_sums_by_column

    rng = np.random.default_rng(3)
    y, pred = rng.normal(size=(50, 6)), rng.normal(size=(50, 6))
    columns = sufficient_sums_by_column(y, pred)
    whole = sufficient_sums(y, pred)
    assert set(columns) == set(SUM_KEYS) and all(v.shape == (6,) for v in columns.values())
    for key in SUM_KEYS:           # 300 float64 terms summed in two orders: a few ulps of the magnitudes
        assert columns[key].sum() == pytest.approx(whole[key], rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(columns["sum_e2"][2], np.sum((pred[:, 2] - y[:, 2]) ** 2), rtol=1e-14)
    with pytest.raises(ValueError, match=r"\(n, H\)"):
        sufficient_sums_by_column(y[:, 0], pred[:, 0])
