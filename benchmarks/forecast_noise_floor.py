"""Benchmark: how far any forecaster can get on a simulated scene — the error of an oracle that
knows each pixel's deformation and unwrapping steps exactly, against harmonic_trend, on the test
windows of the forecast stage's split, per subset (all; moving).

The simulator adds to the deformation an atmosphere drawn anew at every epoch and decorrelation
noise: neither can be forecast from the past beyond their per-pixel level and season. The oracle
predicts deformation + unwrap + each pixel's trend-plus-annual fit of (atmosphere + noise) over
the *whole* record (future epochs included: a bound, not a method); what it leaves is the error no
forecaster removes. harmonic_trend and the moving pixels are computed as the forecast stage
computes them (gap-free series, ``record_fit``, ``moving_pixels``); only the measured target values
count here, where `forecast_metrics` also scores the interpolated missing ones, so its figures
differ from the table's in the third decimal.

    .venv/bin/python benchmarks/forecast_noise_floor.py                      # the demo scene (seed 7)
    .venv/bin/python benchmarks/forecast_noise_floor.py --set simulate.seed=3 --set simulate.n_pixels=20000
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "libs"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="config overrides (simulate.*, forecast.input_epochs / horizon_epochs / shares)")
    p.add_argument("--horizons", type=int, nargs="+", default=None,
                   help="forecast steps to score (default: forecast.horizon_epochs and the monitoring horizon)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import pandas as pd

    from insarlake.config import load_config
    from insarlake.forecast.baselines import harmonic_design
    from insarlake.forecast.stage import monitoring_horizon_epochs, moving_pixels
    from insarlake.forecast.windows import WindowSplit, record_fit
    from insarlake.simulate.scene import generate_scene, plan_scene
    from insarlake.temporal.softdtw import fill_missing

    config = load_config(ROOT / "conf" / "local.yaml", overrides=args.overrides)
    cfg = config.forecast
    plan = plan_scene(config.simulate)
    frame, parts = generate_scene(plan, return_components=True)
    t = np.asarray(plan.t_years, np.float64)
    observed = frame[[c for c in frame.columns if c.isdigit() and len(c) == 8]].to_numpy(np.float64)
    series = fill_missing(observed)                                   # as the forecast stage reads it
    noise = parts["atmosphere_mm"] + parts["noise_mm"]
    X = harmonic_design(t)
    coef, *_ = np.linalg.lstsq(X, noise.T, rcond=None)
    oracle = parts["deformation_mm"] + parts["unwrap_mm"] + (X @ coef).T  # (n, T)
    horizons = args.horizons or [cfg.horizon_epochs, monitoring_horizon_epochs(cfg, t) or cfg.horizon_epochs]
    rows = []
    for H in dict.fromkeys(horizons):
        split = WindowSplit.of(len(t), cfg.input_epochs, H, cfg.train_share, cfg.validation_share)
        subsets = {"all": np.ones(len(series), bool), "moving": moving_pixels(series, t, split, cfg.moving_mm_yr)}
        sq = {(m, s): [0.0, 0] for m in ("oracle", "harmonic_trend") for s in subsets}
        for start in split.starts("test"):
            origin = int(start) + cfg.input_epochs
            y = series[:, origin:origin + H]
            valid = ~parts["missing"][:, origin:origin + H]                # measured values only
            preds = {"oracle": oracle[:, origin:origin + H],
                     "harmonic_trend": record_fit(series, t, int(start), split)[:, cfg.input_epochs:]}
            for name, pred in preds.items():
                for subset, rows_mask in subsets.items():
                    keep = valid & rows_mask[:, None]
                    sq[name, subset][0] += float(((pred - y)[keep] ** 2).sum())
                    sq[name, subset][1] += int(keep.sum())
        for subset in subsets:
            floor = np.sqrt(sq["oracle", subset][0] / sq["oracle", subset][1])
            harmonic = np.sqrt(sq["harmonic_trend", subset][0] / sq["harmonic_trend", subset][1])
            rows.append({"horizon_epochs": H, "subset": subset, "pixels": int(subsets[subset].sum()),
                         "oracle_rmse_mm": floor, "harmonic_trend_rmse_mm": harmonic,
                         "headroom": 1.0 - floor / harmonic})
    table = pd.DataFrame(rows)
    sys.stdout.write(f"seed {plan.seed}, {len(series)} pixels x {len(t)} epochs; measured test values only:\n")
    sys.stdout.write(table.to_string(index=False, float_format=lambda v: f"{v:.3f}") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
