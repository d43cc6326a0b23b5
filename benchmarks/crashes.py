"""Crash trials (issue 16): each job of the pipeline killed with SIGKILL many times at random
moments among its writes, then re-run, on the small simulated scene of tests/crashes.py; the same
checks as tests/test_crashes.py, counted.

Per job: trials, how many the kill ended (the rest finished before it), the writes the kills came
after, tables found half-written after a kill, unreachable or broken models, and whether the
re-run's tables equal the uninterrupted run's (rows lost or duplicated: must be 0).

    .venv/bin/python benchmarks/crashes.py --kills 8 --seed 0
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from crashes import (FAST, STAGE_TABLES, job_command, kill_plan, problems_after_kill,  # noqa: E402
                     problems_after_rerun, report, run_job, table_rows)

log = logging.getLogger("benchmarks.crashes")
DATASET = "crash"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=8, help="kill trials per job")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=3.0, help="seconds after the chosen write, at most")
    parser.add_argument("--jobs", nargs="+", choices=list(STAGE_TABLES), default=list(STAGE_TABLES),
                        help="the jobs to try (each needs the jobs before it: they run uninterrupted first)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from insarlake.config import load_config
    from insarlake.lake import reap_lost_runs
    from insarlake.spark import get_session

    work = Path(tempfile.mkdtemp(prefix="insarlake-crashes-"))
    configs = {name: load_config(overrides=[*FAST, f"lake.path={work / name}", "catalog.database=crash_reader"])
               for name in ("reference", "trials")}
    spark = get_session(load_config(overrides=[*FAST, f"lake.path={work / 'reader'}"]))
    rng = np.random.default_rng(args.seed)
    rows, all_problems = [], []
    last = max(list(STAGE_TABLES).index(j) for j in args.jobs)
    for job, tables in list(STAGE_TABLES.items())[:last + 1]:
        done = run_job(job_command(job, work / "reference", DATASET))
        if done.returncode != 0:
            sys.stderr.write(done.log[-3000:])
            return 1
        if job not in args.jobs:              # its output is what the next job reads
            if run_job(job_command(job, work / "trials", DATASET)).returncode != 0:
                return 1
            continue
        writes, expected = done.writes, {t: table_rows(spark, configs["reference"], t, DATASET) for t in tables}
        killed, moments, problems, last_kill = [], Counter(), [], time.monotonic()
        for _ in range(args.kills):
            after, delay_s = kill_plan(rng, len(writes), args.max_delay)
            trial = run_job(job_command(job, work / "trials", DATASET), kill_after_write=after, delay_s=delay_s)
            if trial.killed:
                killed.append(trial.run_id)
                moments["a model" if "/" in writes[after] else writes[after]] += 1
                last_kill = time.monotonic()
            elif trial.returncode != 0:
                problems.append(f"exit {trial.returncode}: {trial.log[-500:]}")
            problems += problems_after_kill(spark, configs["trials"], job, DATASET, expected)
        rerun = run_job(job_command(job, work / "trials", DATASET))
        time.sleep(max(0.0, configs["trials"].lake.run_lost_after_s + 0.5 - (time.monotonic() - last_kill)))
        reap_lost_runs(spark, configs["trials"])
        after_rerun = ([f"re-run exit {rerun.returncode}"] if rerun.returncode else []) + problems_after_rerun(
            spark, configs["trials"], job, DATASET, expected, killed, rerun.run_id)
        rows.append((job, args.kills, len(killed), ", ".join(f"{k} {n}" for k, n in sorted(moments.items())),
                     len(problems), "yes" if not after_rerun else "NO"))
        all_problems += [f"{job}: {p}" for p in problems + after_rerun]
        log.info("%s: %d trials, %d killed, problems %s", job, args.kills, len(killed), problems + after_rerun)

    return report(["job", "trials", "killed", "killed after writing", "problems after a kill",
                   "re-run = uninterrupted"], rows, all_problems)


if __name__ == "__main__":
    sys.exit(main())
