"""The scheduled job: every stage in order on one dataset.

On the embedded default (`make run`): simulate a demo scene, ingest it, cluster it in time and
space (co-variogram, TSKM, DBSCAN per TSKM cluster), train the cluster classifiers (or reuse saved
ones) and label every pixel, then find the hotspots (and score them against the truth of a simulated
scene), track them across runs and raise alerts on what changed since the previous run, and forecast the next epochs of every pixel with DAPF (with forecast.evaluate, also score
it against the baselines on the test windows), write the run's report (one HTML page per dataset in
the lake: outputs/<dataset>/<run_id>/report.html), and join the hotspots into sites. With --input it
ingests that data instead of simulating; an input of several tracks is analysed one track at a
time (a run per track's dataset, `<dataset>-t022`...), then one run joins their hotspots into sites
(`sites`, `site_hotspots`). --mode append (with --input) merges new acquisitions into the
dataset's pixels before the analysis (ingest/append.py). Ends with a summary: tables written, row
counts, results, time per stage, and the path of each report (printed last).

    ./spark-submit.sh jobs/pipeline.py --config conf/local.yaml      # demo scene (make run)
    ./spark-submit.sh jobs/pipeline.py --input ../shared/data/egms --dataset egms
    ./spark-submit.sh jobs/pipeline.py --input new_acquisitions/ --dataset egms --mode append
"""
import argparse
import logging
import sys
from dataclasses import dataclass

from insarlake.alerts.stage import run_alerts
from insarlake.classify.stage import run_classify
from insarlake.cli import job_parser, run_job, start_job
from insarlake.forecast.stage import format_table, run_forecast
from insarlake.hotspots.stage import run_hotspots
from insarlake.ingest.parse import INPUT_FORMATS
from insarlake.errors import ConfigError
from insarlake.ingest.stage import MODES, run_ingest
from insarlake.report.stage import ReportResult, run_report
from insarlake.lake import lake_root, raw_path, recorded_run
from insarlake.simulate.stage import run_simulate
from insarlake.sites.stage import run_sites
from insarlake.cluster.stage import run_cluster

log = logging.getLogger("insarlake.jobs.pipeline")


def format_summary(run, lake: str) -> str:
    """A short text report of a run: row counts per table and seconds per stage."""
    lines = [f"insarlake {run.job} run {run.run_id} on dataset(s) {', '.join(run.datasets)}", f"lake: {lake}",
             "rows written:"]
    width = max(map(len, [*run.counts, *run.metrics, *run.seconds, ""]))
    lines += [f"  {name:<{width}} {count:>12,}" for name, count in run.counts.items()]
    if run.metrics:
        lines.append("results:")
        lines += [f"  {name:<{width}} {value:>12.3f}" for name, value in run.metrics.items()]
    lines.append("seconds per stage:")
    lines += [f"  {name:<{width}} {sec:>12.1f}" for name, sec in run.seconds.items()]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments (also parsed, without Spark, by the deployment tests)."""
    parser = job_parser("pipeline", __doc__)
    parser.add_argument("--input", metavar="PATH", help="ingest this data instead of simulating a scene")
    parser.add_argument("--format", choices=INPUT_FORMATS, default=None)
    parser.add_argument("--mode", choices=MODES, default="release",
                        help="release: the input replaces the dataset's rows; append: new acquisitions of its pixels")
    return parser


@dataclass(frozen=True)
class Analysis:
    """What the analysis of one dataset returns: the alerts, forecast and report stages' results."""
    alerts: object
    forecast: object
    report: ReportResult


def analyse(spark, config, dataset: str, run) -> Analysis:
    """The analysis stages of one dataset (one viewing geometry): cluster, classify, hotspots,
    alerts, forecast, then the run's report."""
    run_cluster(spark, config, dataset, run)
    run_classify(spark, config, dataset, run)
    run_hotspots(spark, config, dataset, run)
    alerts = run_alerts(spark, config, dataset, run)
    forecast = run_forecast(spark, config, dataset, run, evaluate=config.forecast.evaluate)
    return Analysis(alerts, forecast, run_report(spark, config, dataset, run))


def main(argv=None) -> int:
    args, config, spark = start_job(build_parser(), argv)
    if args.mode == "append" and args.input is None:
        raise ConfigError("--mode append needs --input (the new acquisitions)")
    dataset = args.dataset or config.dataset
    analyses = []
    with recorded_run(spark, config, "pipeline", [dataset]) as run:
        source = args.input
        if source is None:
            source = raw_path(config, dataset)
            run_simulate(spark, config, dataset, source, run)
        ingest = run_ingest(spark, config, source, dataset, run, fmt=args.format, mode=args.mode)
        split = ingest.datasets != (dataset,)
        if not split:
            analyses.append(analyse(spark, config, dataset, run))
            run_sites(spark, config, dataset, run)
    runs = [run]
    if split:       # one run per track's dataset, then one joining their hotspots into sites
        for geometry_dataset in ingest.datasets:
            with recorded_run(spark, config, "pipeline", [geometry_dataset]) as track_run:
                analyses.append(analyse(spark, config, geometry_dataset, track_run))
            runs.append(track_run)
        with recorded_run(spark, config, "sites", [dataset]) as sites_run:
            run_sites(spark, config, dataset, sites_run)
        runs.append(sites_run)
    for each in runs:
        sys.stdout.write(format_summary(each, lake_root(config)))
    for analysis in analyses:
        if analysis.forecast.metrics is not None:
            sys.stdout.write(f"forecast metrics of {analysis.forecast.dataset} (mm, test windows):\n"
                             f"{format_table(analysis.forecast.metrics)}\n")
    for analysis in analyses:
        report = analysis.report
        sys.stdout.write(f"report of {report.dataset} ({report.hotspots} hotspots, {report.alerts} alerts): "
                         f"{report.location}\n")
    return 0


def entry() -> None:
    """The console script insarlake-pipeline (the wheel's entry point): exits with main's status."""
    sys.exit(run_job(main))


if __name__ == "__main__":
    entry()
