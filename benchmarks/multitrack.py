"""Benchmark: a mosaic of bursts and tracks (issue 19) — the overlap rule's duplicates against the
planted ones, a mixed-track dataset before (one pool) and after (one dataset per track), and the
east / up velocity of the site against the known motion.

The mosaic is tests/mosaic.py's: the real EGMS burst (track 22, descending) with a 500 m disk moving
east 8 mm/yr and up -15 mm/yr added, a simulated adjacent burst of track 22 re-measuring the real
burst's northern 330 m (twins: 1 mm noise; controls: 10 mm noise, not twins) plus 1 km of new ground,
and a simulated ascending track 117 over the same ground on other dates. Each dataset runs
ingest -> cluster (TSKM cut to k = 3 on 300 series) -> hotspots (labels = DBSCAN clusters, fixed eps as in the test), then sites, in
one Spark session. "Before" is the same input as one pool (``ingest.split_tracks`` false): with the
default ``ingest.max_missing_share`` every pixel is quarantined (each track misses the other's
dates); with it raised to 0.6 the pool is analysed and its hotspots mix the two tracks.

    .venv/bin/python benchmarks/multitrack.py [--seeds 19 20 21]
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import zipfile
from insarlake.config import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))
sys.path.insert(0, str(ROOT / "tests"))
EGMS_ZIP = ROOT.parent / "shared" / "data" / "egms" / "EGMS_L2b_022_0845_IW2_VV_2020_2024_1.zip"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[19, 20, 21])
    p.add_argument("--lake", default=None, help="lake folder (default: a new temporary folder)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from pyspark.sql import functions as F

    from insarlake.config import load_config
    from insarlake.hotspots.stage import run_hotspots
    from insarlake.ingest.stage import run_ingest
    from insarlake.lake import Run, read_table, run_results
    from insarlake.sites.stage import run_sites
    from insarlake.spark import get_session
    from insarlake.cluster.stage import run_cluster
    from mosaic import EAST_MM_YR, UP_MM_YR, write_mosaic

    burst = zipfile.ZipFile(EGMS_ZIP).read(EGMS_ZIP.with_suffix(".csv").name)
    lake = Path(args.lake or tempfile.mkdtemp(prefix="bench-multitrack-"))
    config = load_config(ROOT / "conf" / "local.yaml", overrides=[
        f"lake.path={lake}", "spark.master=local[2]", "spark.conf={spark.ui.enabled: 'false'}",
        "temporal.k=3", "temporal.sample_size=300", "temporal.silhouette_size=300", "temporal.max_iter=2",
        "temporal.max_iter_barycenter=2", "spatial.eps_m=300",
        "hotspots.labels=clusters", "hotspots.eps_m=150", "hotspots.max_standard_distance_km=2.0"])
    spark = get_session(config)

    def analyse(cfg, dataset):
        run_cluster(spark, cfg, dataset, Run("cluster", cfg))
        run_hotspots(spark, cfg, dataset, Run("hotspots", cfg))

    def tracks_per_hotspot(cfg, dataset):
        members = (run_results(spark, cfg, "hotspots", dataset).where("retained").select("hotspot_id")
                   .join(run_results(spark, cfg, "hotspot_pixels", dataset), "hotspot_id")
                   .join(read_table(spark, cfg, "pixels", [dataset]).select("pixel_id", "track"), "pixel_id")
                   .groupBy("hotspot_id").agg(F.countDistinct("track").alias("n")).toPandas())
        return len(members), int((members.n > 1).sum())

    print(f"{'seed':>4} {'input':>6} {'planted':>7} {'found':>5} {'right':>5} {'ctrl':>4} {'overlap s':>9} "
          f"{'pool q':>6} {'pool hot':>8} {'mixed':>5} {'sites':>5} {'2-geom':>6} "
          f"{'east':>14} {'up':>15} {'err E':>6} {'err U':>6}")
    for seed in args.seeds:
        folder = lake / "raw" / f"mosaic{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        truth = write_mosaic(folder, burst, seed=seed)
        name = f"m{seed}"
        run = Run("ingest", config)
        t0 = time.perf_counter()
        result = run_ingest(spark, config, str(folder), name, run)
        pixels = read_table(spark, config, "pixels", [f"{name}-t022"]).select("pixel_id", "duplicate_of").toPandas()
        flagged = pixels[pixels.duplicate_of.notna()]
        copies = flagged[flagged.pixel_id.str.startswith("B")]
        right = int((copies.duplicate_of == copies.pixel_id.str[1:]).sum())
        control = len(set(flagged.pixel_id) & truth["control"])

        pooled = replace(config, ingest=replace(config.ingest, split_tracks=False))
        pool_default = run_ingest(spark, pooled, str(folder), f"{name}pool", Run("ingest", pooled))
        lenient = replace(pooled, ingest=replace(pooled.ingest, max_missing_share=0.6))
        run_ingest(spark, lenient, str(folder), f"{name}pool", Run("ingest", lenient))
        analyse(lenient, f"{name}pool")
        pool_hotspots, pool_mixed = tracks_per_hotspot(lenient, f"{name}pool")

        for dataset in result.datasets:
            analyse(config, dataset)
        sites = run_sites(spark, config, name, Run("sites", config))
        table = run_results(spark, config, "sites", name).where("up_mm_yr IS NOT NULL").toPandas()
        for site in table.itertuples():
            print(f"{seed:>4} {result.input_rows:>6} {len(truth['twins']):>7} {result.duplicates:>5} {right:>5} "
                  f"{control:>4} {run.seconds['ingest.overlap']:>9.1f} {pool_default.quarantined:>6} "
                  f"{pool_hotspots:>8} {pool_mixed:>5} {sites.sites:>5} {sites.multi_geometry_sites:>6} "
                  f"{site.east_mm_yr:>6.2f} ± {site.east_std_mm_yr:<5.2f} {site.up_mm_yr:>7.2f} ± {site.up_std_mm_yr:<5.2f} "
                  f"{site.east_mm_yr - EAST_MM_YR:>6.2f} {site.up_mm_yr - UP_MM_YR:>6.2f}")
        print(f"     seed {seed}: {time.perf_counter() - t0:.0f} s in all; background (real burst in "
              f"the disk) {truth['desc_background_mm_yr']:.2f} mm/yr LOS", flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
