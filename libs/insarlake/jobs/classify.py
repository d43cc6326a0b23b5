"""Cluster classifiers: train LSTM / LSTM+Perceptron on the dataset's TSKM labels or DBSCAN clusters
(classify.target) on bounded samples (or reuse the saved models), label every pixel into `classes`,
evaluate on the whole held-out split into `classifier_metrics`, and draw the confusion matrices.

Training runs on TorchDistributor when classify.num_processes > 1 (gloo on CPU, nccl with
classify.use_gpu); a saved model is reused while the target, its classes, the epochs and the architecture match.

    ./spark-submit.sh jobs/classify.py --dataset demo
    ./spark-submit.sh jobs/classify.py --dataset demo --retrain --set classify.num_processes=2
"""
import argparse
import logging
import sys
from insarlake.config import replace

from insarlake.classify.stage import run_classify
from insarlake.cli import datasets_or_all, job_parser, run_job, start_job
from insarlake.lake import recorded_run

log = logging.getLogger("insarlake.jobs.classify")


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments (also parsed, without Spark, by the deployment tests)."""
    parser = job_parser("classify", __doc__)
    parser.add_argument("--retrain", action="store_true", help="train even when a compatible model exists")
    return parser


def main(argv=None) -> int:
    args, config, spark = start_job(build_parser(), argv)
    if args.retrain:
        config = replace(config, classify=replace(config.classify, retrain=True))
    for dataset in datasets_or_all(spark, config, args.dataset):
        with recorded_run(spark, config, "classify", [dataset]) as run:
            result = run_classify(spark, config, dataset, run)
        log.info("dataset %s: %d pixels labelled (target %s) by %s; held-out accuracy %s; pictures in %s", dataset,
                 result.pixels, result.target, result.chosen,
                 ", ".join(f"{k} {v:.3f}" for k, v in result.accuracy.items()), result.outputs)
    return 0


def entry() -> None:
    """The console script insarlake-classify (the wheel's entry point): exits with main's status."""
    sys.exit(run_job(main))


if __name__ == "__main__":
    entry()
