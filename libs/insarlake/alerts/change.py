"""Tests of change between two runs of a hotspot track (pure numpy).

Accelerating (after LiCSAlert, Gaddes et al. 2019): a model (line, plus an annual sinusoid when
the baseline spans two years) is fitted to the hotspot's mean series over the baseline, the epochs
the previous run had; each newer epoch's departure from the model's prediction is measured in
prediction standard deviations (the baseline's residual scatter and the prediction's own
uncertainty). The track accelerates when the latest ``persist`` epochs all depart by at least
``z_alert`` in the direction it was already moving: one noisy epoch is not enough, and a departure
that came and went is not current.

Vanished: a previous hotspot not found again whose ground (the pixels in its last ellipse) no
longer moves as a retained hotspot had to in the previous run; when it still does, the track is
missed (no alert) and kept for the next run.

Growing: the hotspot holds ``ratio`` times the pixels and ellipse area it had, by at least
``min_pixels`` more pixels, counting now only pixels as far from the stable level as the previous
run's threshold: a longer series narrows the moving-pixel threshold, which alone must not look
like growth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class Departure:
    """New epochs against the baseline model of one series: ``z`` (n_new,) departures in
    prediction standard deviations, ``departure_mm`` (n_new,), the baseline's rate (mm/yr) and
    residual scatter (mm), the rate through the new epochs (mm/yr; NaN under 3), epoch counts."""
    z: np.ndarray
    departure_mm: np.ndarray
    baseline_rate_mm_yr: float
    sigma_mm: float
    new_rate_mm_yr: float
    n_baseline: int
    n_new: int
    seasonal: bool


def _design(t_yr: np.ndarray, origin_yr: float, seasonal: bool) -> np.ndarray:
    columns = [np.ones_like(t_yr), t_yr - origin_yr]
    if seasonal:
        columns += [np.sin(_TWO_PI * t_yr), np.cos(_TWO_PI * t_yr)]
    return np.stack(columns, axis=1)


def departure(t_yr: np.ndarray, disp_mm: np.ndarray, baseline_end_yr: float, baseline_years: float,
              seasonal_min_years: float = 2.0, min_baseline_epochs: int = 10) -> Departure | None:
    """The departure of the epochs after ``baseline_end_yr`` from the model fitted on the last
    ``baseline_years`` up to it; t_yr (T,) years, disp_mm (T,) mm with NaN for missing. None when
    the baseline has fewer than ``min_baseline_epochs`` values or no epoch is newer."""
    t = np.asarray(t_yr, dtype=np.float64)
    d = np.asarray(disp_mm, dtype=np.float64)
    valid = np.isfinite(d) & np.isfinite(t)
    base = valid & (t <= baseline_end_yr) & (t >= baseline_end_yr - baseline_years)
    new = valid & (t > baseline_end_yr)
    if base.sum() < min_baseline_epochs or not new.any():
        return None
    seasonal = bool(t[base].max() - t[base].min() >= seasonal_min_years)
    X = _design(t[base], baseline_end_yr, seasonal)
    if base.sum() < X.shape[1] + 3:
        return None
    beta, *_ = np.linalg.lstsq(X, d[base], rcond=None)
    resid = d[base] - X @ beta
    sigma = float(np.sqrt(resid @ resid / (base.sum() - X.shape[1])))
    Xn = _design(t[new], baseline_end_yr, seasonal)
    inv = np.linalg.pinv(X.T @ X)
    predicted_sd = sigma * np.sqrt(1.0 + np.einsum("ij,jk,ik->i", Xn, inv, Xn))
    gone = d[new] - Xn @ beta
    z = np.divide(gone, predicted_sd, out=np.zeros_like(gone), where=predicted_sd > 0)
    # the rate through the new epochs, their seasonal part (as fitted) taken out
    deseasoned = d[new] - (Xn[:, 2:] @ beta[2:] if seasonal else 0.0)
    new_rate = float(np.polyfit(t[new], deseasoned, 1)[0]) if new.sum() >= 3 else math.nan
    return Departure(z, gone, float(beta[1]), sigma, new_rate, int(base.sum()), int(new.sum()), seasonal)


def persisting(dep: Departure, z_alert: float) -> int:
    """How many of the latest new epochs in a row depart by >= ``z_alert`` in the direction of the
    baseline's motion (either direction when it did not move)."""
    direction = np.sign(dep.baseline_rate_mm_yr)
    beyond = (dep.z * direction >= z_alert) if direction != 0 else (np.abs(dep.z) >= z_alert)
    run = 0
    for hit in beyond[::-1]:
        if not hit:
            break
        run += 1
    return run


def accelerating(dep: Departure | None, z_alert: float, persist: int) -> bool:
    return dep is not None and persisting(dep, z_alert) >= persist


def growing(n_before: int, n_now_at_level: int, area_before_km2: float, area_now_km2: float, ratio: float,
            min_pixels: int) -> bool:
    """The growth rule of the module docstring."""
    return (n_now_at_level >= ratio * n_before and n_now_at_level - n_before >= min_pixels
            and area_now_km2 >= ratio * area_before_km2)


def still_moving(n_pixels: int, mean_velocity_mm_yr: float, v0_mm_yr: float, sigma_before_mm_yr: float,
                 z_hotspot: float, min_pixels: int) -> bool:
    """Whether the ground of a hotspot not found again still moves: at least ``min_pixels`` pixels
    in its last ellipse now, their mean velocity as far from the stable level v0 as a retained
    hotspot's had to be in the previous run (z_hotspot of its noise sigma). A hotspot lost only
    because this run's noise level is higher has not vanished."""
    return bool(n_pixels >= min_pixels and abs(mean_velocity_mm_yr - v0_mm_yr) >= z_hotspot * sigma_before_mm_yr)


def acceleration_mm_yr2(t_yr: np.ndarray, disp_mm: np.ndarray, seasonal_min_years: float = 2.0) -> float:
    """Twice the quadratic coefficient of a least-squares fit (with an annual sinusoid when the
    series spans two years) to a series (T,) mm on t_yr (T,) years; NaN under 6 values."""
    t = np.asarray(t_yr, dtype=np.float64)
    d = np.asarray(disp_mm, dtype=np.float64)
    valid = np.isfinite(d) & np.isfinite(t)
    if valid.sum() < 6:
        return math.nan
    t, d = t[valid], d[valid]
    origin = float(t.mean())
    X = _design(t, origin, bool(t.max() - t.min() >= seasonal_min_years))
    X = np.column_stack([X, (t - origin) ** 2])
    beta, *_ = np.linalg.lstsq(X, d, rcond=None)
    return float(2.0 * beta[-1])
