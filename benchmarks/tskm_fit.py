"""Benchmark: the TSKM fit (SoftDTWKMeans on our numba kernels) against tslearn's TimeSeriesKMeans(softdtw).

Part 1, per core: both fit the same series with the same k-means++ seeds (same random_state; the seeds are
equal, tests/test_tskm.py), the same k, max_iter and max_iter_barycenter, in this process, on one thread
(numba.set_num_threads(1), BLAS/OMP threads 1). CPU seconds; ours after a numba warm-up (compile excluded).
The objective of each is the k-means objective: sum over series of soft-DTW to the nearest centroid (mm^2).

Part 2, the default fit: ``fit_tskm`` with the temporal settings of conf/default.yaml (sample_size series,
silhouette on silhouette_size of them, k_min..k_max) on all cores (numba threads = cpu count); wall and CPU
seconds (all threads), split into the silhouette matrix and each k. On a shared machine CPU s / cores is the
wall time the fit takes on idle cores.

    .venv/bin/python benchmarks/tskm_fit.py [--n 100 --k 4 --max-iter 3 --max-iter-barycenter 3 --gamma 1.0]
    .venv/bin/python benchmarks/tskm_fit.py --skip-peer            # part 2 only

Data: the real EGMS burst in ../shared/data/egms (11,590 series x 210 epochs, mm): part 1 on --n random
series, part 2 on sample_size random series.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100, help="series for the side-by-side fit (tslearn: ~1 min)")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-iter", type=int, default=3)
    p.add_argument("--max-iter-barycenter", type=int, default=3)
    p.add_argument("--gamma", type=float, default=1.0, help="soft-DTW gamma (mm^2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-peer", action="store_true", help="only the default fit (part 2)")
    p.add_argument("--skip-default", action="store_true", help="only the side-by-side fit (part 1)")
    p.add_argument("--set", action="append", default=[], help="config override for part 2, e.g. temporal.k_max=8")
    return p.parse_args()


ARGS = _parse()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
             "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["NUMBA_NUM_THREADS"] = str(os.cpu_count())

import logging  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))
from insarlake.config import load_config  # noqa: E402
from insarlake.temporal.softdtw import softdtw_distances  # noqa: E402
from insarlake.temporal.tskm import SoftDTWKMeans, fit_tskm  # noqa: E402

EGMS_ZIP = ROOT.parent / "shared" / "data" / "egms" / "EGMS_L2b_022_0845_IW2_VV_2020_2024_1.zip"
EGMS_CSV = "EGMS_L2b_022_0845_IW2_VV_2020_2024_1.csv"


def load_egms():
    import io
    import zipfile

    import pandas as pd

    with zipfile.ZipFile(EGMS_ZIP) as zf:
        frame = pd.read_csv(io.BytesIO(zf.read(EGMS_CSV)))
    return frame[[c for c in frame.columns if c.isdigit()]].to_numpy(np.float64)


def objective(x, centroids, gamma):
    return float(softdtw_distances(x, centroids, gamma).min(axis=1).sum())


def side_by_side(all_series):
    from tslearn.clustering import TimeSeriesKMeans

    rng = np.random.default_rng(ARGS.seed)
    x = all_series[np.sort(rng.choice(len(all_series), ARGS.n, replace=False))]
    params = dict(max_iter=ARGS.max_iter, max_iter_barycenter=ARGS.max_iter_barycenter, random_state=ARGS.seed)
    numba.set_num_threads(1)
    SoftDTWKMeans(2, ARGS.gamma, max_iter=1, max_iter_barycenter=2).fit(x[:40])        # compile
    c0, w0 = time.process_time(), time.perf_counter()
    ours = SoftDTWKMeans(ARGS.k, ARGS.gamma, **params).fit(x)
    ours_cpu, ours_wall = time.process_time() - c0, time.perf_counter() - w0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = TimeSeriesKMeans(ARGS.k, metric="softdtw", metric_params={"gamma": ARGS.gamma}, **params)
        c0, w0 = time.process_time(), time.perf_counter()
        peer.fit(x[:, :, None])
        peer_cpu, peer_wall = time.process_time() - c0, time.perf_counter() - w0
    peer_c = peer.cluster_centers_[:, :, 0]
    o_ours, o_peer = objective(x, ours.cluster_centers_, ARGS.gamma), objective(x, peer_c, ARGS.gamma)
    print(f"part 1: EGMS n={len(x)} T={x.shape[1]} k={ARGS.k} max_iter={ARGS.max_iter} "
          f"max_iter_barycenter={ARGS.max_iter_barycenter} gamma={ARGS.gamma} seed={ARGS.seed}, one thread")
    print(f"labels equal: {np.array_equal(ours.labels_, peer.labels_)}; iterations {ours.n_iter_} / {peer.n_iter_}; "
          f"max |centroid difference| {np.abs(ours.cluster_centers_ - peer_c).max():.2e} mm")
    print(f"{'method':<34}{'cpu s':>9}{'wall s':>9}{'objective mm^2':>17}{'ratio/core':>12}")
    print(f"{'tslearn TimeSeriesKMeans(softdtw)':<34}{peer_cpu:9.2f}{peer_wall:9.2f}{o_peer:17.6g}{1.0:11.1f}x")
    print(f"{'insarlake SoftDTWKMeans':<34}{ours_cpu:9.3f}{ours_wall:9.3f}{o_ours:17.6g}"
          f"{peer_cpu / ours_cpu:11.1f}x")
    print(f"objective ours / tslearn - 1: {o_ours / o_peer - 1:+.2e}")


def default_fit(all_series):
    cfg = load_config(None, ARGS.set).temporal
    threads = os.cpu_count()
    numba.set_num_threads(threads)
    rng = np.random.default_rng(cfg.seed)
    x = all_series[np.sort(rng.choice(len(all_series), min(cfg.sample_size, len(all_series)), replace=False))]
    k_values = [cfg.k] if cfg.k is not None else list(range(cfg.k_min, cfg.k_max + 1))
    dates = [f"e{i}" for i in range(x.shape[1])]
    marks = []

    class _Timer(logging.Handler):           # wall and CPU time of each step from fit_tskm's INFO lines
        def emit(self, record):
            if record.getMessage().startswith(("TSKM k=", "TSKM silhouette")):
                marks.append((record.getMessage().split(":")[0], time.perf_counter(), time.process_time()))

    log = logging.getLogger("insarlake.temporal.tskm")
    log.setLevel(logging.INFO)
    log.addHandler(_Timer())
    w0, c0 = time.perf_counter(), time.process_time()
    model = fit_tskm(x, dates, metric=cfg.metric, gamma=cfg.gamma, preprocessing=cfg.preprocessing,
                     k_values=k_values, seed=cfg.seed, max_iter=cfg.max_iter,
                     max_iter_barycenter=cfg.max_iter_barycenter, silhouette_size=cfg.silhouette_size)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"part 2: default fit, EGMS n={len(x)} T={x.shape[1]} k={k_values} silhouette_size={cfg.silhouette_size} "
          f"max_iter={cfg.max_iter} max_iter_barycenter={cfg.max_iter_barycenter} gamma={cfg.gamma}, "
          f"{threads} numba threads; load average before {LOAD0:.1f}, after {os.getloadavg()[0]:.1f}")
    print(f"{'step':<28}{'wall s':>9}{'cpu s':>9}")
    pw, pc = w0, c0
    for name, w, c in marks:
        print(f"{name:<28}{w - pw:9.1f}{c - pc:9.1f}")
        pw, pc = w, c
    print(f"{'fit_tskm total':<28}{wall:9.1f}{cpu:9.1f}   (cpu / {threads} = {cpu / threads:.1f} s: the wall time on "
          f"{threads} idle cores); chose k={model.k}, silhouettes "
          + ", ".join(f"{k}: {v:.3f}" for k, v in model.silhouette_by_k.items()))


if __name__ == "__main__":
    LOAD0 = os.getloadavg()[0]
    series = load_egms()
    SoftDTWKMeans(2, 1.0, max_iter=1, max_iter_barycenter=2).fit(series[:40])      # compile before timing
    if not ARGS.skip_peer:
        side_by_side(series)
    if not ARGS.skip_default:
        default_fit(series)
