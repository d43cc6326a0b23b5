"""Forecast scores, as in the seed paper's Table 1 (RMSE, MAE, ACC, EVS) plus R^2 and interval coverage.

Pure numpy. Every function takes arrays of one shape (n, H): n pixels, H forecast epochs, in mm
(or any one unit: ACC, EVS, R^2 and coverage are unit-free). Scores are pooled over all n * H elements:

* rmse = sqrt(mean((Y - Yhat)^2)), mae = mean(|Y - Yhat|) (units of the input);
* acc = 1 - ||Y - Yhat||_F / ||Y||_F;
* evs = 1 - Var(Y - Yhat) / Var(Y) (population variances over all elements: a constant offset costs nothing);
* r2 = 1 - SS_res / SS_tot with SS_tot about the global mean of Y (a constant offset costs);
* interval_coverage = share of elements with lower <= Y <= upper.

A score whose denominator is zero (y_true all zero for acc, constant for evs and r2) is NaN.
"""
from __future__ import annotations

import numpy as np

__all__ = ["rmse", "mae", "acc", "evs", "r2", "interval_coverage", "all_metrics", "sufficient_sums",
           "sufficient_sums_by_column", "metrics_from_sums", "SUM_KEYS", "histogram_quantile"]


def _check(name: str, values, shape: tuple | None = None) -> np.ndarray:
    """``values`` as a float64 (n, H) array: 2-D, non-empty, finite, of ``shape`` when given."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric (n, H) array: {error}") from None
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty (n, H) array, got shape {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} must have the shape of y_true {shape}, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has {int((~np.isfinite(array)).sum())} NaN or infinite values")
    return array


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    truth = _check("y_true", y_true)
    return truth, _check("y_pred", y_pred, truth.shape)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("nan")


def _scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return metrics_from_sums(**sufficient_sums(truth, pred))


# the keys of sufficient_sums, in the order metrics_from_sums takes them
SUM_KEYS = ("n", "sum_e", "sum_e2", "sum_abs_e", "sum_y", "sum_y2")


def sufficient_sums(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The sums every score is made of, over the elements of equal-shape arrays (e = y_pred - y_true):
    n, sum_e, sum_e2, sum_abs_e, sum_y, sum_y2. Sums of several blocks (Spark partitions) add up."""
    columns = sufficient_sums_by_column(np.reshape(y_true, (-1, 1)), np.reshape(y_pred, (-1, 1)))
    return {key: float(value[0]) for key, value in columns.items()}


def sufficient_sums_by_column(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    """``sufficient_sums`` of each column of equal-shape (n, H) arrays: {key: (H,) float64}; the
    scores of forecast step h from column h, of all steps from the sums over the columns."""
    y = np.asarray(y_true, np.float64)
    e = np.asarray(y_pred, np.float64) - y
    if e.ndim != 2:
        raise ValueError(f"y_true and y_pred must be (n, H) arrays, got shape {e.shape}")
    return {"n": np.full(e.shape[1], float(e.shape[0])), "sum_e": e.sum(axis=0), "sum_e2": np.square(e).sum(axis=0),
            "sum_abs_e": np.abs(e).sum(axis=0), "sum_y": y.sum(axis=0), "sum_y2": np.square(y).sum(axis=0)}


def metrics_from_sums(n: float, sum_e: float, sum_e2: float, sum_abs_e: float, sum_y: float,
                      sum_y2: float) -> dict[str, float]:
    """{rmse_mm, mae_mm, acc, evs, r2} from ``sufficient_sums`` (possibly added over blocks)."""
    if not n > 0:
        raise ValueError(f"n must be > 0, got {n}")
    var_e = max(sum_e2 / n - (sum_e / n) ** 2, 0.0)
    ss_tot = max(sum_y2 - sum_y ** 2 / n, 0.0)
    return {
        "rmse_mm": float(np.sqrt(sum_e2 / n)),
        "mae_mm": float(sum_abs_e / n),
        "acc": 1.0 - _ratio(np.sqrt(sum_e2), np.sqrt(sum_y2)),
        "evs": 1.0 - _ratio(var_e, ss_tot / n),
        "r2": 1.0 - _ratio(sum_e2, ss_tot),
    }


def histogram_quantile(counts, upper: float, q: float) -> float:
    """The q-quantile (0 < q < 1) of values counted in len(counts) equal bins over [0, upper] (values
    above upper counted in the last bin), linear within a bin: exact to one bin width. The form in
    which quantiles add up over ranks or Spark partitions."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any() or not counts.sum() > 0:
        raise ValueError("counts must be a non-empty 1-D array of non-negative counts with a positive sum")
    if not 0 < q < 1 or not upper > 0:
        raise ValueError(f"q must be in (0, 1) and upper > 0, got {q}, {upper}")
    cum = np.cumsum(counts)
    target = q * cum[-1]
    i = int(np.searchsorted(cum, target))             # first bin whose cumulative count reaches it
    below = cum[i - 1] if i > 0 else 0.0
    width = upper / counts.size
    return float(width * (i + (target - below) / counts[i]))


def rmse(y_true, y_pred) -> float:
    """Root mean square error over all elements of (n, H) arrays (units of the input, mm)."""
    return _scores(*_pair(y_true, y_pred))["rmse_mm"]


def mae(y_true, y_pred) -> float:
    """Mean absolute error over all elements of (n, H) arrays (units of the input, mm)."""
    return _scores(*_pair(y_true, y_pred))["mae_mm"]


def acc(y_true, y_pred) -> float:
    """Accuracy 1 - ||Y - Yhat||_F / ||Y||_F of (n, H) arrays (1 is perfect; NaN when Y is all zero)."""
    return _scores(*_pair(y_true, y_pred))["acc"]


def evs(y_true, y_pred) -> float:
    """Explained variance 1 - Var(Y - Yhat) / Var(Y) over all elements (NaN when Y is constant)."""
    return _scores(*_pair(y_true, y_pred))["evs"]


def r2(y_true, y_pred) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot over all elements (NaN when Y is constant)."""
    return _scores(*_pair(y_true, y_pred))["r2"]


def interval_coverage(y_true, lower, upper) -> float:
    """Share of the (n, H) elements with lower <= y_true <= upper (bounds inclusive), in [0, 1]."""
    truth = _check("y_true", y_true)
    low = _check("lower", lower, truth.shape)
    high = _check("upper", upper, truth.shape)
    if (low > high).any():
        raise ValueError(f"lower exceeds upper at {int((low > high).sum())} elements")
    return float(np.mean((low <= truth) & (truth <= high)))


def all_metrics(y_true, y_pred) -> dict[str, float]:
    """All point scores of (n, H) arrays in mm: {rmse_mm, mae_mm, acc, evs, r2}."""
    return _scores(*_pair(y_true, y_pred))
