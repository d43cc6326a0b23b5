"""What changed since the previous run: the retained hotspots on tracks across runs
(`hotspot_tracks`) and the alerts (`alerts`: new, growing, accelerating, merged, split, vanished),
ranked by severity and by the assets of alerts.assets they touch.

    ./spark-submit.sh jobs/alerts.py --dataset demo
    ./spark-submit.sh jobs/alerts.py --dataset demo --set alerts.assets=roads.geojson
"""
import argparse
import logging
import sys

from insarlake.alerts.stage import run_alerts
from insarlake.cli import datasets_or_all, job_parser, run_job, start_job
from insarlake.lake import recorded_run

log = logging.getLogger("insarlake.jobs.alerts")


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments (also parsed, without Spark, by the deployment tests)."""
    return job_parser("alerts", __doc__)


def main(argv=None) -> int:
    args, config, spark = start_job(build_parser(), argv)
    for dataset in datasets_or_all(spark, config, args.dataset):
        with recorded_run(spark, config, "alerts", [dataset]) as run:
            result = run_alerts(spark, config, dataset, run)
        log.info("dataset %s: %d tracks, %d alerts (against run %s)", dataset, result.tracks, len(result.alerts),
                 result.previous_run or "none: the first tracked run")
    return 0


def entry() -> None:
    """The console script insarlake-alerts (the wheel's entry point): exits with main's status."""
    sys.exit(run_job(main))


if __name__ == "__main__":
    entry()
