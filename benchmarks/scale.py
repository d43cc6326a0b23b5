"""Benchmark: the whole scheduled pipeline at growing scene sizes (issue 13's scale table).

For each size N a simulated scene of N pixels at the demo's density (30,000 pixels per 400 km²:
the area, the urban patches and the deformation sources grow with N; ~200 epochs) goes through
`jobs/pipeline.py --config conf/local.yaml` (forecast metrics table off) twice: the first run
trains every model, the re-run reuses them. Per stage: wall seconds, rows written, and the peak
resident memory of the driver JVM, of the Python driver and of the largest other Python process
(Spark's Python workers, training processes), sampled every 0.5 s from the process tree and
attributed to the stage that was running (from the job's `stage NAME ...` log lines).

Then a cost model per stage, t(N) = a + b N fitted by least squares over the sizes (with one size:
the stages on bounded samples are fixed, the others linear): core-seconds
per million pixels (b x cores x 10^6) and the projected wall time of 10^8 pixels on 100 cores,
a + b x 10^8 x cores / 100 (the per-pixel work spread over 100 cores, the fixed cost as measured
here, e.g. training on its bounded sample). With --compare-cores N it also re-runs size N (models
reused) with local[1] and local[2] and prints the speed-up per stage and of the wall time.

With --standalone the sizes run on a standalone cluster started here (one worker with every core):
the driver has its own JVM, as on a real cluster, so its memory is measured apart from the
executors' (in local mode the executors' blocks live in the driver's JVM); the executor JVM's
peak is the column exec_jvm_mb and its Python workers count as the workers.

    .venv/bin/python benchmarks/scale.py --sizes 100000 300000 1000000 [--compare-cores 300000]
    .venv/bin/python benchmarks/scale.py --sizes 100000 1000000 --standalone
    make bench-scale
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "libs"))
from insarlake.standalone import Standalone  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO_PIXELS, DEMO_SIDE_KM = 30_000, 20.0
DEMO_SOURCES = {"subsidence": 3, "uplift": 1, "landslide": 3, "tunnel": 1, "postseismic": 1}
DEMO_URBAN_PATCHES = 6
_STAGE = re.compile(r"stage (\S+) \.\.\.")
# Stages that work on bounded samples (TSKM fit, classifier and forecaster training): with a single
# size the cost model counts them as fixed costs.
BOUNDED_STAGES = ("tskm_fit", ".train")
# the processes whose peak RSS is sampled: the driver's JVM (in local mode the executors' too), the
# Python driver, the largest other Python process, and a standalone cluster's executor JVM
PEAKS = ("jvm", "python_driver", "python_worker", "executor_jvm")


def scene_overrides(n_pixels: int) -> list[str]:
    """simulate.* settings for a scene of ``n_pixels`` at the demo's density and source mix."""
    factor = n_pixels / DEMO_PIXELS
    side_km = DEMO_SIDE_KM * math.sqrt(factor)
    sources = {k: max(v, int(round(v * factor))) for k, v in DEMO_SOURCES.items()}
    return [f"simulate.n_pixels={n_pixels}", f"simulate.width_km={side_km:.3f}", f"simulate.height_km={side_km:.3f}",
            f"simulate.urban_patches={max(DEMO_URBAN_PATCHES, int(round(DEMO_URBAN_PATCHES * factor)))}",
            "simulate.sources=" + json.dumps(sources).replace('"', "")]


class Sampler:
    """Peak RSS (bytes) per stage of the JVM, the Python driver and the largest other Python
    process under one process tree; with ``executor_pids`` (standalone workers) also the largest
    JVM under those (the executor), and their Python processes count as workers."""

    def __init__(self, root_pid: int, executor_pids: list[int] | tuple = ()):
        self.root = psutil.Process(root_pid)
        self.executors = [psutil.Process(pid) for pid in executor_pids]
        self.stage = "start"
        self.peaks: dict[str, dict[str, int]] = {}
        self.done = threading.Event()

    def _sample(self) -> None:
        jvm = driver = worker = executor = 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
            remote = [c for e in self.executors for c in e.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs + remote:
            try:
                name, cmd, rss = p.name(), " ".join(p.cmdline()), p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if name == "java" and p in remote:
                executor = max(executor, rss)
            elif name == "java":
                jvm = max(jvm, rss)
            elif "python" in name and "jobs/pipeline.py" in cmd:
                driver = max(driver, rss)
            elif "python" in name:
                worker = max(worker, rss)
        peak = self.peaks.setdefault(self.stage, {key: 0 for key in PEAKS})
        for key, value in (("jvm", jvm), ("python_driver", driver), ("python_worker", worker),
                           ("executor_jvm", executor)):
            peak[key] = max(peak[key], value)

    def run(self) -> None:
        while not self.done.is_set():
            self._sample()
            time.sleep(0.5)


def run_pipeline(lake: Path, dataset: str, overrides: list[str], cores: int | None = None,
                 source: Path | None = None, cluster: tuple[list[str], list[int]] | None = None
                 ) -> tuple[dict, dict, dict, float]:
    """(seconds per stage, rows per table, peak RSS per stage, wall seconds) of one pipeline run;
    with ``cores`` every process of the run (JVM, Python driver and workers) is pinned to that
    many CPUs (taskset), so that local[1] gets one core in all, not one task slot; with
    ``source`` it ingests that folder instead of simulating the scene; with ``cluster``
    (spark-submit options, worker pids) it runs on a standalone cluster."""
    extra = [a for kv in overrides for a in ("--set", kv)] + (["--input", str(source)] if source else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")}
    submit, workers = cluster or ([], [])
    if cluster:
        env["PYSPARK_PYTHON"] = sys.executable          # the executors run on this host, in this venv
    pin = ["taskset", "-c", f"0-{cores - 1}"] if cores else []
    cmd = [*pin, str(ROOT / "spark-submit.sh"), *submit, "jobs/pipeline.py", "--config", "conf/local.yaml",
           "--lake", str(lake), "--dataset", dataset, *extra]
    t0 = time.perf_counter()
    # spark-submit merges the Python driver's stderr (its log) into stdout: one stream to follow
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid, workers)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    lines: list[str] = []
    for line in proc.stdout:
        match = _STAGE.search(line)
        if match:
            sampler.stage = match.group(1)
        lines.append(line)
    proc.wait()
    sampler.done.set()
    thread.join()
    wall = time.perf_counter() - t0
    out = "".join(lines)
    if proc.returncode != 0:
        sys.stderr.write(out[-8000:])
        raise SystemExit(f"pipeline failed on {dataset} (exit {proc.returncode})")
    seconds, rows, section = {}, {}, None
    for line in out[out.rfind("insarlake pipeline run"):].splitlines():     # the closing summary
        if line.endswith(":") and not line.startswith(" "):
            section = line[:-1]
            continue
        parts = line.split()
        if section == "rows written" and len(parts) == 2:
            rows[parts[0]] = int(parts[1].replace(",", ""))
        elif section == "seconds per stage" and len(parts) == 2:
            seconds[parts[0]] = float(parts[1])
    return seconds, rows, sampler.peaks, wall


def stage_table(size: int, label: str, seconds: dict, rows: dict, peaks: dict, wall: float) -> pd.DataFrame:
    mb = 1024 ** 2
    records = [{"pixels": size, "run": label, "stage": stage, "seconds": sec,
                **{k: round(v / mb) for k, v in peaks.get(stage, {}).items()}} for stage, sec in seconds.items()]
    total = {k: round(max((p.get(k, 0) for p in peaks.values()), default=0) / mb) for k in PEAKS}
    records.append({"pixels": size, "run": label, "stage": "TOTAL (wall)", "seconds": round(wall, 1), **total})
    # the end-to-end figure runs from ingest to forecasts: the wall time less the simulation
    simulate = sum(sec for stage, sec in seconds.items() if stage.startswith("simulate."))
    records.append({"pixels": size, "run": label, "stage": "INGEST TO FORECASTS (wall - simulate)",
                    "seconds": round(wall - simulate, 1)})
    table = pd.DataFrame(records).rename(columns={"jvm": "jvm_mb", "python_driver": "py_driver_mb",
                                                  "python_worker": "py_worker_mb", "executor_jvm": "exec_jvm_mb"})
    table.attrs["rows"] = rows
    return table


def cost_model(tables: list[pd.DataFrame], cores: int) -> pd.DataFrame:
    """Per stage: t = a + b N over the first runs, core-seconds per 10^6 pixels, the 10^8 projection."""
    first = pd.concat([t for t in tables if t["run"].iloc[0] == "first"])
    first = first[first["stage"].str.contains(".", regex=False)]     # stages (a.b), not the TOTAL rows
    out = []
    for stage, g in first.groupby("stage", sort=False):
        n, t = g["pixels"].to_numpy(float), g["seconds"].to_numpy(float)
        if len(n) >= 2 and np.ptp(n) > 0:
            b, a = np.polyfit(n, t, 1)
        elif any(key in stage for key in BOUNDED_STAGES):
            a, b = t[0], 0.0          # one size: a stage on a bounded sample is a fixed cost
        else:
            a, b = 0.0, t[0] / n[0]   # one size: the rest is taken as linear
        a, b = max(a, 0.0), max(b, 0.0)
        ratio = t[-1] / t[0] if len(t) >= 2 and t[0] > 0 else float("nan")
        out.append({"stage": stage, "fixed_s": a, "core_s_per_mpx": b * cores * 1e6,
                    "ratio_largest_smallest": ratio, "projected_1e8_on_100_cores_s": a + b * 1e8 * cores / 100})
    model = pd.DataFrame(out)
    total = model.drop(columns=["stage", "ratio_largest_smallest"]).sum()
    return pd.concat([model, pd.DataFrame([{"stage": "TOTAL (sum of stages)", **total}])], ignore_index=True)


def compare_cores(lake: Path, n: int, base: list[str], tables: list[pd.DataFrame], pin: bool = False) -> None:
    """Re-runs (models reused) of the ``n``-pixel scene with local[1] and local[2]: the speed-up of
    the stages Spark parallelises, per stage and in all. The training stages are left out of it:
    they run in the driver (classify.threads_per_process torch threads, one TSKM fit), not in
    Spark's tasks, and are timed by the first runs. A first run trains the models when the sizes
    did not include ``n`` and the lake holds none; a local[2] re-run of the sizes is reused (not
    with ``pin``: then local[k] runs on k cores, so the ratio is what a second core gives)."""
    dataset = f"scale{n}"
    runs = {}
    reused = [t for t in tables if t["pixels"].iloc[0] == n and t["run"].iloc[0] == "rerun"]
    if reused and not pin:
        runs["local[2]"] = reused[0]
    elif not any(t["pixels"].iloc[0] == n for t in tables) and not (lake / "models" / "tskm" / dataset).exists():
        run_pipeline(lake, dataset, [*scene_overrides(n), *base])          # trains the models
    for k, master in ((1, "local[1]"), (2, "local[2]")):
        if master not in runs:
            runs[master] = stage_table(n, f"rerun {master}", *run_pipeline(
                lake, dataset, [*scene_overrides(n), *base, f"spark.master={master}"], cores=k if pin else None))
    one, two = (runs[m].set_index("stage")["seconds"] for m in ("local[1]", "local[2]"))
    table = pd.DataFrame({"local[1]_s": one, "local[2]_s": two}).dropna()
    table["speed_up"] = table["local[1]_s"] / table["local[2]_s"]
    sys.stdout.write(f"\n{n:,} pixels, re-runs (models reused), local[1] against local[2]:\n"
                     + table.to_string(float_format=lambda v: f"{v:.2f}") + "\n")


def run_size(lake: Path, size: int, base: list[str], no_rerun: bool = False, reuse_raw: bool = False,
             cluster: tuple[list[str], list[int]] | None = None) -> list[pd.DataFrame]:
    """The stage tables of the first run (and the re-run) of the ``size``-pixel scene, printed as they end."""
    raw = lake / "raw" / f"scale{size}"
    source = raw if reuse_raw and raw.is_dir() else None
    tables = []
    for label in ["first"] if no_rerun else ["first", "rerun"]:
        result = run_pipeline(lake, f"scale{size}", [*scene_overrides(size), *base], source=source, cluster=cluster)
        tables.append(stage_table(size, label, *result))
        sys.stdout.write(f"--- {size:,} pixels, {label} run: {result[3]:.0f} s; rows {result[1]}\n")
        sys.stdout.write(tables[-1].to_string(index=False) + "\n")
        sys.stdout.flush()
    return tables


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[100_000, 300_000, 1_000_000],
                   help="scene sizes (none: only --compare-cores, on the models in --lake)")
    p.add_argument("--lake", default=None, help="lake folder (default: a new temporary folder)")
    p.add_argument("--no-rerun", action="store_true", help="first runs only")
    p.add_argument("--compare-cores", type=int, default=None, metavar="N",
                   help="also re-run N pixels (models reused) with local[1] and local[2]; print the speed-ups")
    p.add_argument("--pin", action="store_true",
                   help="with --compare-cores: pin local[k] to k CPUs (taskset), driver and workers included")
    p.add_argument("--standalone", action="store_true",
                   help="run the sizes on a standalone cluster started here (one worker with every core): "
                        "the driver in its own JVM, measured apart from the executor")
    p.add_argument("--driver-memory", default="4g", help="with --standalone: the driver JVM's heap")
    p.add_argument("--executor-memory", default="10g", help="with --standalone: the executor's heap")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="write the tables as CSV files into this folder")
    p.add_argument("--reuse-raw", action="store_true",
                   help="ingest the scene a former call simulated into --lake (raw/scale<N>/) instead of "
                        "simulating it again (3M pixels: ~1 h of simulation on 2 cores); its truth table is kept")
    args = p.parse_args()
    lake = Path(args.lake or tempfile.mkdtemp(prefix="bench-scale-"))
    cores = psutil.cpu_count()
    base = ["forecast.evaluate=false", *args.overrides]
    cluster, standalone = None, None
    if args.standalone and args.sizes:
        standalone = Standalone(Path(tempfile.mkdtemp(prefix="bench-standalone-")))
        worker = standalone.start_worker(cores=cores, memory=args.executor_memory)
        cluster = (["--master", standalone.url, "--driver-memory", args.driver_memory,
                    "--conf", f"spark.executor.memory={args.executor_memory}"], [worker.pid])
    tables = []
    try:
        for size in args.sizes:
            tables += run_size(lake, size, base, no_rerun=args.no_rerun, reuse_raw=args.reuse_raw, cluster=cluster)
    finally:
        if standalone is not None:
            standalone.stop()
    if not tables:
        if args.compare_cores:
            compare_cores(lake, args.compare_cores, base, tables, pin=args.pin)
        return 0
    all_runs = pd.concat(tables, ignore_index=True)
    sys.stdout.write("\nscale table (seconds; peak RSS in MiB):\n" + all_runs.to_string(index=False) + "\n")
    model = cost_model(tables, cores)
    sys.stdout.write(f"\ncost model ({cores} cores here):\n"
                     + model.to_string(index=False, float_format=lambda v: f"{v:.2f}") + "\n")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        all_runs.to_csv(Path(args.out) / "scale_runs.csv", index=False)
        model.to_csv(Path(args.out) / "scale_cost_model.csv", index=False)
    if args.compare_cores:
        compare_cores(lake, args.compare_cores, base, tables, pin=args.pin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
