"""The stable ground's velocity level and noise: a pure numerical kernel (no Spark).

The median and 1.4826 x MAD of *all* velocities are the stable ground's level and noise only
when few pixels move: every moving pixel widens the MAD, and on a scene where a fifth of the
pixels move (a city on an aquifer) sigma doubles and small sources fall below z_pixel * sigma.
``stable_level`` clips instead: the median and MAD of the velocities within ``clip_z`` sigma of
the level, iterated until the set stops changing, the MAD rescaled for the clipped tails of a
normal distribution. It starts from the densest velocity (the half-sample mode: where a small
scene is mostly a bowl, the stable ground is not the median) and, where given, from the median
formal velocity standard error: a lower bound (EGMS's are 4x smaller than the scatter of its
stable ground, residuals being correlated in time and space), from which the clipped sigma grows
to the scatter of the stable ground and stops there.

The kernel takes weighted values, so that Spark hands it a histogram (bin centres, counts) of
millions of velocities instead of the velocities themselves.
"""
from __future__ import annotations

import logging
import math

import numpy as np
from scipy.stats import norm

# 1 / the standard normal's median absolute deviation: MAD x this is sigma.
MAD_TO_SIGMA = 1.0 / norm.ppf(0.75)
_MAX_ITER = 100
# The clip (in sigmas) at which stable_level's runaway guard measures the stable peak's core.
CORE_CLIP_Z = 1.5

log = logging.getLogger(__name__)


def clipped_mad_to_sigma(clip_z: float) -> float:
    """The factor from the MAD of a normal sample clipped at +-clip_z sigma to sigma (> MAD_TO_SIGMA)."""
    inside = 2.0 * norm.cdf(clip_z) - 1.0
    return 1.0 / norm.ppf(0.5 + 0.25 * inside)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The lower weighted median of sorted ``values`` (weights > 0)."""
    cumulative = np.cumsum(weights)
    return float(values[np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def half_sample_mode(values: np.ndarray, weights: np.ndarray) -> float:
    """The half-sample mode of sorted ``values`` (n,) with weights > 0 (Bickel & Fruehwirth 2006):
    the shortest interval holding half the weight, again inside it, until it holds at most three
    values; their weighted median."""
    lo, hi = 0, len(values)
    while hi - lo > 3:
        v, w = values[lo:hi], weights[lo:hi]
        cumulative = np.concatenate([[0.0], np.cumsum(w)])
        end = np.searchsorted(cumulative, cumulative[:-1] + 0.5 * cumulative[-1], side="left")
        start = np.flatnonzero(end <= len(v))
        widths = v[end[start] - 1] - v[start]
        i = int(start[np.argmin(widths)])
        if end[i] - i >= hi - lo:
            break
        lo, hi = lo + i, lo + int(end[i])
    return _weighted_median(values[lo:hi], weights[lo:hi])


def stable_level(velocity_mm_yr, weights=None, clip_z: float = 2.5, start_sigma_mm_yr: float | None = None,
                 runaway_ratio: float | None = None) -> tuple[float, float]:
    """(v0, sigma) in mm/yr: the level and noise of the stable ground among ``velocity_mm_yr`` (n,).

    weights: (n,) counts of each value (a histogram's bin centres and counts), default 1.
    Starts from the half-sample mode and the smaller of 1.4826 x the MAD around it and
    ``start_sigma_mm_yr`` (the median formal velocity error), then keeps the values within clip_z
    sigma of v0 and measures both again on them (median; MAD rescaled by ``clipped_mad_to_sigma``)
    until the kept set repeats.

    runaway_ratio: where most pixels move and their slow shoulders stand as a plateau beside the
    stable peak, each wider sigma takes in more plateau and the iteration runs away to several
    times the peak's width. The same iteration clipped at CORE_CLIP_Z, started from clip_z's
    result, shrinks to the peak's core and, for a normal peak, to the same sigma; when clip_z's
    sigma exceeds runaway_ratio x the core's, the core's (v0, sigma) are returned (None, clip_z <=
    CORE_CLIP_Z or a core of no spread: never). Started from below instead, the narrow clip stops
    at any of several sigmas on velocities rounded to 0.1 mm/yr (EGMS's). Raises ValueError on
    empty, non-finite or negative input, clip_z <= 1, runaway_ratio <= 1, or a zero spread."""
    v = np.asarray(velocity_mm_yr, np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, np.float64)
    if v.ndim != 1 or w.shape != v.shape:
        raise ValueError(f"velocity_mm_yr and weights must be 1-D of one length, got {v.shape} and {w.shape}")
    if not (np.isfinite(v).all() and np.isfinite(w).all()) or (w < 0).any():
        raise ValueError("velocity_mm_yr must be finite and weights finite and >= 0")
    if not (math.isfinite(clip_z) and clip_z > 1.0):
        raise ValueError(f"clip_z must be > 1, got {clip_z}")
    if runaway_ratio is not None and not (math.isfinite(runaway_ratio) and runaway_ratio > 1.0):
        raise ValueError(f"runaway_ratio must be > 1, got {runaway_ratio}")
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    v, w = v[w > 0], w[w > 0]
    if v.size == 0:
        raise ValueError("no velocity to measure the stable level on")
    v0 = half_sample_mode(v, w)
    sigma = MAD_TO_SIGMA * _mad(v, w, v0)
    if start_sigma_mm_yr is not None and 0 < start_sigma_mm_yr < sigma:
        sigma = float(start_sigma_mm_yr)
    level = _clipped_level(v, w, v0, sigma, clip_z)
    if not level[1] > 0:
        raise ValueError("the velocities' spread is 0: no noise level to measure; set hotspots.noise_velocity_mm_yr")
    if runaway_ratio is not None and clip_z > CORE_CLIP_Z:
        core = _clipped_level(v, w, *level, CORE_CLIP_Z)
        if core[1] > 0 and level[1] > runaway_ratio * core[1]:
            log.warning("stable level: sigma clipped at %.1f (%.3f mm/yr) is %.1f x the peak core's (%.3f, "
                        "clipped at %.1f): the moving pixels widened it; the core's kept", clip_z, level[1],
                        level[1] / core[1], core[1], CORE_CLIP_Z)
            return core
    return level


def _clipped_level(v: np.ndarray, w: np.ndarray, v0: float, sigma: float, clip_z: float) -> tuple[float, float]:
    """(v0, sigma) of the sorted values v (weights w > 0) within clip_z sigma of v0, measured again
    on the values they keep until the kept set repeats; sigma 0 once the kept values are all one."""
    factor = clipped_mad_to_sigma(clip_z)
    kept_before = None
    for _ in range(_MAX_ITER):
        if not sigma > 0:
            return float(v0), 0.0
        kept = np.abs(v - v0) <= clip_z * sigma
        if kept_before is not None and np.array_equal(kept, kept_before):
            break
        kept_before = kept
        v0 = _weighted_median(v[kept], w[kept])
        sigma = factor * _mad(v[kept], w[kept], v0)
    return float(v0), float(sigma)


def _mad(v: np.ndarray, w: np.ndarray, centre: float) -> float:
    """The weighted median of |v - centre|."""
    deviation = np.abs(v - centre)
    order = np.argsort(deviation, kind="stable")
    return _weighted_median(deviation[order], w[order])


def speed_z(velocity_mm_yr, v0_mm_yr: float, sigma_mm_yr: float) -> float:
    """A hotspot's motion in noise sigmas: the mean |velocity - v0| of its pixels (n,) over sigma,
    signed as their mean velocity - v0. The mean speed, not the mean velocity: a field that moves
    towards the radar on one side of a fault and away on the other averages to ~0 but moves."""
    deviation = np.asarray(velocity_mm_yr, np.float64) - v0_mm_yr
    return math.copysign(float(np.nanmean(np.abs(deviation))), float(np.nanmean(deviation))) / sigma_mm_yr
