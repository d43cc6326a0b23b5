"""What every job shares: its argument parser, config from arguments, logging and the exit rule
(a bad input or config ends with exit status 2 and one line saying what and where)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from insarlake.config import Config, load_config
from insarlake.errors import InsarlakeError
from insarlake.names import check_dataset

log = logging.getLogger("insarlake")
# the running job's lake root, named in the one-line error of a storage failure (run_job)
_JOB: dict[str, str] = {}


def job_parser(prog: str, description: str, dataset: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="profile YAML merged over conf/default.yaml")
    parser.add_argument("--lake", metavar="PATH", help="lake root (overrides lake.path)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override a config key, e.g. --set simulate.n_pixels=5000 (repeatable)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    if dataset:
        parser.add_argument("--dataset", metavar="NAME",
                            help="dataset name (stage jobs: default every dataset in the lake)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.lake:
        overrides.append(f"lake.path={args.lake}")
    return load_config(args.config, overrides)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("py4j", "py4j.clientserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def start_job(parser: argparse.ArgumentParser, argv: list[str] | None):
    """Parse arguments, set up logging, load the config and get the session:
    returns (args, config, spark)."""
    from insarlake.spark import get_session

    from insarlake.lake import LAKE_ENTRIES, lake_files, lake_root

    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if getattr(args, "dataset", None) is not None:
        check_dataset(args.dataset, "--dataset")
    config = config_from_args(args)
    _JOB["lake"] = lake_root(config)
    files = lake_files(config)
    if files.is_local:                 # before the session puts its catalog there
        files.check_lake(LAKE_ENTRIES)
    spark = get_session(config)
    if not files.is_local:
        files = lake_files(config, spark)
        files.check_writable()         # a bad bucket or credentials: one line before any work
        files.check_lake(LAKE_ENTRIES)  # never write tables into a file or a folder of other files
    return args, config, spark


def datasets_or_all(spark, config: Config, dataset: str | None) -> list[str]:
    """The --dataset given, else every dataset in the lake's `pixels` table."""
    from insarlake.errors import InputError
    from insarlake.lake import read_table, table_exists

    if dataset:
        return [dataset]
    if not table_exists(spark, config, "pixels"):
        raise InputError(f"lake {config.lake.path}: no pixels table (run jobs/ingest.py first)")
    names = sorted(r.dataset for r in read_table(spark, config, "pixels").select("dataset").distinct().collect())
    if not names:
        raise InputError(f"lake {config.lake.path}: the pixels table holds no dataset")
    return names


def run_job(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a job's main; an InsarlakeError, a storage failure of Spark or Hadoop (no connector
    for the lake's scheme, missing bucket or credentials, access denied, unreachable endpoint), or
    the catalog server gone, becomes one 'error: ...' line and exit status 2."""
    from insarlake.catalog import server_problem
    from insarlake.files import storage_problem

    try:
        return main(argv)
    except InsarlakeError as exc:
        sys.stderr.write(f"error: {one_line(str(exc))}\n")
        return 2
    except Exception as exc:
        problem = server_problem(exc) or storage_problem(exc, _JOB.get("lake"))
        if problem is None:
            raise
        log.debug("storage failure", exc_info=True)
        sys.stderr.write(f"error: {one_line(problem)}\n")
        return 2


def one_line(text: str) -> str:
    """``text`` with its line breaks and other control characters escaped (a file name from the
    input may hold them), so that an error is always one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def driver_memory(argv: list[str]) -> str:
    """spark.driver_memory of the config a job's arguments select (--config, --lake, --set), for
    spark-submit.sh in local mode, where Spark's executors share the driver's JVM; '' when the
    arguments or the config are bad (the job itself then says what is wrong)."""
    parser = job_parser("driver-memory", "", dataset=True)
    try:
        args, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
        return config_from_args(args).spark.driver_memory or ""
    except (InsarlakeError, SystemExit):
        return ""


def session_jars(argv: list[str]) -> str:
    """The jars (comma-separated, or "provided") a job's config needs (--config, --lake, --set:
    spark.jars auto with the s3a group for an S3 lake; provided; or its own list), for
    spark-submit.sh's --jars; '' when the arguments or the config are bad or a jar is missing (the
    job itself then says what is wrong)."""
    from insarlake.jars import session_jars as jars_of

    parser = job_parser("jars", "", dataset=True)
    try:
        args, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
        return jars_of(config_from_args(args))
    except (InsarlakeError, SystemExit):
        return ""


if __name__ == "__main__":      # python -m insarlake.cli driver-memory|jars [job arguments]
    if sys.argv[1:2] == ["driver-memory"]:
        sys.stdout.write(driver_memory(sys.argv[2:]) + "\n")
    elif sys.argv[1:2] == ["jars"]:
        sys.stdout.write(session_jars(sys.argv[2:]) + "\n")
