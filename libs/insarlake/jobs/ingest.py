"""Ingest InSAR time series into the lake: `pixels` and `epochs`, bad rows to `quarantine`.

Reads EGMS L2b CSV or ZIP (one file, a folder searched recursively, or a glob of bursts), wide
CSV/Parquet (static columns plus one column per YYYYMMDD epoch) and the simulator's output.
--mode release (the default: a whole new series, e.g. a new EGMS release) replaces the dataset's
rows; --mode append merges new acquisitions into the dataset's pixels (ingest/append.py).
Ingesting the same input again gives the same rows.

    ./spark-submit.sh jobs/ingest.py --input ../shared/data/egms --dataset egms
    ./spark-submit.sh jobs/ingest.py --input new_acquisitions/ --dataset egms --mode append
"""
import argparse
import logging
import sys
from pathlib import PurePosixPath

from insarlake.cli import job_parser, run_job, start_job
from insarlake.ingest.parse import INPUT_FORMATS
from insarlake.ingest.stage import MODES, run_ingest
from insarlake.lake import recorded_run
from insarlake.names import dataset_from

log = logging.getLogger("insarlake.jobs.ingest")


def default_dataset_name(input_path: str) -> str:
    """Dataset name from the input: its file or folder name without extensions, other characters
    than letters, digits, '_', '-' and '.' replaced by '_'."""
    name = PurePosixPath(input_path.rstrip("/").replace("*", "")).name
    return dataset_from(name.split(".")[0])


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments (also parsed, without Spark, by the deployment tests)."""
    parser = job_parser("ingest", __doc__)
    parser.add_argument("--input", required=True, metavar="PATH", help="file, folder or glob to ingest")
    parser.add_argument("--format", choices=INPUT_FORMATS, default=None,
                        help="input format (default: ingest.format)")
    parser.add_argument("--mode", choices=MODES, default="release",
                        help="release: the input replaces the dataset's rows; append: new acquisitions of its pixels")
    return parser


def main(argv=None) -> int:
    args, config, spark = start_job(build_parser(), argv)
    dataset = args.dataset or default_dataset_name(args.input)
    with recorded_run(spark, config, "ingest", [dataset]) as run:
        result = run_ingest(spark, config, args.input, dataset, run, fmt=args.format, mode=args.mode)
    if result.mode == "append":
        log.info("dataset %s: %d input rows -> %d pixels updated + %d added + %d quarantined; %d pixels, "
                 "%d epochs, %d files", dataset, result.input_rows, result.updated, result.added, result.quarantined,
                 result.pixels, result.epochs, result.files)
    else:
        log.info("dataset %s: %d input rows -> %d pixels + %d quarantined, %d epochs, %d files",
                 dataset, result.input_rows, result.pixels, result.quarantined, result.epochs, result.files)
    return 0


def entry() -> None:
    """The console script insarlake-ingest (the wheel's entry point): exits with main's status."""
    sys.exit(run_job(main))


if __name__ == "__main__":
    entry()
