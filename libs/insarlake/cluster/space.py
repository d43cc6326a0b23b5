"""The spatial half of the cluster stage: DBSCAN inside each TSKM cluster (the seed paper's
per-cluster DBSCAN, Table 2), with eps / min_samples per TSKM label from the config, eps defaulting
to the run's co-variogram correlation length; and the cluster map.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from insarlake.config import SpatialConfig
from insarlake.errors import ConfigError
from insarlake.lake import Run
from insarlake.spatial.dbscan import dbscan_with_stats

log = logging.getLogger(__name__)


def label_parameters(cfg: SpatialConfig, labels: list[int], correlation_length_km: float
                     ) -> tuple[dict[int, float], dict[int, int]]:
    """eps (m) and min_samples for each TSKM label: ``per_label`` entries, else ``eps_m`` (or the
    correlation length x ``eps_correlation_factor`` when eps_m is null) and ``min_samples``."""
    if cfg.eps_m is not None:
        default_eps = float(cfg.eps_m)
    elif math.isfinite(correlation_length_km) and correlation_length_km > 0:
        default_eps = correlation_length_km * 1000.0 * cfg.eps_correlation_factor
    else:
        default_eps = math.nan
    eps, samples = {}, {}
    for label in labels:
        entry = cfg.per_label.get(label, {})
        eps[label] = float(entry.get("eps_m", default_eps))
        samples[label] = int(entry.get("min_samples", cfg.min_samples))
        if not math.isfinite(eps[label]):
            raise ConfigError(f"config key 'spatial.eps_m': null, and this run's co-variogram gave no correlation "
                              f"length ({correlation_length_km}); set spatial.eps_m or spatial.per_label.{label}.eps_m")
    return eps, samples


def cluster_in_space(labelled: DataFrame, cfg: SpatialConfig, correlation_length_km: float, run: Run
                     ) -> DataFrame:
    """``labelled`` (pixel_id, lon, lat, tskm_label, ...) with cluster_id and is_core from DBSCAN
    per TSKM label. Records eps/min_samples per label, cluster and noise counts in ``run``."""
    labels = sorted(r[0] for r in labelled.select("tskm_label").distinct().collect())
    eps, samples = label_parameters(cfg, labels, correlation_length_km)
    for label in labels:
        run.metrics[f"dbscan_eps_m_label_{label}"] = eps[label]
        run.metrics[f"dbscan_min_samples_label_{label}"] = float(samples[label])
    log.info("DBSCAN per TSKM label: %s", ", ".join(f"{k}: eps {eps[k]:.0f} m, min_samples {samples[k]}" for k in labels))
    out, stats = dbscan_with_stats(labelled, eps, samples, group_col="tskm_label",
                                   max_points_per_tile=cfg.max_points_per_tile,
                                   min_precision=cfg.min_precision, max_precision=cfg.max_precision)
    run.metrics.update({"dbscan_clusters": float(stats.clusters), "dbscan_tiles": float(stats.tiles),
                        "dbscan_noise_share": stats.noise / max(stats.points, 1),
                        "dbscan_halo_replication": stats.local_rows / max(stats.points, 1)})
    log.info("DBSCAN: %d clusters, %d core and %d noise of %d pixels, %d tiles (%.2f x points with halos), %s s",
             stats.clusters, stats.cores, stats.noise, stats.points, stats.tiles,
             stats.local_rows / max(stats.points, 1), stats.seconds)
    return out


def plot_clusters(points: pd.DataFrame, path: Path, title: str) -> Path:
    """PNG map of pixels (lon, lat) coloured by cluster_id; noise (-1) in light grey.
    points: columns lon, lat (degrees), cluster_id."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    noise = points["cluster_id"].to_numpy() < 0
    ax.scatter(points["lon"][noise], points["lat"][noise], s=1, c="0.85", label="noise", rasterized=True)
    clustered = points[~noise]
    if len(clustered):
        ids = clustered["cluster_id"].to_numpy()
        palette = colormaps["tab20"]
        ax.scatter(clustered["lon"], clustered["lat"], s=2, c=[palette(i % 20) for i in ids], rasterized=True)
        centres = clustered.groupby("cluster_id")[["lon", "lat"]].median()
        sizes = clustered.groupby("cluster_id").size()
        for cid in sizes.sort_values(ascending=False).index[:30]:   # label the 30 largest
            ax.annotate(str(cid), centres.loc[cid], fontsize=7, ha="center", va="center")
    mean_lat = float(np.nanmean(points["lat"])) if len(points) else 0.0
    ax.set_aspect(1.0 / max(math.cos(math.radians(mean_lat)), 1e-6))
    ax.set(xlabel="longitude (deg)", ylabel="latitude (deg)", title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def map_sample(clusters: DataFrame, total: int, max_points: int, seed: int = 0) -> pd.DataFrame:
    """(lon, lat, cluster_id) of at most about ``max_points`` of the ``total`` pixels of ``clusters``,
    a seeded hash sample."""
    df = clusters.select("lon", "lat", "cluster_id", "pixel_id")
    if total > max_points:
        keep = max_points / total
        df = df.where((F.abs(F.xxhash64(F.lit(seed), "pixel_id")) % 1_000_000) < int(keep * 1_000_000))
    return df.drop("pixel_id").toPandas()
