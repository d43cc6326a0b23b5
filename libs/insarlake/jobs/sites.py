"""Sites: the retained hotspots of a dataset's viewing geometries (one dataset per track when its
input held several, table `geometries`) linked where their ellipses overlap, with each geometry's
LOS evidence side by side → `site_hotspots`, and per site the east and vertical velocity where
ascending and descending tracks both see it → `sites`.

    ./spark-submit.sh jobs/sites.py --dataset italy        # after the pipeline on a multi-track input
"""
import argparse
import logging
import sys

from insarlake.cli import job_parser, run_job, start_job
from insarlake.errors import InputError
from insarlake.lake import read_table, recorded_run, table_exists
from insarlake.sites.stage import run_sites

log = logging.getLogger("insarlake.jobs.sites")


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments (also parsed, without Spark, by the deployment tests)."""
    return job_parser("sites", __doc__)


def main(argv=None) -> int:
    args, config, spark = start_job(build_parser(), argv)
    if args.dataset:
        datasets = [args.dataset]
    elif table_exists(spark, config, "geometries"):
        datasets = sorted(r.dataset for r in read_table(spark, config, "geometries").select("dataset").distinct().collect())
    else:
        raise InputError(f"lake {config.lake.path}: no geometries table (run jobs/ingest.py first) and no --dataset")
    for dataset in datasets:
        with recorded_run(spark, config, "sites", [dataset]) as run:
            result = run_sites(spark, config, dataset, run)
        log.info("dataset %s: %d sites from %d hotspots of %d geometries (%d seen by several, %d with east/up "
                 "velocities)", dataset, result.sites, result.hotspots, result.geometries,
                 result.multi_geometry_sites, result.decomposed)
    return 0


def entry() -> None:
    """The console script insarlake-sites (the wheel's entry point): exits with main's status."""
    sys.exit(run_job(main))


if __name__ == "__main__":
    entry()
