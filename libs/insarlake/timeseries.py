"""Small numerical helpers on displacement time series (numpy only)."""
from __future__ import annotations

import numpy as np

DAYS_PER_YEAR = 365.25


def years_since(dates: np.ndarray, origin: np.datetime64 | None = None) -> np.ndarray:
    """Decimal years (float64, (T,)) of ``dates`` (datetime64[D]) since ``origin`` (default dates[0])."""
    dates = np.asarray(dates, dtype="datetime64[D]")
    origin = dates[0] if origin is None else np.datetime64(origin, "D")
    return (dates - origin).astype(np.float64) / DAYS_PER_YEAR


def fit_velocity(t_years: np.ndarray, disp_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line through each series, ignoring NaN.

    t_years: (T,) float; disp_mm: (n, T) float with NaN for missing epochs.
    Returns velocity_mm_yr (n,) and its standard error velocity_std_mm_yr (n,); NaN where a
    series has fewer than 3 valid epochs.
    """
    disp = np.asarray(disp_mm, dtype=np.float64)
    valid = np.isfinite(disp)
    t = np.broadcast_to(np.asarray(t_years, dtype=np.float64), disp.shape)
    n = valid.sum(axis=1).astype(np.float64)
    y = np.where(valid, disp, 0.0)
    tw = np.where(valid, t, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_mean = tw.sum(axis=1) / n
        y_mean = y.sum(axis=1) / n
        dt = np.where(valid, t - t_mean[:, None], 0.0)
        sxx = (dt * dt).sum(axis=1)
        slope = (dt * (y - y_mean[:, None])).sum(axis=1) / sxx
        resid = np.where(valid, y - y_mean[:, None] - slope[:, None] * dt, 0.0)
        sigma2 = (resid * resid).sum(axis=1) / (n - 2)
        slope_se = np.sqrt(sigma2 / sxx)
    bad = n < 3
    slope[bad] = np.nan
    slope_se[bad] = np.nan
    return slope, slope_se
