"""Benchmark: DAPF forecast throughput per core, one pass of the predictive distribution against the
64-sample posterior draws it replaced, on the same subgraph in the same process.

The subgraph is shaped like the forecast stage's: ``--core`` pixels on a jittered grid plus a halo
ring (``--halo`` pixels), k-nearest-neighbour edges (k 8), input 24 epochs, horizon 6 (the default
config); one thread. Printed: pixels per second per core (core pixels forecast / seconds) for
``predict_samples`` 0 (the default: q(Y | W) at W's posterior mean), 8 draws of W, and the old path
(the point forecast plus 64 draws of ``sample``), and each one's ratio to the old path.

    .venv/bin/python benchmarks/forecast_predict.py [--core 1000 --halo 500 --repeat 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))


def subgraph_batch(n_core: int, n_halo: int, input_len: int, horizon: int, seed: int = 0):
    from insarlake.forecast.batch import GraphBatch
    from insarlake.forecast.graph import knn_edges, symmetrise

    rng = np.random.default_rng(seed)
    n = n_core + n_halo
    side = int(np.ceil(np.sqrt(n)))
    xy = np.stack(np.divmod(np.arange(n), side), 1).astype(float) * 40.0 + rng.normal(0, 8, (n, 2))
    src, dst, _ = knn_edges(xy[:, 0], xy[:, 1], 8, 500.0)
    edges, _ = symmetrise(src, dst, n)
    t = np.arange(input_len + horizon) * 6 / 365.25
    history = np.cumsum(rng.normal(0, 0.3, (n, input_len)), 1)
    history -= history[:, -1:]
    mask = np.zeros(n, bool)
    mask[:n_core] = True
    return GraphBatch(coords=torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float32)),
                      history=torch.from_numpy(history.astype(np.float32)),
                      t_in=torch.from_numpy((t[:input_len] - t[input_len - 1]).astype(np.float32)),
                      t_out=torch.from_numpy((t[input_len:] - t[input_len - 1]).astype(np.float32)),
                      edge_index=torch.from_numpy(edges), mask=torch.from_numpy(mask))


def best_seconds(fn, repeat: int) -> float:
    fn()                                        # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--core", type=int, default=1000)
    p.add_argument("--halo", type=int, default=500)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    from insarlake.forecast.dapf import Dapf
    from insarlake.forecast.model import forecast_distribution

    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch = subgraph_batch(args.core, args.halo, 24, 6)
    net = Dapf(24, 6).eval()
    q = (0.05, 0.5, 0.95)

    def old_path():
        with torch.no_grad():
            net(batch)
            draw = net.sample(batch, 64, torch.Generator().manual_seed(0)).numpy()
        np.quantile(draw, q, axis=0)

    timings = {"one pass (predict_samples 0)": lambda: forecast_distribution(net, batch, q, 0, 64),
               "8 draws of W (predict_samples 8)": lambda: forecast_distribution(net, batch, q, 8, 64,
                                                                                  torch.Generator().manual_seed(0)),
               "old: point + 64 samples": old_path}
    seconds = {name: best_seconds(fn, args.repeat) for name, fn in timings.items()}
    old = seconds["old: point + 64 samples"]
    sys.stdout.write(f"DAPF forecast of one subgraph: {args.core} core + {args.halo} halo pixels, "
                     f"{batch.edge_index.shape[1]} edges, 1 thread (best of {args.repeat})\n")
    sys.stdout.write(f"{'path':<36}{'seconds':>10}{'pixels/s/core':>16}{'speed-up vs old':>18}\n")
    for name, sec in seconds.items():
        sys.stdout.write(f"{name:<36}{sec:>10.3f}{args.core / sec:>16.0f}{old / sec:>18.1f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
