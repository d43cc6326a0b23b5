"""Benchmark: insarlake.spatial.dbscan_with_stats against scikit-learn DBSCAN and Sedona's DBSCAN.

All three run on the same points in one process. Ours runs on Spark (local[2]) and is timed from the
call to the materialised result (a ``noop`` write of every result column, which runs the final lazy
join), after an untimed warm-up call on a small subset (JVM code generation, Python workers, numba
cache). scikit-learn ``DBSCAN(eps=eps_m / R, metric="haversine", algorithm="ball_tree", n_jobs)``
runs once per group on [lat, lon] in radians; its fit times are summed, and a second row adds the
``toPandas`` of the points it needs. Sedona's ``dbscan(..., use_spheroid=True)`` runs once per group and
is timed to its persisted result (``persist`` + ``count``). It needs GraphFrames (``org.graphframes``):
sedona-spark-shaded-4.0_2.13-1.8.0 (the jar ``make setup`` fetches) bundles it, and GraphX ships with
pyspark; with Sedona jars that lack it, pass the GraphFrames jars with ``--graphframes-jars`` (or
$INSARLAKE_GRAPHFRAMES_JARS). When the class cannot be loaded, Sedona is skipped with a one-line note.

    .venv/bin/python benchmarks/dbscan.py [--n 200000 --groups 4 --eps-m 100 --min-samples 10]
    .venv/bin/python benchmarks/dbscan.py --n 50000
    .venv/bin/python benchmarks/dbscan.py --no-sedona              # Sedona's DBSCAN is slow on large n
    .venv/bin/python benchmarks/dbscan.py --graphframes-jars /path/graphframes-spark4_2.13-0.10.0.jar,/path/graphframes-graphx-spark4_2.13-0.10.0.jar

Ours must equal scikit-learn exactly: same core points, same partition of the cores into clusters,
same noise; border points (non-core, within eps of a core) may sit in a different cluster (ours:
nearest core; scikit-learn: whichever cluster reached them first), and their count is reported. The
script exits 1 otherwise. Sedona measures distance on the WGS84 spheroid, not on the sphere of radius
R = 6,371,008.8 m, so points at the eps boundary may differ: their number is reported, not checked.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

log = logging.getLogger("bench.dbscan")


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="number of points")
    p.add_argument("--groups", type=int, default=4, help="number of group labels (like TSKM labels)")
    p.add_argument("--eps-m", type=float, default=100.0, help="DBSCAN radius, great-circle metres")
    p.add_argument("--min-samples", type=int, default=10, help="points within eps (itself included) of a core")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-points-per-tile", type=int, default=200_000, help="ours: adaptive geohash tile size")
    p.add_argument("--sklearn-jobs", type=int, default=-1, help="scikit-learn n_jobs (-1: all CPUs)")
    p.add_argument("--no-warmup", action="store_true", help="time ours cold (first Spark jobs of the JVM)")
    p.add_argument("--graphframes-jars", default=os.environ.get("INSARLAKE_GRAPHFRAMES_JARS"),
                   help="comma-separated GraphFrames jars (graphframes-spark4_2.13 and graphframes-graphx-spark4_2.13) "
                        "for Sedona's DBSCAN, added to the Sedona/Delta jars; only needed when the Sedona jar does "
                        "not bundle org.graphframes (the 1.8.0 shaded jar does); default $INSARLAKE_GRAPHFRAMES_JARS")
    p.add_argument("--no-sedona", action="store_true", help="do not run Sedona's DBSCAN")
    p.add_argument("--shuffle-partitions", type=int, default=8)
    p.add_argument("--driver-memory", default="8g")
    return p.parse_args()


# ---------------------------------------------------------------------------------------------
# data

def insar_points(n: int, groups: int, seed: int) -> pd.DataFrame:
    """InSAR-like persistent scatterers over ~30 x 30 km around (11.0 E, 45.0 N): 70 % in 6 urban
    Gaussian patches (standard deviation 1-2 km, random weights), 30 % uniform countryside; a random
    group label per point (unequal shares, like TSKM labels); ids "P0000000".. in shuffled order."""
    rng = np.random.default_rng(seed)
    lon0, lat0, half_km = 11.0, 45.0, 15.0
    km_lat = 111.195                      # km per degree of latitude on the sphere
    km_lon = km_lat * np.cos(np.radians(lat0))
    n_urban = int(round(0.7 * n))
    patches = 6
    centre = rng.uniform(-0.7 * half_km, 0.7 * half_km, (patches, 2))
    sigma = rng.uniform(1.0, 2.0, patches)
    which = rng.choice(patches, n_urban, p=rng.dirichlet(np.full(patches, 3.0)))
    xy_urban = centre[which] + sigma[which, None] * rng.standard_normal((n_urban, 2))
    xy_rural = rng.uniform(-half_km, half_km, (n - n_urban, 2))
    xy = np.concatenate([xy_urban, xy_rural])
    order = rng.permutation(n)
    xy = xy[order]
    label = rng.choice(groups, n, p=rng.dirichlet(np.full(groups, 4.0)))
    ids = np.char.add("P", np.char.zfill(rng.permutation(n).astype(str), 7))
    return pd.DataFrame({"pixel_id": ids, "lon": lon0 + xy[:, 0] / km_lon, "lat": lat0 + xy[:, 1] / km_lat,
                         "label": label.astype(np.int32)})


# ---------------------------------------------------------------------------------------------
# comparison

def compare(cluster: np.ndarray, core: np.ndarray, peer: np.ndarray, peer_core: np.ndarray) -> dict:
    """Ours (cluster, -1 = noise; core flags) against a peer on the same points (one group).

    core_diff / noise_diff: points whose core / noise flag differs; partition_equal: the cores (when
    the core sets agree) fall into the same sets; border_diff: border points (clustered, non-core in
    both) whose peer cluster is not the one matched to ours through the cores; differ: points that
    disagree in any way, clusters matched one-to-one by largest overlap."""
    core_diff = int(np.sum(core != peer_core))
    noise_diff = int(np.sum((cluster < 0) != (peer < 0)))
    both = core & peer_core
    pairs = pd.DataFrame({"a": cluster[both], "b": peer[both]}).drop_duplicates()
    partition_equal = bool(core_diff == 0 and pairs["a"].is_unique and pairs["b"].is_unique)
    # one-to-one matching by largest overlap over all clustered points (cores weigh the same as borders)
    inside = (cluster >= 0) & (peer >= 0)
    table = (pd.DataFrame({"a": cluster[inside], "b": peer[inside]}).value_counts()
             .sort_values(ascending=False, kind="stable"))
    match, used = {}, set()
    for (a, b), _ in table.items():
        if a not in match and b not in used:
            match[a] = b
            used.add(b)
    mapped = pd.Series(cluster).map(match).to_numpy()
    same_cluster = np.where(cluster < 0, peer < 0, mapped == peer)
    border = inside & ~core & ~peer_core
    border_diff = int(np.sum(border & ~same_cluster))
    differ = int(np.sum(~same_cluster | (core != peer_core)))
    return {"core_diff": core_diff, "noise_diff": noise_diff, "partition_equal": partition_equal,
            "border_diff": border_diff, "differ": differ}


def merge_cmp(parts: list[dict]) -> dict:
    return {"core_diff": sum(p["core_diff"] for p in parts), "noise_diff": sum(p["noise_diff"] for p in parts),
            "partition_equal": all(p["partition_equal"] for p in parts),
            "border_diff": sum(p["border_diff"] for p in parts), "differ": sum(p["differ"] for p in parts)}


# ---------------------------------------------------------------------------------------------
# runs

def session(args, lake: str):
    from insarlake import jars
    from insarlake.config import load_config
    from insarlake.spark import get_session

    overrides = [f"lake.path={lake}", "spark.master=local[2]", f"spark.shuffle_partitions={args.shuffle_partitions}",
                 f"spark.driver_memory={args.driver_memory}", "spark.conf={spark.ui.enabled: 'false'}"]
    if args.graphframes_jars:
        extra = [str(Path(j).resolve()) for j in args.graphframes_jars.split(",") if j.strip()]
        missing = [j for j in extra if not Path(j).is_file()]
        if missing:
            sys.exit(f"--graphframes-jars: not found: {', '.join(missing)}")
        # spark.jars="auto" resolves to the Sedona/Delta jars in .jars/spark-x.y; an explicit list replaces
        # it, so give the full list: those jars plus GraphFrames.
        overrides.append("spark.jars=" + ",".join(jars.local_jars(".jars") + extra))
    spark = get_session(load_config(overrides=overrides))
    spark.sparkContext.setCheckpointDir(str(Path(lake) / "checkpoints"))   # Sedona's DBSCAN and GraphFrames
    return spark


def graphframes_available(spark) -> bool:
    """Whether the driver JVM can load org.graphframes.GraphFrame (Sedona's DBSCAN needs it)."""
    try:
        loader = spark._jvm.java.lang.Thread.currentThread().getContextClassLoader()
        loader.loadClass("org.graphframes.GraphFrame")
        return True
    except Exception:   # noqa: BLE001 - py4j wraps ClassNotFoundException
        return False


def run_ours(spark, df, args):
    from insarlake.spatial import dbscan_with_stats

    if not args.no_warmup:
        t0 = time.perf_counter()
        small, _ = dbscan_with_stats(df.limit(5000), args.eps_m, args.min_samples, group_col="label",
                                     max_points_per_tile=args.max_points_per_tile)
        small.write.format("noop").mode("overwrite").save()
        log.info("ours: warm-up on 5000 points in %.1f s (not timed)", time.perf_counter() - t0)
    t0 = time.perf_counter()
    out, stats = dbscan_with_stats(df, args.eps_m, args.min_samples, group_col="label",
                                   max_points_per_tile=args.max_points_per_tile)
    t_call = time.perf_counter() - t0
    out.write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - t0
    log.info("ours: %s", stats)
    res = out.select("pixel_id", "cluster_id", "is_core").toPandas().set_index("pixel_id")
    return seconds, seconds - t_call, stats, res


def run_sklearn(pdf, args):
    from sklearn.cluster import DBSCAN
    from joblib import effective_n_jobs

    from insarlake.geo import EARTH_RADIUS_M

    labels = np.full(len(pdf), -1, np.int64)
    core = np.zeros(len(pdf), bool)
    fit_s, offset = 0.0, 0
    for g in sorted(pdf["label"].unique()):
        idx = np.flatnonzero(pdf["label"].to_numpy() == g)
        X = np.radians(pdf[["lat", "lon"]].to_numpy()[idx])
        t0 = time.perf_counter()
        model = DBSCAN(eps=args.eps_m / EARTH_RADIUS_M, min_samples=args.min_samples, metric="haversine",
                       algorithm="ball_tree", n_jobs=args.sklearn_jobs).fit(X)
        fit_s += time.perf_counter() - t0
        lab = model.labels_.astype(np.int64)
        labels[idx] = np.where(lab >= 0, lab + offset, -1)
        core[idx[model.core_sample_indices_]] = True
        offset += int(lab.max()) + 1 if (lab >= 0).any() else 0
    return fit_s, labels, core, effective_n_jobs(args.sklearn_jobs)


def run_sedona(spark, df, args):
    from pyspark.sql import functions as F
    from sedona.spark.stats.clustering.dbscan import dbscan

    total, parts = 0.0, []
    for g in sorted(r["label"] for r in df.select("label").distinct().collect()):
        pts = df.where(F.col("label") == g).select("pixel_id", F.expr("ST_Point(lon, lat)").alias("geometry"))
        t0 = time.perf_counter()
        res = dbscan(pts, args.eps_m, args.min_samples, use_spheroid=True, include_outliers=True,
                     is_core_column_name="isCore", cluster_column_name="cluster")
        res = res.select("pixel_id", "isCore", "cluster").persist()
        res.count()
        total += time.perf_counter() - t0
        part = res.toPandas()
        part["cluster"] = part["cluster"].astype(np.int64)
        part["group"] = g
        parts.append(part)
        res.unpersist()
    return total, pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------------------------

def main():
    args = _parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    pdf = insar_points(args.n, args.groups, args.seed)
    lake = tempfile.mkdtemp(prefix="insarlake_bench_dbscan_")
    try:
        spark = session(args, lake)
        # The points reach Spark through Parquet (as from a table), cached in memory before any timing.
        pdf.to_parquet(Path(lake) / "points.parquet", index=False)
        df = spark.read.parquet(str(Path(lake) / "points.parquet")).cache()
        df.count()
        per_group = pdf["label"].value_counts().sort_index()
        print(f"data: InSAR-like points (seed {args.seed}); n={args.n} groups={args.groups} "
              f"(sizes {', '.join(str(v) for v in per_group.to_numpy())}); 70% in 6 urban patches (sd 1-2 km), "
              f"30% uniform over 30 x 30 km at 45 N; eps={args.eps_m:g} m min_samples={args.min_samples}; "
              f"Spark {spark.version} local[2], {os.cpu_count()} CPUs")

        ours_s, join_s, stats, res = run_ours(spark, df, args)
        res = res.loc[pdf["pixel_id"]]
        cluster = res["cluster_id"].to_numpy(np.int64)
        core = res["is_core"].to_numpy(bool)

        t0 = time.perf_counter()
        points = df.select("lat", "lon", "label").toPandas()
        collect_s = time.perf_counter() - t0
        assert len(points) == len(pdf)
        sk_s, sk_labels, sk_core, jobs = run_sklearn(pdf, args)
        groups = pdf["label"].to_numpy()
        cmp_sk = merge_cmp([compare(cluster[groups == g], core[groups == g], sk_labels[groups == g],
                                    sk_core[groups == g]) for g in np.unique(groups)])
        identical = cmp_sk["core_diff"] == 0 and cmp_sk["noise_diff"] == 0 and cmp_sk["partition_equal"]

        sedona_line, sedona_row, sedona_failed = None, None, False
        if args.no_sedona:
            sedona_line = "sedona dbscan: skipped (--no-sedona)"
        elif graphframes_available(spark):
            try:
                sed_s, sed = run_sedona(spark, df, args)
                sed = sed.set_index("pixel_id").loc[pdf["pixel_id"]]
                sl, sc = sed["cluster"].to_numpy(np.int64), sed["isCore"].to_numpy(bool)
                cmp_sed = merge_cmp([compare(cluster[groups == g], core[groups == g], sl[groups == g],
                                             sc[groups == g]) for g in np.unique(groups)])
                sedona_row = ("sedona dbscan (use_spheroid=True, GraphFrames)", sed_s,
                              int(sum(len(np.unique(sl[(groups == g) & (sl >= 0)])) for g in np.unique(groups))),
                              int(sc.sum()), int((sl < 0).sum()))
                sedona_line = (f"sedona vs ours (WGS84 spheroid vs sphere, not checked): {cmp_sed['differ']} points "
                               f"differ (core flag {cmp_sed['core_diff']}, noise flag {cmp_sed['noise_diff']}, "
                               f"border cluster {cmp_sed['border_diff']}); core partition equal: "
                               f"{cmp_sed['partition_equal']}")
            except Exception as exc:   # noqa: BLE001 - report and go on; the exit status says it failed
                sedona_failed = True
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.exception("sedona dbscan failed")
                sedona_line = f"sedona dbscan: failed — {type(exc).__name__}: {first[:300]}"
        else:
            sedona_line = ("sedona dbscan: skipped — GraphFrames jar not available (org.graphframes.GraphFrame is "
                           "not on the classpath; pass --graphframes-jars graphframes-spark4_2.13-0.x.jar,"
                           "graphframes-graphx-spark4_2.13-0.x.jar or set INSARLAKE_GRAPHFRAMES_JARS)")

        print(f"ours vs scikit-learn: identical={identical} (core flag differs {cmp_sk['core_diff']}, noise flag "
              f"differs {cmp_sk['noise_diff']}, core partition equal {cmp_sk['partition_equal']}); border points in "
              f"another cluster: {cmp_sk['border_diff']} of {int(((cluster >= 0) & ~core).sum())}")
        print(sedona_line)
        print()
        sk_clusters = int(sum(len(np.unique(sk_labels[(groups == g) & (sk_labels >= 0)])) for g in np.unique(groups)))
        rows = [("insarlake dbscan_with_stats (Spark local[2])", ours_s, stats.tiles, stats.clusters, stats.cores,
                 stats.noise),
                (f"sklearn DBSCAN ball_tree n_jobs={jobs}, fit only", sk_s, None, sk_clusters, int(sk_core.sum()),
                 int((sk_labels < 0).sum())),
                (f"sklearn DBSCAN ball_tree n_jobs={jobs} + toPandas", sk_s + collect_s, None, sk_clusters,
                 int(sk_core.sum()), int((sk_labels < 0).sum()))]
        if sedona_row:
            name, sec, ncl, ncore, nnoise = sedona_row
            rows.append((name, sec, None, ncl, ncore, nnoise))
        print(f"{'method':50s} {'points':>8s} {'tiles':>6s} {'seconds':>8s} {'ratio':>7s} {'clusters':>8s} "
              f"{'cores':>8s} {'noise':>8s}")
        for name, sec, tiles, ncl, ncore, nnoise in rows:
            print(f"{name:50s} {args.n:8d} {'' if tiles is None else tiles:>6} {sec:8.2f} {sec / ours_s:6.2f}x "
                  f"{ncl:8d} {ncore:8d} {nnoise:8d}")
        steps = ", ".join(f"{k} {v:.2f}" for k, v in stats.seconds.items())
        print(f"ratio: this row's seconds / ours. Ours, where the time goes (wall s): {steps}, final join + noop write "
              f"{join_s:.2f}; total {ours_s:.2f}. Tiles {stats.tiles} at geohash precision "
              f"{stats.tile_precision[0]}..{stats.tile_precision[1]}, local rows {stats.local_rows} "
              f"({stats.local_rows / max(stats.points, 1):.2f} per point with halos). toPandas of the points "
              f"{collect_s:.2f} s; load average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        spark.stop()
    finally:
        shutil.rmtree(lake, ignore_errors=True)
    if not identical:
        sys.exit(1)
    if sedona_failed:
        sys.exit(2)


if __name__ == "__main__":
    main()
