"""Benchmark: DAPF training time against the number of METIS subgraphs (and of training processes)
on one dataset of a lake, the same data in one run.

For each forecast.nodes_per_subgraph value the graph is partitioned anew and DAPF trains for a
fixed number of epochs (no early stopping); printed: subgraphs, seconds per epoch, and the ratio to
the first row. With --processes 1 2 each size also trains with TorchDistributor on 2 processes.

    .venv/bin/python benchmarks/forecast_scaling.py --lake lake --dataset demo --sizes 250 500 1000 2000
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from insarlake.config import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lake", required=True, help="a lake holding the dataset's pixels and epochs")
    p.add_argument("--dataset", default="demo")
    p.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000], help="nodes_per_subgraph values")
    p.add_argument("--processes", type=int, nargs="+", default=[1])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--model", default="dapf")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import pandas as pd

    from insarlake.config import load_config
    from insarlake.forecast.stage import prepare, train
    from insarlake.spark import get_session

    config = load_config(ROOT / "conf" / "local.yaml", overrides=[
        f"lake.path={Path(args.lake).resolve()}", "spark.master=local[2]", "spark.conf={spark.ui.enabled: 'false'}",
        *args.overrides])
    spark = get_session(config)
    rows = []
    for size in args.sizes:
        cfg = replace(config.forecast, nodes_per_subgraph=size, max_epochs=args.epochs, patience=args.epochs + 1)
        prepared = prepare(spark, replace(config, forecast=cfg), args.dataset, Path(tempfile.mkdtemp(prefix="fscale-")))
        for n_proc in args.processes:
            result = train(prepared, replace(cfg, num_processes=n_proc), args.model)
            rows.append({"nodes_per_subgraph": size, "subgraphs": prepared.subgraphs,
                         "trained_on": len(prepared.train_parts), "processes": n_proc,
                         "seconds_per_epoch": result["seconds"] / len(result["history"]),
                         "val_mse_last": result["history"][-1]["val_mse"]})
            sys.stdout.write(f"{rows[-1]}\n")
            sys.stdout.flush()
        prepared.release()
    table = pd.DataFrame(rows)
    table["ratio_to_first"] = table.seconds_per_epoch / table.seconds_per_epoch.iloc[0]
    sys.stdout.write(f"{args.model} on {args.dataset} ({prepared.pixels} pixels), {args.epochs} epochs each:\n")
    sys.stdout.write(table.to_string(index=False, float_format=lambda v: f"{v:.3f}") + "\n")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
