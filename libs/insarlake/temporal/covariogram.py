"""Displacement co-variogram (seed paper 003, Eq. 3) and the spatial correlation length.

``C(h_k) = 1/N_k * sum over pairs (r, s) in distance bin h_k of <d(r) . d(s)>``, with ``d`` the
displacement *anomaly* series (each epoch's mean over the whole dataset removed) and ``<.>`` the
element-wise product averaged over the epochs both pixels observed (NaN epochs skipped).
Distances are great-circle (haversine) on the sphere of ``insarlake.geo.EARTH_RADIUS_M``.

Kernels (numpy only): ``pair_covariance``, ``bin_covariance``, ``correlation_length_km``.
Spark glue: ``covariogram`` draws about ``cfg.pairs`` random pixel pairs without any N x N work:

* each pixel gets one *slot* key, ``pmod(xxhash64(seed, kind, pixel_id), n_slots)``; a self-join on
  the slot with ``a.pixel_id < b.pixel_id`` yields every pair whose two pixels share the slot, i.e.
  each of the ``M`` candidate pairs with probability ``1 / n_slots``, about ``M / n_slots`` in all.
  ``n_slots = max(1, M // target)``, and a hash of the pair thins the result by
  ``q = target * n_slots / M`` (in (0.5, 1]) so the expected number is the target exactly;
* ``local_share`` of the target is drawn among pixels sharing the first ``local_precision``
  characters of ``tile_id`` (candidates: sum over cells of n(n-1)/2; slot keys are per cell),
  which puts many pairs at short distances; the rest among all pixels (candidates n(n-1)/2).
  Both draws are uniform over their candidate pairs, so every bin's mean is an unbiased estimate
  of the covariance at that distance; a pair drawn by both is counted twice (rare, harmless);
* only a seeded hash sample of the pixels takes part in a draw (and in its shuffle): each pixel
  with probability ``p = min(1, max(cfg.pixels_per_pair * target / pixels, sqrt(target /
  candidates)))``, so about ``pixels_per_pair * target`` rows (more only where cells are so small
  that fewer would not hold the target's pairs), whatever the number of pixels. A pair takes part
  with probability ``p**2``, the same for every pair, so the draw stays uniform; the slots and the
  thinning are computed on the ``p**2 * candidates`` expected pairs among participants.

The per-epoch mean is an exact aggregate over every pixel's ``disp`` (per-partition sums and counts
of the valid values in ``mapInPandas``, added on the driver: one (T,) array per partition). The pair
covariances, distances and per-bin sums are computed in ``mapInPandas`` and the bins summed in
Spark: only the bins (and the (T,) epoch mean) reach the driver. Results depend only on ``cfg.seed``
and the data (bin means up to floating-point summation order).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from insarlake.config import CovariogramConfig
from insarlake.errors import InputError
from insarlake.geo import haversine_m

__all__ = ["pair_covariance", "bin_covariance", "correlation_length_km", "covariogram",
           "CovariogramResult", "epoch_mean_mm", "plot_covariogram"]

log = logging.getLogger(__name__)

BIN_COLUMNS = ["distance_km", "covariance", "pairs"]

# Pair thinning draws a uniform number in [0, 2**31) from a hash of the pair.
_KEEP_RESOLUTION = 1 << 31

_EPOCH_SUMS_SCHEMA = T.StructType([
    T.StructField("rows", T.LongType()),
    T.StructField("t_min", T.IntegerType()),
    T.StructField("t_max", T.IntegerType()),
    T.StructField("sums", T.ArrayType(T.DoubleType())),
    T.StructField("counts", T.ArrayType(T.LongType())),
])

_BIN_SUMS_SCHEMA = T.StructType([
    T.StructField("bin", T.IntegerType()),      # null on the row carrying the number of pairs drawn
    T.StructField("pairs", T.LongType()),
    T.StructField("cov_sum", T.DoubleType()),
    T.StructField("drawn", T.LongType()),
])


# ----------------------------------------------------------------------------------------------
# kernels


def pair_covariance(disp_a, disp_b) -> np.ndarray:
    """Mean over epochs of ``disp_a * disp_b`` per pair, epochs where either is NaN skipped.

    disp_a, disp_b: (P, T) displacement anomalies, mm. Returns (P,) float64, mm**2; NaN for a pair
    with no common valid epoch.
    """
    a = np.asarray(disp_a, dtype=np.float64)
    b = np.asarray(disp_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"disp_a and disp_b must be (P, T) arrays of one shape; got {a.shape} and {b.shape}")
    return _pair_covariance(a, b)


def _pair_covariance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    prod = a * b
    valid = ~np.isnan(prod)
    n = valid.sum(axis=1)
    total = np.where(valid, prod, 0.0).sum(axis=1)
    out = np.full(len(prod), np.nan)
    np.divide(total, n, out=out, where=n > 0)
    return out


def bin_covariance(distance_km, covariance, bin_km: float, max_distance_km: float) -> pd.DataFrame:
    """Mean covariance per distance bin.

    distance_km: (P,) pair distances, km; covariance: (P,) pair covariances, mm**2. Bin k holds the
    pairs with ``k * bin_km <= distance < (k + 1) * bin_km``; pairs at ``distance >= max_distance_km``
    and pairs with NaN covariance or distance are left out. Returns a DataFrame with one row per
    non-empty bin, ascending: distance_km (bin centre, km), covariance (mean, mm**2), pairs (int).
    """
    d = np.asarray(distance_km, dtype=np.float64)
    c = np.asarray(covariance, dtype=np.float64)
    if d.ndim != 1 or d.shape != c.shape:
        raise ValueError(f"distance_km and covariance must be (P,) arrays of one shape; got {d.shape} and {c.shape}")
    _check_bins(bin_km, max_distance_km)
    counts, sums = _bin_sums(d, c, bin_km, max_distance_km)
    return _bins_frame(np.nonzero(counts)[0], counts[counts > 0], sums[counts > 0], bin_km)


def _check_bins(bin_km: float, max_distance_km: float) -> None:
    if not (bin_km > 0 and max_distance_km > 0 and math.isfinite(max_distance_km)):
        raise ValueError(f"bin_km and max_distance_km must be finite and > 0; got {bin_km}, {max_distance_km}")


def _n_bins(bin_km: float, max_distance_km: float) -> int:
    return int(math.ceil(max_distance_km / bin_km))


def _bin_sums(d: np.ndarray, c: np.ndarray, bin_km: float, max_distance_km: float) -> tuple[np.ndarray, np.ndarray]:
    """(n_bins,) pair counts (int64) and covariance sums (float64) of the valid in-range pairs."""
    n_bins = _n_bins(bin_km, max_distance_km)
    keep = ~np.isnan(c) & (d >= 0) & (d < max_distance_km)  # NaN distances fail both comparisons
    k = np.minimum(np.floor(d[keep] / bin_km).astype(np.int64), n_bins - 1)
    counts = np.bincount(k, minlength=n_bins)
    sums = np.bincount(k, weights=c[keep], minlength=n_bins)
    return counts, sums


def _bins_frame(index, counts, sums, bin_km: float) -> pd.DataFrame:
    index = np.asarray(index, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    order = np.argsort(index, kind="stable")
    index, counts, sums = index[order], counts[order], np.asarray(sums, dtype=np.float64)[order]
    return pd.DataFrame({"distance_km": (index + 0.5) * bin_km, "covariance": sums / counts,
                         "pairs": counts})


def correlation_length_km(distance_km, covariance, fraction: float) -> float:
    """First distance (km) where the covariance falls to ``fraction`` x the first bin's covariance.

    distance_km: (K,) ascending bin centres, km; covariance: (K,) bin covariances, mm**2. Linear
    interpolation between the last bin above the level and the first at or below it. NaN, with a
    logged warning, if the first bin's covariance is not positive or the level is never reached.
    """
    d = np.asarray(distance_km, dtype=np.float64)
    c = np.asarray(covariance, dtype=np.float64)
    if d.ndim != 1 or d.shape != c.shape:
        raise ValueError(f"distance_km and covariance must be (K,) arrays of one shape; got {d.shape} and {c.shape}")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1); got {fraction}")
    if len(d) > 1 and np.any(np.diff(d) <= 0):
        raise ValueError("distance_km must be strictly ascending")
    if len(c) == 0 or not c[0] > 0:
        log.warning("no correlation length: the first bin's covariance is %s, not positive",
                    c[0] if len(c) else "missing")
        return float("nan")
    level = fraction * c[0]
    below = np.nonzero(c[1:] <= level)[0]
    if len(below) == 0:
        log.warning("no correlation length: the covariance never falls to %.3g x %.4g mm2 within %.3g km",
                    fraction, c[0], d[-1])
        return float("nan")
    i = below[0] + 1
    return float(d[i - 1] + (level - c[i - 1]) * (d[i] - d[i - 1]) / (c[i] - c[i - 1]))


# ----------------------------------------------------------------------------------------------
# Spark glue


@dataclass(frozen=True, eq=False)
class CovariogramResult:
    """bins: DataFrame (distance_km, covariance mm**2, pairs) ascending; correlation_length_km: km
    (NaN when the covariance never falls to the fraction); pairs: pairs drawn (all distances);
    epoch_mean_mm: (T,) per-epoch dataset mean removed from every series, mm."""
    bins: pd.DataFrame
    correlation_length_km: float
    pairs: int
    epoch_mean_mm: np.ndarray


def covariogram(spark: SparkSession, pixels_df: DataFrame, cfg: CovariogramConfig) -> CovariogramResult:
    """Co-variogram of the displacement anomalies of ``pixels_df`` from about ``cfg.pairs`` random pairs.

    pixels_df: at least pixel_id (string), lon, lat (degrees), tile_id (geohash string), disp
    (array<float>, mm, NaN allowed, one length for all rows); rows with a null disp, lon or lat are
    ignored, rows with a null tile_id get no local pairs. Three Spark jobs: the per-epoch mean, the
    pixel counts per cell, the pairs and their bins. See the module docstring for the draw.
    """
    pixels = (pixels_df
              .where(F.col("disp").isNotNull() & F.col("lon").isNotNull() & F.col("lat").isNotNull())
              .select(F.col("pixel_id").cast("string").alias("pixel_id"),
                      F.col("lon").cast("double").alias("lon"), F.col("lat").cast("double").alias("lat"),
                      F.substring(F.col("tile_id"), 1, cfg.local_precision).alias("cell"), "disp"))

    epoch_mean = epoch_mean_mm(pixels)

    n_pixels, draws = _plan_draws(pixels, cfg)
    target_local = int(round(cfg.pairs * cfg.local_share))
    target_global = cfg.pairs - target_local

    if draws:
        bins_rows = _pair_bins(spark, pixels, draws, epoch_mean, cfg).collect()
    else:
        bins_rows = []
    drawn = sum(int(r["drawn"] or 0) for r in bins_rows)
    in_range = [r for r in bins_rows if r["bin"] is not None and r["pairs"]]
    bins = _bins_frame([r["bin"] for r in in_range], [r["pairs"] for r in in_range],
                       [r["cov_sum"] for r in in_range], cfg.bin_km)
    length = correlation_length_km(bins["distance_km"].to_numpy(), bins["covariance"].to_numpy(), cfg.fraction)
    log.info("covariogram: %d pixels, %d epochs; ~%.0f rows take part in the pairing (%s); %d pairs drawn "
             "(target %d: %d within %d-character geohash cells, %d anywhere); %d bins of %.3g km below %.3g km "
             "holding %d pairs; correlation length (%.2f of the first bin) %.3f km",
             n_pixels, len(epoch_mean), sum(d.participants for d in draws),
             ", ".join(f"{d.kind} {d.share:.3g} of {d.population}" for d in draws), drawn,
             cfg.pairs, target_local, cfg.local_precision, target_global,
             len(bins), cfg.bin_km, cfg.max_distance_km, int(bins["pairs"].sum()), cfg.fraction, length)
    return CovariogramResult(bins=bins, correlation_length_km=length, pairs=drawn, epoch_mean_mm=epoch_mean)


@dataclass(frozen=True)
class _Draw:
    """One uniform draw of ``target`` pairs among ``candidates`` pairs of ``population`` pixels:
    the share of pixels taking part, slots and thinning."""
    kind: str            # "local" (within a cell) or "global"
    candidates: int
    target: int
    population: int      # pixels that can take part (with a cell, for "local")
    pixels_per_pair: float

    @property
    def active(self) -> bool:
        return self.target > 0 and self.candidates > 0

    @property
    def share(self) -> float:
        """Probability that a pixel takes part: ~pixels_per_pair rows per target pair, and at
        least enough that the participants' pairs (share**2 * candidates) hold the target."""
        need = max(self.pixels_per_pair * self.target / self.population, math.sqrt(self.target / self.candidates))
        return min(1.0, need)

    @property
    def participants(self) -> float:
        """Expected number of pixels taking part."""
        return self.share * self.population

    @property
    def pair_candidates(self) -> float:
        """Expected candidate pairs among the participants (exact when every pixel takes part)."""
        return float(self.candidates) if self.share >= 1.0 else self.share ** 2 * self.candidates

    @property
    def n_slots(self) -> int:
        return max(1, int(self.pair_candidates // self.target))

    @property
    def keep(self) -> float:
        """Share of the slot-join pairs kept: expected pairs = pair_candidates / n_slots * keep = target."""
        return min(1.0, self.target * self.n_slots / self.pair_candidates)


def _plan_draws(pixels: DataFrame, cfg: CovariogramConfig) -> tuple[int, list[_Draw]]:
    """(number of pixels, the active draws) from the pixel count per cell (one Spark aggregate)."""
    counts = (pixels.groupBy("cell").agg(F.count(F.lit(1)).alias("n"))
              .agg(F.sum("n").alias("n"),
                   F.sum(F.when(F.col("cell").isNotNull(), F.col("n"))).alias("n_cell"),
                   F.sum(F.when(F.col("cell").isNotNull(), F.expr("n * (n - 1) DIV 2"))).alias("local"))
              .first())
    n_pixels, n_cell, local_candidates = (int(counts[k] or 0) for k in ("n", "n_cell", "local"))
    target_local = int(round(cfg.pairs * cfg.local_share))
    draws = [d for d in (_Draw("local", local_candidates, target_local, n_cell, cfg.pixels_per_pair),
                         _Draw("global", n_pixels * (n_pixels - 1) // 2, cfg.pairs - target_local, n_pixels,
                               cfg.pixels_per_pair)) if d.active]
    for d in draws:
        if d.candidates < d.target:
            log.warning("covariogram: only %d %s candidate pairs for a target of %d; all are used",
                        d.candidates, d.kind, d.target)
    return n_pixels, draws


def _participants(pixels: DataFrame, draws: list[_Draw], seed: int) -> DataFrame:
    """One row per (draw, participating pixel): kind (index in ``draws``), cell ('' for the global
    draw), slot, pixel_id, lon, lat, disp. A pixel takes part in a draw when a seeded hash of
    (draw, pixel_id) falls below the draw's share."""
    seed_col = F.lit(int(seed))
    entries = None
    for kind_id, draw in enumerate(draws):
        part = pixels if draw.kind == "global" else pixels.where(F.col("cell").isNotNull())
        if draw.share < 1.0:
            u = F.pmod(F.xxhash64(seed_col, F.lit("take"), F.lit(draw.kind), F.col("pixel_id")),
                       F.lit(_KEEP_RESOLUTION))
            part = part.where(u < F.lit(int(draw.share * _KEEP_RESOLUTION)))
        slot = F.pmod(F.xxhash64(seed_col, F.lit(draw.kind), F.col("pixel_id")), F.lit(draw.n_slots))
        cell = F.col("cell") if draw.kind == "local" else F.lit("")
        part = part.select(F.lit(kind_id).alias("kind"), cell.alias("cell"), slot.alias("slot"),
                           "pixel_id", "lon", "lat", "disp")
        entries = part if entries is None else entries.unionByName(part)
    return entries


def epoch_mean_mm(pixels: DataFrame, disp_col: str = "disp") -> np.ndarray:
    """(T,) mean of each epoch over all rows of ``pixels`` (NaN skipped; NaN where no row has a
    value), mm: an exact aggregate (per-partition sums and counts in Spark, added on the driver)."""

    def partial_sums(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        rows, sums, counts, t_min, t_max = 0, None, None, None, None
        for batch in batches:
            series = batch[disp_col].to_numpy()
            if len(series) == 0:
                continue
            lengths = np.fromiter((len(s) for s in series), dtype=np.int64, count=len(series))
            lo, hi = int(lengths.min()), int(lengths.max())
            t_min = lo if t_min is None else min(t_min, lo)
            t_max = hi if t_max is None else max(t_max, hi)
            rows += len(series)
            if t_min != t_max:
                continue  # ragged: the driver reports it
            x = np.stack(series).astype(np.float64, copy=False)
            valid = ~np.isnan(x)
            s, c = np.where(valid, x, 0.0).sum(axis=0), valid.sum(axis=0)
            sums, counts = (s, c) if sums is None else (sums + s, counts + c)
        if rows:
            ok = t_min == t_max
            yield pd.DataFrame({"rows": [rows], "t_min": [t_min], "t_max": [t_max],
                                "sums": [sums if ok else None], "counts": [counts if ok else None]})

    parts = pixels.select(disp_col).mapInPandas(partial_sums, _EPOCH_SUMS_SCHEMA).collect()
    if not parts:
        return np.zeros(0)
    t_min, t_max = min(p["t_min"] for p in parts), max(p["t_max"] for p in parts)
    if t_min != t_max or t_min == 0:
        raise InputError(f"pixels: column {disp_col} must hold series of one length >= 1 (aligned with "
                         f"the epochs); found lengths {t_min} to {t_max}")
    sums = np.sum([np.asarray(p["sums"], dtype=np.float64) for p in parts], axis=0)
    counts = np.sum([np.asarray(p["counts"], dtype=np.int64) for p in parts], axis=0)
    mean = np.full(t_min, np.nan)
    np.divide(sums, counts, out=mean, where=counts > 0)
    return mean


def _pair_bins(spark: SparkSession, pixels: DataFrame, draws: list[_Draw], epoch_mean: np.ndarray,
               cfg: CovariogramConfig) -> DataFrame:
    """Per-bin (bin, pairs, cov_sum, drawn) of the drawn pairs, summed in Spark; the row with a null
    bin carries the number of pairs drawn."""
    seed = F.lit(int(cfg.seed))
    entries = _participants(pixels, draws, cfg.seed)
    a = entries.select(*[F.col(c).alias(f"a_{c}") for c in entries.columns])
    b = entries.select(*[F.col(c).alias(f"b_{c}") for c in entries.columns])
    pairs = a.join(b, (a.a_kind == b.b_kind) & (a.a_cell == b.b_cell) & (a.a_slot == b.b_slot)
                   & (a.a_pixel_id < b.b_pixel_id))
    keep_share = F.lit(draws[0].keep)
    for kind_id, draw in enumerate(draws[1:], start=1):
        keep_share = F.when(F.col("a_kind") == kind_id, F.lit(draw.keep)).otherwise(keep_share)
    u = F.pmod(F.xxhash64(seed, F.lit("keep"), F.col("a_kind"), F.col("a_pixel_id"), F.col("b_pixel_id")),
               F.lit(_KEEP_RESOLUTION))
    pairs = pairs.where(u < keep_share * _KEEP_RESOLUTION).select(
        "a_lon", "a_lat", "a_disp", "b_lon", "b_lat", "b_disp")

    bin_km, max_km = float(cfg.bin_km), float(cfg.max_distance_km)
    n_bins = _n_bins(bin_km, max_km)
    mean = np.asarray(epoch_mean, dtype=np.float64)

    def bin_pairs(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        counts, sums, drawn = np.zeros(n_bins, dtype=np.int64), np.zeros(n_bins), 0
        for batch in batches:
            if len(batch) == 0:
                continue
            da = np.stack(batch["a_disp"].to_numpy()).astype(np.float64) - mean
            db = np.stack(batch["b_disp"].to_numpy()).astype(np.float64) - mean
            cov = _pair_covariance(da, db)
            dist_km = haversine_m(batch["a_lon"].to_numpy(), batch["a_lat"].to_numpy(),
                                  batch["b_lon"].to_numpy(), batch["b_lat"].to_numpy()) / 1000.0
            c, s = _bin_sums(dist_km, cov, bin_km, max_km)
            counts += c
            sums += s
            drawn += len(batch)
        if drawn:
            nz = np.nonzero(counts)[0]
            yield pd.DataFrame({"bin": pd.array(list(nz) + [None], dtype="Int32"),
                                "pairs": np.append(counts[nz], 0), "cov_sum": np.append(sums[nz], 0.0),
                                "drawn": np.append(np.zeros(len(nz), dtype=np.int64), drawn)})

    return (pairs.mapInPandas(bin_pairs, _BIN_SUMS_SCHEMA)
            .groupBy("bin").agg(F.sum("pairs").alias("pairs"), F.sum("cov_sum").alias("cov_sum"),
                                F.sum("drawn").alias("drawn")))


# ----------------------------------------------------------------------------------------------
# figure


def plot_covariogram(bins: pd.DataFrame, correlation_length_km: float, path, fraction: float = 0.5) -> Path:
    """Write a PNG of covariance (mm**2) against distance (km) to ``path``, with the level
    ``fraction`` x the first bin's covariance and the correlation length marked. Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    d, c = bins["distance_km"].to_numpy(), bins["covariance"].to_numpy()
    ax.plot(d, c, "o-", ms=3, lw=1, color="tab:blue", label="covariance")
    ax.axhline(0.0, color="0.6", lw=0.8)
    if len(c) and c[0] > 0:
        ax.axhline(fraction * c[0], color="tab:orange", ls="--", lw=1,
                   label=f"{fraction:g} x first bin ({fraction * c[0]:.3g} mm²)")
    if np.isfinite(correlation_length_km):
        ax.axvline(correlation_length_km, color="tab:red", ls=":", lw=1.2,
                   label=f"correlation length {correlation_length_km:.2f} km")
    ax.set_xlabel("distance (km)")
    ax.set_ylabel("covariance (mm²)")
    ax.set_title(f"Displacement co-variogram ({int(bins['pairs'].sum()) if len(bins) else 0:,} pairs)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
