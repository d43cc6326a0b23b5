"""Benchmark: insarlake.temporal.softdtw_assign against tslearn's TimeSeriesKMeans(metric="softdtw").predict.

Both run on the same series and centroids in this process, pinned to one thread. tslearn is timed through
its public predict on a model whose ``cluster_centers_`` is set to the centroids (predict checks only that
attribute, then takes the argmin of ``cdist_soft_dtw(X, cluster_centers_, gamma)``). Ours is timed after a
numba warm-up (compile time excluded), best of ``--repeat``. Labels must be equal; distances are checked
against ``cdist_soft_dtw`` on a subset (untimed).

    .venv/bin/python benchmarks/softdtw_assign.py [--n 2000 --T 210 --k 7 --gamma 1.0 --threads 1]
    .venv/bin/python benchmarks/softdtw_assign.py --egms [--n 2000]     # real EGMS burst (--n 0: all 11,590)

Cells = n * T**2 * k (soft-DTW cells of the full series x centroid matrix, the work tslearn does).
Times are CPU seconds of this (single-threaded) process, best of the runs; wall seconds are printed too.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="number of series (with --egms: 0 = all)")
    p.add_argument("--T", type=int, default=210, help="epochs per series (synthetic only)")
    p.add_argument("--k", type=int, default=7, help="number of centroids")
    p.add_argument("--gamma", type=float, default=1.0, help="soft-DTW gamma (mm^2)")
    p.add_argument("--threads", type=int, default=1, help="threads for numba/BLAS (keep 1: per-core numbers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3, help="best of N for ours")
    p.add_argument("--tslearn-repeat", type=int, default=1, help="best of N for tslearn (slow: ~30 s per run)")
    p.add_argument("--check-n", type=int, default=200, help="series whose distances are checked against cdist_soft_dtw")
    p.add_argument("--egms", action="store_true", help="use the real EGMS burst in ../shared/data/egms")
    p.add_argument("--centroids", choices=["truth", "tskmeans"], default=None,
                   help="truth: mean of each simulated behaviour (synthetic default); tskmeans: tslearn "
                        "TimeSeriesKMeans(softdtw) fitted on 100 series (EGMS default)")
    return p.parse_args()


ARGS = _parse()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))
from insarlake.temporal import softdtw_assign, softdtw_distances  # noqa: E402
from insarlake.temporal.softdtw import _assign, _prepare  # noqa: E402

EGMS_ZIP = ROOT.parent / "shared" / "data" / "egms" / "EGMS_L2b_022_0845_IW2_VV_2020_2024_1.zip"
EGMS_CSV = "EGMS_L2b_022_0845_IW2_VV_2020_2024_1.csv"


def insar_like(n, T, k, seed):
    """Synthetic LOS displacement series (mm) over ~4.6 years; k behaviours; returns (series, classes).

    Behaviours (cycled when k > 7): slow uplift, linear subsidence -5 and -16 mm/yr, seasonal 6 mm with a
    -1 mm/yr trend, a -20 mm step at a random epoch, exponential settling to -60 mm, uplift +8 mm/yr;
    amplitudes jittered +-25 % per series, white noise 1.5-4 mm.
    """
    rng = np.random.default_rng(seed)
    years = 4.6
    t = np.linspace(0.0, years, T)
    cls = rng.integers(0, k, n)
    X = np.empty((n, T))
    for s in range(n):
        c = cls[s] % 7
        j = 1.0 + 0.25 * rng.standard_normal()
        if c == 0:
            y = 0.5 * j * t
        elif c == 1:
            y = -5.0 * j * t
        elif c == 2:
            y = -16.0 * j * t
        elif c == 3:
            y = 6.0 * j * np.sin(2 * np.pi * (t - 0.2 + 0.05 * rng.standard_normal())) - 1.0 * t
        elif c == 4:
            y = np.where(t > rng.uniform(1.0, years - 1.0), -20.0 * j, 0.0) - 1.0 * t
        elif c == 5:
            y = -60.0 * j * (1.0 - np.exp(-t / (1.2 * (1.0 + 0.2 * rng.standard_normal()))))
        else:
            y = 8.0 * j * t
        X[s] = y + rng.uniform(1.5, 4.0) * rng.standard_normal(T)
    return X, cls


def load_egms(n, seed):
    import io
    import zipfile

    import pandas as pd

    with zipfile.ZipFile(EGMS_ZIP) as zf:
        frame = pd.read_csv(io.BytesIO(zf.read(EGMS_CSV)))
    X = frame[[c for c in frame.columns if c.isdigit()]].to_numpy(np.float64)
    if 0 < n < X.shape[0]:
        X = X[np.sort(np.random.default_rng(seed).choice(X.shape[0], n, replace=False))]
    return X


def tskmeans_centroids(X, k, gamma, seed):
    from tslearn.clustering import TimeSeriesKMeans

    sample = X[np.random.default_rng(seed + 1).choice(X.shape[0], min(100, X.shape[0]), replace=False)]
    model = TimeSeriesKMeans(n_clusters=k, metric="softdtw", metric_params={"gamma": gamma}, max_iter=3,
                             max_iter_barycenter=5, random_state=seed).fit(sample)
    return model.cluster_centers_[:, :, 0].copy()


def best_of(fn, repeat):
    """(CPU seconds, wall seconds, result) of the best of `repeat` runs (CPU time of this process: with one
    thread it is the per-core time, unaffected by other jobs sharing the machine)."""
    best_cpu, best_wall, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return best_cpu, best_wall, out


def tslearn_kernel_labels(X, C, gamma):
    """argmin over centroids of tslearn's numba soft-DTW kernel, called directly on each pair's squared cost
    matrix: tslearn's arithmetic without its per-pair Python overhead (tslearn 0.7's backend selection
    formats every array with str(), which costs more than the kernel). A stricter baseline than predict."""
    from tslearn.metrics.soft_dtw_fast import _njit_soft_dtw

    n, T = X.shape
    R = np.zeros((T + 2, T + 2))
    out = np.empty((n, len(C)))
    for i in range(n):
        for j in range(len(C)):
            _njit_soft_dtw((X[i][:, None] - C[j][None, :]) ** 2, R, gamma)
            out[i, j] = R[T, T]
    return out.argmin(axis=1)


def main():
    numba.set_num_threads(ARGS.threads)
    warnings.simplefilter("ignore")            # sklearn's force_all_finite deprecation inside tslearn
    from tslearn.clustering import TimeSeriesKMeans
    from tslearn.metrics import cdist_soft_dtw

    g, k = ARGS.gamma, ARGS.k
    if ARGS.egms:
        X = load_egms(ARGS.n, ARGS.seed)
        how = ARGS.centroids or "tskmeans"
        source = f"EGMS burst {EGMS_ZIP.name}"
    else:
        X, cls = insar_like(ARGS.n, ARGS.T, k, ARGS.seed)
        how = ARGS.centroids or "truth"
        source = "synthetic InSAR-like series (seed %d)" % ARGS.seed
    if how == "truth":
        if ARGS.egms:
            sys.exit("--centroids truth needs synthetic data")
        C = np.stack([X[cls == c].mean(axis=0) if (cls == c).any() else X[c] for c in range(k)])
    else:
        t0 = time.perf_counter()
        C = tskmeans_centroids(X, k, g, ARGS.seed)
        print(f"centroids: TimeSeriesKMeans(softdtw) on 100 series in {time.perf_counter() - t0:.1f} s")
    n, T = X.shape
    cells = n * T * T * k
    print(f"data: {source}; n={n} T={T} k={k} gamma={g} threads={ARGS.threads} centroids={how}; "
          f"values {X.min():.1f}..{X.max():.1f} mm")

    # warm-up: numba compile (cached on disk) and tslearn's own numba kernel
    softdtw_assign(X[:40], C, g, return_distance=True)
    softdtw_distances(X[:40], C, g)
    model = TimeSeriesKMeans(n_clusters=k, metric="softdtw", metric_params={"gamma": g})
    model.cluster_centers_ = C[:, :, None].copy()
    model.predict(X[:2])

    tslearn_kernel_labels(X[:2], C, g)
    t_ref, w_ref, ref_labels = best_of(lambda: model.predict(X), ARGS.tslearn_repeat)
    t_ker, w_ker, ker_labels = best_of(lambda: tslearn_kernel_labels(X, C, g), ARGS.tslearn_repeat)
    t_lab, w_lab, labels = best_of(lambda: softdtw_assign(X, C, g), ARGS.repeat)
    t_dist, w_dist, (labels2, dist) = best_of(lambda: softdtw_assign(X, C, g, return_distance=True), ARGS.repeat)
    t_full, w_full, full = best_of(lambda: softdtw_distances(X, C, g), ARGS.repeat)

    stats = {}
    Xc, Cc, gc = _prepare(X, C, g)
    _assign(Xc, Cc, gc, stats)
    m = min(ARGS.check_n, n)
    ref_d = cdist_soft_dtw(X[:m], C, gamma=g)
    rel = lambda a, b: float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))  # noqa: E731
    same = bool(np.array_equal(labels, ref_labels) and np.array_equal(labels2, ref_labels)
                and np.array_equal(ker_labels, ref_labels))
    print(f"labels equal to tslearn predict (ours, and the kernel-only loop): {same} "
          f"({int(np.sum(labels != ref_labels))} differ); "
          f"max rel diff vs cdist_soft_dtw on {m} series: assign distance "
          f"{rel(dist[:m], ref_d[np.arange(m), labels[:m]]):.1e}, full matrix {rel(full[:m], ref_d):.1e}; "
          f"exact soft-DTW per series {stats['exact'] / n:.2f} of {k}")
    print()
    print(f"{'method':40s} {'n':>6s} {'T':>4s} {'k':>3s} {'cells':>9s} {'cpu s':>8s} {'wall s':>8s} "
          f"{'cells/s':>9s} {'ratio':>7s} {'ratio_k':>7s}")
    rows = [("tslearn TimeSeriesKMeans.predict", t_ref, w_ref),
            ("tslearn numba kernel only (per pair)", t_ker, w_ker), ("softdtw_assign (labels)", t_lab, w_lab),
            ("softdtw_assign (labels + distance)", t_dist, w_dist),
            ("softdtw_distances (full n x k matrix)", t_full, w_full)]
    for name, sec, wall in rows:
        print(f"{name:40s} {n:6d} {T:4d} {k:3d} {cells:9.3g} {sec:8.3f} {wall:8.3f} {cells / sec:9.3g} "
              f"{t_ref / sec:6.1f}x {t_ker / sec:6.1f}x")
    print("ratio: tslearn predict cpu s / this row's cpu s; ratio_k: same against the tslearn kernel-only loop. "
          "CPU time of this single-threaded process; "
          f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
