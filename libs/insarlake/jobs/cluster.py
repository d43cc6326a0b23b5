"""Spatio-temporal clustering of a dataset: TSKM label and DBSCAN cluster for every pixel into
`clusters`, and the displacement co-variogram (correlation length) into `covariogram`.

Fits time-series k-means (soft-DTW by default) on a spatially stratified sample, choosing k by the
silhouette, or reuses the dataset's saved model (temporal.reuse_model); assigns every pixel
with the exact soft-DTW kernel on Spark; then runs exact DBSCAN in metres inside each TSKM cluster
(spatial.*; eps defaults to the correlation length) and draws the cluster map.

    ./spark-submit.sh jobs/cluster.py --dataset demo --set temporal.k=5
    ./spark-submit.sh jobs/cluster.py --dataset demo --set spatial.eps_m=800 \
        --set 'spatial.per_label={0: {eps_m: 2000, min_samples: 50}}'
"""
import argparse
import logging
import sys

from insarlake.cli import datasets_or_all, job_parser, run_job, start_job
from insarlake.lake import recorded_run
from insarlake.cluster.stage import run_cluster

log = logging.getLogger("insarlake.jobs.cluster")


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments (also parsed, without Spark, by the deployment tests)."""
    parser = job_parser("cluster", __doc__)
    return parser


def main(argv=None) -> int:
    args, config, spark = start_job(build_parser(), argv)
    for dataset in datasets_or_all(spark, config, args.dataset):
        with recorded_run(spark, config, "cluster", [dataset]) as run:
            result = run_cluster(spark, config, dataset, run)
        log.info("dataset %s: %d pixels in %d TSKM clusters (%s model) and %d DBSCAN clusters, correlation "
                 "length %.2f km; pictures in %s", dataset, result.pixels, result.model.k,
                 "reused" if result.reused_model else "new", int(run.metrics["dbscan_clusters"]),
                 result.correlation_length_km, result.outputs)
    return 0


def entry() -> None:
    """The console script insarlake-cluster (the wheel's entry point): exits with main's status."""
    sys.exit(run_job(main))


if __name__ == "__main__":
    entry()
