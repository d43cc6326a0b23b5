"""One cluster of moving pixels cut into its sources: the order of the splits, a pure numerical kernel.

The hotspots stage runs it once per cluster (one pandas group on Spark) and the tuning harness
(benchmarks/hotspot_tuning.py) on every cluster of a scene in one process, so the two cut alike.
"""
from __future__ import annotations

import numpy as np

from insarlake.config import HotspotsConfig
from insarlake.hotspots.rate import join_by_step, rate_cores
from insarlake.hotspots.residual import residual_cores, step_cores
from insarlake.hotspots.split import candidate_parts


def cluster_parts(lon_deg, lat_deg, excess_z, cfg: HotspotsConfig, eps_m: float, *, residual_z=None,
                  residual_level_z: float | None = None, step_f=None, step_mm=None, motion_mm=None,
                  series_mm=None, t_years=None) -> np.ndarray:
    """Part index (n,) int64 (-1: a pixel in no lobe of its sign) of one cluster's pixels.

    lon_deg, lat_deg: (n,) degrees; excess_z: (n,) signed (velocity - v0) / sigma; eps_m: the
    cluster's DBSCAN eps. In order, each with what it needs:
    1. ``split.candidate_parts``: lobes of each sign, split between velocity peaks;
    2. ``residual.step_cores`` (step_f, step_mm: ``residual.local_step`` (n,); motion_mm: (n,)
       (velocity - v0) x the series' span; its host test at cfg.step_join_epoch_f, the step join's
       test of one given epoch): the places that step split off; the rest is cut into
       lobes and peaks again, as if the step's own peak had never been there (a trough's peak
       otherwise keeps a piece of the field around it as a part of its own);
    3. ``residual.residual_cores`` (residual_z (n,), residual_level_z): narrow sources by their
       local residual velocity;
    4. ``rate.rate_cores`` and ``rate.join_by_step`` (series_mm (n, T), t_years (T,)).
    Each runs when its config key is set (step_split_f, residual_radius_m, rate_split_step_f,
    step_join_f); a ValueError names what a configured split was not given."""
    lon = np.asarray(lon_deg, np.float64)
    lat = np.asarray(lat_deg, np.float64)
    z = np.asarray(excess_z, np.float64)

    def parts_of(rows: np.ndarray) -> np.ndarray:
        return candidate_parts(lon[rows], lat[rows], z[rows], cfg.z_pixel, cfg.split_level_ratio, eps_m,
                               cfg.min_samples, cfg.min_pixels, cfg.merge_contact_ratio)

    needs = {"step_f, step_mm and motion_mm": cfg.step_split_f is not None and step_f is None,
             "residual_z and residual_level_z": cfg.residual_radius_m is not None and residual_level_z is None,
             "series_mm and t_years": (cfg.rate_split_step_f is not None or cfg.step_join_f is not None
                                       or cfg.step_split_f is not None) and series_mm is None}
    missing = [what for what, lacking in needs.items() if lacking]
    if missing:
        raise ValueError(f"cluster_parts: the configured splits need {', '.join(missing)}")
    part = parts_of(np.arange(lon.shape[0]))
    if cfg.step_split_f is not None and part.size:
        first = int(part.max()) + 1                       # step_cores numbers its cores from here
        cut = step_cores(lon, lat, motion_mm, step_f, step_mm, part, series_mm, t_years, cfg.step_split_f,
                         cfg.step_split_share, cfg.step_split_radius_m, cfg.step_split_min_samples, cfg.min_pixels,
                         cfg.residual_rim_share, cfg.step_join_epoch_f)
        stepped = cut >= first
        if stepped.any():
            rest = np.flatnonzero(~stepped)
            again = parts_of(rest)
            part = cut
            part[rest] = again
            part[stepped] = cut[stepped] - first + int(again.max(initial=-1)) + 1
    if cfg.residual_radius_m is not None:
        part = residual_cores(lon, lat, z, residual_z, part, residual_level_z, cfg.residual_share,
                              cfg.residual_radius_m, cfg.min_samples, cfg.min_pixels, cfg.residual_rim_share)
    if cfg.rate_split_step_f is not None:
        part = rate_cores(lon, lat, z, series_mm, t_years, part, eps_m, cfg.min_samples, cfg.min_pixels,
                          cfg.rate_split_step_f, cfg.z_pixel, cfg.z_hotspot, cfg.rate_split_grow_z,
                          cfg.rate_split_grow_radius_m, cfg.rate_split_epoch_tolerance)
    if cfg.step_join_f is not None:
        part = join_by_step(lon, lat, z, series_mm, t_years, part, eps_m, cfg.step_join_f, cfg.step_join_epoch_f)
    return part
