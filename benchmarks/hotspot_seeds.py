"""Benchmark: hotspot detection scored against the simulated truth on several scenes, for the three
methods of hotspots.score_methods (significant = ours, seed = the paper's literal recipe,
velocity_threshold = the ADA-style baseline), all on the same scenes in one run.

Each seed runs the whole pipeline (`jobs/pipeline.py`: simulate → ingest → cluster → classify →
hotspots + scores) with conf/local.yaml and the given overrides into one lake, then the scores are
read back from `hotspot_scores` and printed as one table (recall, precision, ARI per seed and
method) with the mean over seeds.

    .venv/bin/python benchmarks/hotspot_seeds.py --seeds 7 1 2 [--set classify.models=[lstm] ...]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[7, 1, 2], help="simulate.seed values (7: the demo)")
    p.add_argument("--lake", default=None, help="lake folder (default: a new temporary folder)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = p.parse_args()
    lake = Path(args.lake or tempfile.mkdtemp(prefix="bench-hotspots-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")}
    for seed in args.seeds:
        extra = [a for kv in [f"simulate.seed={seed}", *args.overrides] for a in ("--set", kv)]
        done = subprocess.run([str(ROOT / "spark-submit.sh"), "jobs/pipeline.py", "--config", "conf/local.yaml",
                               "--lake", str(lake), "--dataset", f"seed{seed}", *extra], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
            return 1
        summary = done.stdout[done.stdout.find("insarlake pipeline run"):]
        sys.stdout.write(f"--- seed {seed}\n{summary}")
    from insarlake.config import load_config
    from insarlake.spark import get_session

    spark = get_session(load_config(overrides=[f"lake.path={lake}", "spark.master=local[2]",
                                               "spark.conf={spark.ui.enabled: 'false'}"]))
    table = spark.sql("""
        SELECT dataset, method, first(recall) AS recall, first(precision) AS precision, first(ari) AS ari,
               sum(CAST(scored AS INT)) AS sources, first(hotspots) AS hotspots
        FROM insar.latest_hotspot_scores GROUP BY dataset, method ORDER BY method, dataset""").toPandas()
    means = table.groupby("method")[["recall", "precision", "ari"]].mean().reset_index().assign(dataset="mean")
    import pandas as pd

    out = pd.concat([table, means], ignore_index=True)
    sys.stdout.write(out.to_string(index=False, float_format=lambda v: f"{v:.3f}") + "\n")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
