"""A scheduled append run against a full run of the whole pipeline (issue 15): a simulated scene at
one acquisition cadence cut in time, the first part run as a release (every model fitted), then
the new acquisitions appended and analysed (the models reused as the models.* policy allows),
against a release of the whole series into another dataset (every model fitted again). Every
analysis stage of the pipeline runs (cluster, classify, hotspots, alerts, forecast, report), with
the default config but the scene. Prints the seconds of each run and stage, and what each reused.

    .venv/bin/python benchmarks/append_run.py [--pixels 12000] [--cut 20220331] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from monitoring import cut_deliveries, monitoring_run, simulate_scene  # noqa: E402

log = logging.getLogger("benchmarks.append_run")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pixels", type=int, default=12000)
    parser.add_argument("--km", type=float, default=14.0)
    parser.add_argument("--cut", default="20220331", help="the first delivery's last date, YYYYMMDD")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from insarlake.config import load_config
    from insarlake.spark import get_session

    work = Path(tempfile.mkdtemp(prefix="append-run-"))
    config = load_config(ROOT / "conf" / "local.yaml", overrides=[
        f"lake.path={work / 'lake'}", "spark.master=local[2]", "spark.conf={spark.ui.enabled: 'false'}",
        f"simulate.n_pixels={args.pixels}", f"simulate.width_km={args.km}", f"simulate.height_km={args.km}",
        "simulate.start_date=2019-01-02", "simulate.end_date=2022-06-30", "simulate.cadence_change_date=null",
        *args.overrides])
    spark = get_session(config)
    whole = simulate_scene(spark, config, "scene", work / "scene")
    first, second = cut_deliveries(whole, work / "scene", args.cut)
    rows = []
    for name, dataset, source, mode in (("release of the first part", "scene", first, "release"),
                                        ("append of the new acquisitions", "scene", second, "append"),
                                        ("release of the whole series", "whole", whole, "release")):
        t0 = time.perf_counter()
        run, _ = monitoring_run(spark, config, dataset, source, mode, full=True)
        seconds = time.perf_counter() - t0
        reused = sorted(k.split(".", 1)[1] for k, v in run.metrics.items() if k.startswith("model_reused.") and v)
        rows.append((name, seconds, run))
        print(f"{name}: {seconds:.1f} s; reused: {', '.join(reused) or 'nothing'}")
        print("   " + ", ".join(f"{k} {v:.1f}" for k, v in run.seconds.items() if v >= 1.0))
        sys.stdout.flush()
    append_s, full_s = rows[1][1], rows[2][1]
    print(f"append run / full run: {append_s / full_s:.2f} ({append_s:.1f} s / {full_s:.1f} s)")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
