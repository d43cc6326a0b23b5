"""Vertical and east-west velocity from LOS velocities of several viewing geometries (pure numpy).

A LOS velocity (mm/yr, positive towards the satellite) is the ground velocity projected on the LOS
unit vector (ground to satellite): v_los = e vE + n vN + u vU. Sentinel-1's near-polar orbits see
north-south motion hardly at all (|n| ~ 0.1), so, as EGMS L3 does, vN is taken as 0 and the two
unknowns (vE, vU) are solved by weighted least squares over every geometry of a site:

    x = (A' W A)^-1 A' W v,   cov(x) = (A' W A)^-1,   A = [e u] (m, 2),  W = diag(1 / sigma^2).

This is determined only when the geometries look from both sides (ascending: e < 0, descending:
e > 0); with one side only, vE and vU cannot be told apart and nothing is returned. A north
velocity vN leaks into the estimate as A^+ n vN (tens of percent of vN at most).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Smallest |sin| of the angle between two LOS directions in the east-up plane for the system to
# count as determined: below, vE and vU are ill-conditioned (ascending and descending are ~70 deg apart).
MIN_SEPARATION_SIN = 0.2


@dataclass(frozen=True)
class Decomposition:
    """Ground velocity of a site (mm/yr) and its 1-sigma uncertainty."""
    east_mm_yr: float
    up_mm_yr: float
    east_std_mm_yr: float
    up_std_mm_yr: float


def decompose_los(velocity_mm_yr, sigma_mm_yr, los_east, los_up) -> Decomposition | None:
    """East and up velocity from m >= 2 LOS velocities; None when the geometries do not look from
    both sides or their LOS directions are too close (MIN_SEPARATION_SIN).

    velocity_mm_yr, sigma_mm_yr (> 0), los_east, los_up: (m,) per geometry."""
    v = np.asarray(velocity_mm_yr, dtype=np.float64)
    sigma = np.asarray(sigma_mm_yr, dtype=np.float64)
    a = np.column_stack([np.asarray(los_east, dtype=np.float64), np.asarray(los_up, dtype=np.float64)])
    if not (v.shape == sigma.shape == (a.shape[0],)) or v.ndim != 1:
        raise ValueError(f"decompose_los: shapes {v.shape}, {sigma.shape}, {a.shape} do not agree")
    ok = np.isfinite(v) & np.isfinite(sigma) & (sigma > 0) & np.isfinite(a).all(axis=1)
    v, sigma, a = v[ok], sigma[ok], a[ok]
    if not ((a[:, 0] < 0).any() and (a[:, 0] > 0).any()):
        return None
    unit = a / np.linalg.norm(a, axis=1, keepdims=True)
    cross = np.abs(np.outer(unit[:, 0], unit[:, 1]) - np.outer(unit[:, 1], unit[:, 0]))   # |sin| of each pair's angle
    if cross.max() < MIN_SEPARATION_SIN:
        return None
    w = 1.0 / sigma ** 2
    normal = a.T @ (a * w[:, None])
    cov = np.linalg.inv(normal)
    x = cov @ (a.T @ (w * v))
    return Decomposition(float(x[0]), float(x[1]), float(np.sqrt(cov[0, 0])), float(np.sqrt(cov[1, 1])))
