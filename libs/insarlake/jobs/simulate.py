"""Simulate a realistic InSAR scene with ground truth (config section `simulate`).

Writes the scene as EGMS L2b CSV files under --output (default <lake>/raw/<dataset>), the input
of jobs/ingest.py, and the pixel → deformation source map to the `truth` table.

    ./spark-submit.sh jobs/simulate.py --dataset demo --set simulate.n_pixels=100000
"""
import argparse
import logging
import sys

from insarlake.cli import job_parser, run_job, start_job
from insarlake.lake import raw_path, recorded_run
from insarlake.simulate.stage import run_simulate

log = logging.getLogger("insarlake.jobs.simulate")


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments (also parsed, without Spark, by the deployment tests)."""
    parser = job_parser("simulate", __doc__)
    parser.add_argument("--output", metavar="PATH", help="folder for the raw CSV (replaced)")
    return parser


def main(argv=None) -> int:
    args, config, spark = start_job(build_parser(), argv)
    dataset = args.dataset or config.dataset
    with recorded_run(spark, config, "simulate", [dataset]) as run:
        result = run_simulate(spark, config, dataset, args.output or raw_path(config, dataset), run)
    log.info("dataset %s: %d pixels x %d epochs, %d sources (%d source pixels) -> %s", dataset,
             result.pixels, result.epochs, result.sources, result.truth_pixels, result.output)
    return 0


def entry() -> None:
    """The console script insarlake-simulate (the wheel's entry point): exits with main's status."""
    sys.exit(run_job(main))


if __name__ == "__main__":
    entry()
