"""Deformation forecasting (DAPF): train (or reuse) the model on the dataset's pixels and write
`forecasts` (mean and p05/p50/p95 of the next forecast.horizon_epochs epochs for every pixel);
with --evaluate, also train the baselines and write `forecast_metrics` (every model on the test
windows, per subset of pixels: all, moving, hotspot, and per forecast step) and print the table
(the subsets side by side).

    ./spark-submit.sh jobs/forecast.py --dataset demo
    ./spark-submit.sh jobs/forecast.py --dataset demo --evaluate
    ./spark-submit.sh jobs/forecast.py --dataset demo --retrain
"""
import argparse
import logging
import sys
from insarlake.config import replace

from insarlake.cli import datasets_or_all, job_parser, run_job, start_job
from insarlake.forecast.stage import format_table, run_forecast
from insarlake.lake import recorded_run

log = logging.getLogger("insarlake.jobs.forecast")


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments (also parsed, without Spark, by the deployment tests)."""
    parser = job_parser("forecast", __doc__)
    parser.add_argument("--evaluate", action="store_true", help="train the baselines too and write forecast_metrics")
    parser.add_argument("--retrain", action="store_true", help="train even when a saved model matches")
    return parser


def main(argv=None) -> int:
    args, config, spark = start_job(build_parser(), argv)
    if args.retrain:
        config = replace(config, forecast=replace(config.forecast, retrain=True))
    for dataset in datasets_or_all(spark, config, args.dataset):
        with recorded_run(spark, config, "forecast", [dataset]) as run:
            result = run_forecast(spark, config, dataset, run, evaluate=args.evaluate)
        if result.metrics is not None:
            sys.stdout.write(f"forecast metrics, dataset {dataset} (mm, test windows):\n{format_table(result.metrics)}\n")
        log.info("dataset %s: %d forecast rows for %d pixels; pictures in %s", dataset, result.forecasts,
                 result.pixels, result.outputs)
    return 0


def entry() -> None:
    """The console script insarlake-forecast (the wheel's entry point): exits with main's status."""
    sys.exit(run_job(main))


if __name__ == "__main__":
    entry()
