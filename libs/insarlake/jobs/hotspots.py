"""Deformation hotspots: candidates from the classifier's predicted clusters (or the DBSCAN clusters),
standard distance and standard-deviation ellipse of each, retention with reasons → `hotspots` and
`hotspot_pixels`; hotspots.geojson, the hotspot map and the mean series of each hotspot; on simulated
scenes, scores against `truth` for every method of hotspots.score_methods → `hotspot_scores`.

    ./spark-submit.sh jobs/hotspots.py --dataset demo
    ./spark-submit.sh jobs/hotspots.py --dataset demo --set hotspots.method=seed
"""
import argparse
import logging
import sys

from insarlake.cli import datasets_or_all, job_parser, run_job, start_job
from insarlake.hotspots.stage import run_hotspots
from insarlake.lake import recorded_run

log = logging.getLogger("insarlake.jobs.hotspots")


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments (also parsed, without Spark, by the deployment tests)."""
    parser = job_parser("hotspots", __doc__)
    return parser


def main(argv=None) -> int:
    args, config, spark = start_job(build_parser(), argv)
    for dataset in datasets_or_all(spark, config, args.dataset):
        with recorded_run(spark, config, "hotspots", [dataset]) as run:
            result = run_hotspots(spark, config, dataset, run)
        log.info("dataset %s: %d of %d candidates retained (%s); pictures in %s", dataset, result.retained,
                 result.candidates, result.method, result.outputs)
    return 0


def entry() -> None:
    """The console script insarlake-hotspots (the wheel's entry point): exits with main's status."""
    sys.exit(run_job(main))


if __name__ == "__main__":
    entry()
