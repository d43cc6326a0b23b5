"""Benchmark: insarlake.spatial.dbscan_with_stats on millions of points in one dense metro area (skew and scale).

The points are generated in Spark (``spark.range`` and seeded ``rand``/``randn`` expressions, so the
driver never holds them), written to Parquet, read back, clustered, and the result is written to
Parquet and reconciled against the input (row count, every id exactly once, clusters / cores / noise
against the stats). Wall seconds per step and peak resident memory (RSS) are measured: the Spark
driver JVM, the Python workers (``pyspark.daemon`` and the workers it forks: summed and the largest
one) and this Python driver, sampled every 0.5 s by a background thread (psutil).

    .venv/bin/python benchmarks/dbscan_metro.py [--n 5000000 --groups 3 --eps-m 50 --min-samples 20]
    .venv/bin/python benchmarks/dbscan_metro.py --n 500000
    .venv/bin/python benchmarks/dbscan_metro.py --max-points-per-tile 50000

Data: a 2-D Gaussian mixture over ~40 x 40 km around (9.19 E, 45.46 N): a city core (30 %, standard
deviation 2.5 km, ~40,000 points per km2 at its peak for 5 million points), 8 district centres (35 %,
0.6-1.5 km), suburbs (25 %, 7 km) and a uniform background (10 %); ``--groups`` labels with unequal
shares (like TSKM labels), each clustered on its own. Exits 1 when the reconciliation fails.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))

log = logging.getLogger("bench.dbscan_metro")

LON0, LAT0 = 9.19, 45.464
KM_LAT = 111.195   # km per degree of latitude on the sphere of radius 6,371,008.8 m


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5_000_000, help="number of points")
    p.add_argument("--groups", type=int, default=3, help="number of group labels (like TSKM labels)")
    p.add_argument("--eps-m", type=float, default=50.0, help="DBSCAN radius, great-circle metres")
    p.add_argument("--min-samples", type=int, default=20, help="points within eps (itself included) of a core")
    p.add_argument("--max-points-per-tile", type=int, default=200_000, help="adaptive geohash tile size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default="/tmp/insarlake_metro", help="Parquet files and the Spark lake/checkpoints")
    p.add_argument("--keep", action="store_true", help="keep the Parquet files in --work-dir")
    p.add_argument("--gen-partitions", type=int, default=8, help="Spark partitions (and files) of the points")
    p.add_argument("--shuffle-partitions", type=int, default=8)
    p.add_argument("--driver-memory", default="8g")
    p.add_argument("--sample-s", type=float, default=0.5, help="memory sampling interval (s)")
    return p.parse_args()


# ---------------------------------------------------------------------------------------------
# memory sampling

class MemorySampler(threading.Thread):
    """Peak RSS (bytes) of the driver JVM, of the Python workers (summed, and the largest one) and of
    this process, overall and per named step, sampled every ``interval`` seconds."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.step = "start"
        self.peak: dict[str, dict[str, int]] = {}
        self.samples = 0
        self._halt = threading.Event()
        self._me = psutil.Process()

    def _sample(self) -> dict[str, int]:
        jvm = workers_sum = workers_max = n_workers = 0
        for proc in self._me.children(recursive=True):
            try:
                name = proc.name()
                rss = proc.memory_info().rss
                cmd = " ".join(proc.cmdline()) if name != "java" else ""
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if name == "java":
                jvm = max(jvm, rss)
            elif "pyspark.daemon" in cmd or "pyspark.worker" in cmd:
                workers_sum += rss
                workers_max = max(workers_max, rss)
                n_workers += 1
        return {"jvm": jvm, "workers_sum": workers_sum, "worker_max": workers_max, "workers": n_workers,
                "driver_py": self._me.memory_info().rss}

    def run(self):
        while not self._halt.is_set():
            try:
                now = self._sample()
            except Exception:   # noqa: BLE001 - sampling must never kill the run
                log.debug("memory sample failed", exc_info=True)
            else:
                self.samples += 1
                for key in ("all", self.step):
                    peak = self.peak.setdefault(key, {})
                    for k, v in now.items():
                        peak[k] = max(peak.get(k, 0), v)
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()


# ---------------------------------------------------------------------------------------------
# data

def metro_points(spark, n: int, groups: int, seed: int, partitions: int):
    """(DataFrame pixel_id, lon, lat, label, description) generated in Spark."""
    from pyspark.sql import functions as F

    rng = np.random.default_rng(seed)
    # (weight, centre x km, centre y km, sd km); the last component is the uniform background
    comps = [(0.30, 0.0, 0.0, 2.5)]
    district_w = rng.dirichlet(np.full(8, 3.0)) * 0.35
    for w in district_w:
        comps.append((float(w), *rng.uniform(-14.0, 14.0, 2).tolist(), float(rng.uniform(0.6, 1.5))))
    comps.append((0.25, 0.0, 0.0, 7.0))
    background_w = 0.10
    cum = np.cumsum([c[0] for c in comps])
    group_cum = np.cumsum(rng.dirichlet(np.full(groups, 4.0)))

    u = F.rand(seed * 10 + 1)
    comp = F.lit(len(comps))                      # background
    for k in range(len(comps) - 1, -1, -1):
        comp = F.when(u < float(cum[k]), F.lit(k)).otherwise(comp)
    cx = F.element_at(F.array(*[F.lit(c[1]) for c in comps] + [F.lit(0.0)]), comp + 1)
    cy = F.element_at(F.array(*[F.lit(c[2]) for c in comps] + [F.lit(0.0)]), comp + 1)
    sd = F.element_at(F.array(*[F.lit(c[3]) for c in comps] + [F.lit(0.0)]), comp + 1)
    is_bg = comp == len(comps)
    x = F.when(is_bg, F.rand(seed * 10 + 2) * 40.0 - 20.0).otherwise(cx + sd * F.randn(seed * 10 + 3))
    y = F.when(is_bg, F.rand(seed * 10 + 4) * 40.0 - 20.0).otherwise(cy + sd * F.randn(seed * 10 + 5))
    v = F.rand(seed * 10 + 6)
    label = F.lit(groups - 1)
    for g in range(groups - 2, -1, -1):
        label = F.when(v < float(group_cum[g]), F.lit(g)).otherwise(label)
    km_lon = KM_LAT * np.cos(np.radians(LAT0))
    df = (spark.range(0, n, 1, partitions)
          .withColumn("_comp", comp).withColumn("_x", x).withColumn("_y", y)
          .select(F.format_string("M%09d", "id").alias("pixel_id"),
                  (F.lit(LON0) + F.col("_x") / km_lon).alias("lon"),
                  (F.lit(LAT0) + F.col("_y") / KM_LAT).alias("lat"),
                  label.cast("int").alias("label")))
    peak = 0.30 * n / (2 * np.pi * 2.5 ** 2) + sum(
        c[0] * n / (2 * np.pi * c[3] ** 2) * np.exp(-(c[1] ** 2 + c[2] ** 2) / (2 * c[3] ** 2)) for c in comps[1:])
    peak += background_w * n / 1600.0
    shares = np.diff(np.concatenate([[0.0], group_cum]))
    what = (f"Gaussian mixture around ({LON0} E, {LAT0} N): core 30% sd 2.5 km, 8 districts 35% sd 0.6-1.5 km, "
            f"suburbs 25% sd 7 km, uniform 10% over 40 x 40 km; density at the centre ~{peak:,.0f} points/km2 "
            f"(all groups); group shares {', '.join(f'{s:.2f}' for s in shares)}")
    return df, what


# ---------------------------------------------------------------------------------------------

def main():
    args = _parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from pyspark.sql import functions as F

    from insarlake.config import load_config
    from insarlake.spark import get_session
    from insarlake.spatial import dbscan_with_stats

    work = Path(args.work_dir)
    points_path, result_path = work / "points", work / "result"
    for path in (points_path, result_path, work / "checkpoints"):
        shutil.rmtree(path, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)

    sampler = MemorySampler(args.sample_s)
    sampler.start()
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()

    def step(name: str, t0: float) -> None:
        seconds[name] = time.perf_counter() - t0
        log.info("%s: %.1f s", name, seconds[name])

    t0 = time.perf_counter()
    sampler.step = "session"
    cfg = load_config(overrides=[f"lake.path={work / 'lake'}", "spark.master=local[2]",
                                 f"spark.shuffle_partitions={args.shuffle_partitions}",
                                 f"spark.driver_memory={args.driver_memory}", "spark.conf={spark.ui.enabled: 'false'}"])
    spark = get_session(cfg)
    spark.sparkContext.setCheckpointDir(str(work / "checkpoints"))
    step("session", t0)

    t0 = time.perf_counter()
    sampler.step = "generate"
    gen, what = metro_points(spark, args.n, args.groups, args.seed, args.gen_partitions)
    gen.write.mode("overwrite").parquet(str(points_path))
    step("generate + write points", t0)

    t0 = time.perf_counter()
    sampler.step = "read"
    df = spark.read.parquet(str(points_path))
    n_in = df.count()
    step("read points + count", t0)
    print(f"data: {n_in:,} points, {args.groups} groups, {what}; eps={args.eps_m:g} m min_samples={args.min_samples} "
          f"max_points_per_tile={args.max_points_per_tile}; Spark {spark.version} local[2], {os.cpu_count()} CPUs, "
          f"driver memory {args.driver_memory}, {args.shuffle_partitions} shuffle partitions")

    t0 = time.perf_counter()
    sampler.step = "dbscan"
    out, stats = dbscan_with_stats(df, args.eps_m, args.min_samples, group_col="label",
                                   max_points_per_tile=args.max_points_per_tile)
    step("dbscan_with_stats call", t0)
    log.info("stats: %s", stats)

    t0 = time.perf_counter()
    sampler.step = "write result"
    out.write.mode("overwrite").parquet(str(result_path))
    step("write result (final join)", t0)

    t0 = time.perf_counter()
    sampler.step = "reconcile"
    res = spark.read.parquet(str(result_path))
    rec = res.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("pixel_id").alias("ids"),
                  F.countDistinct(F.when(F.col("cluster_id") >= 0, F.col("cluster_id"))).alias("clusters"),
                  F.sum(F.col("is_core").cast("long")).alias("cores"),
                  F.sum((F.col("cluster_id") < 0).cast("long")).alias("noise"),
                  F.sum((F.col("is_core") & (F.col("cluster_id") < 0)).cast("long")).alias("core_noise")).first()
    missing = df.join(res, "pixel_id", "left_anti").count()
    sizes = res.where(F.col("cluster_id") >= 0).groupBy("cluster_id").count().agg(
        F.max("count").alias("largest"), F.expr("percentile_approx(count, 0.5)").alias("median")).first()
    step("reconcile", t0)
    sampler.step = "end"
    total = time.perf_counter() - t_all
    sampler.stop()
    disk_in = sum(f.stat().st_size for f in points_path.rglob("*.parquet"))
    disk_out = sum(f.stat().st_size for f in result_path.rglob("*.parquet"))

    checks = {"rows == input": rec["rows"] == n_in, "ids distinct == input": rec["ids"] == n_in,
              "no input id missing": missing == 0, "clusters == stats": rec["clusters"] == stats.clusters,
              "cores == stats": rec["cores"] == stats.cores, "noise == stats": rec["noise"] == stats.noise,
              "no core is noise": rec["core_noise"] == 0, "stats.points == input": stats.points == n_in}
    ok = all(checks.values())
    print(f"reconcile: rows {rec['rows']:,}, distinct ids {rec['ids']:,}, input ids missing {missing}; "
          f"clusters {rec['clusters']:,} (largest {sizes['largest'] or 0:,} points, median {sizes['median'] or 0}), "
          f"cores {rec['cores']:,}, noise {rec['noise']:,}; "
          + ("all checks pass" if ok else "FAILED: " + ", ".join(k for k, v in checks.items() if not v)))
    print(f"ours: tiles {stats.tiles} (geohash precision {stats.tile_precision[0]}..{stats.tile_precision[1]}), "
          f"local rows {stats.local_rows:,} ({stats.local_rows / max(stats.points, 1):.2f} per point with halos); "
          f"Parquet points {disk_in / 2**20:.0f} MiB, result {disk_out / 2**20:.0f} MiB")
    print()
    mib = 2 ** 20
    print(f"{'step':38s} {'wall s':>8s} {'JVM RSS':>9s} {'workers':>9s} {'1 worker':>9s} {'driver py':>9s}"
          "   (peak MiB)")
    names = {"session": "session", "generate + write points": "generate", "read points + count": "read",
             "dbscan_with_stats call": "dbscan", "write result (final join)": "write result", "reconcile": "reconcile"}
    for name, sec in seconds.items():
        pk = sampler.peak.get(names[name], {})
        print(f"{name:38s} {sec:8.1f} {pk.get('jvm', 0) / mib:9.0f} {pk.get('workers_sum', 0) / mib:9.0f} "
              f"{pk.get('worker_max', 0) / mib:9.0f} {pk.get('driver_py', 0) / mib:9.0f}")
        if name == "dbscan_with_stats call":
            for k, v in stats.seconds.items():
                print(f"  {k:36s} {v:8.1f}")
    pk = sampler.peak.get("all", {})
    print(f"{'total':38s} {total:8.1f} {pk.get('jvm', 0) / mib:9.0f} {pk.get('workers_sum', 0) / mib:9.0f} "
          f"{pk.get('worker_max', 0) / mib:9.0f} {pk.get('driver_py', 0) / mib:9.0f}")
    print(f"memory: RSS sampled every {args.sample_s:g} s ({sampler.samples} samples); workers = pyspark.daemon + "
          f"its forked workers summed (forked pages shared copy-on-write are counted in each), at most "
          f"{pk.get('workers', 0)} at once; dbscan + result write "
          f"{n_in / (seconds['dbscan_with_stats call'] + seconds['write result (final join)']):,.0f} points/s; "
          f"load average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    spark.stop()
    if not args.keep:
        for path in (points_path, result_path, work / "checkpoints"):
            shutil.rmtree(path, ignore_errors=True)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
