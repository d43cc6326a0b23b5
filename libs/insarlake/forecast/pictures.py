"""Pictures of the forecast stage: DAPF's learned embeddings coloured by geography (the seed's
Fig. 2) and forecast-vs-truth plots with the 90 % interval for a few pixels (test windows)."""
from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from insarlake.forecast.model import forecast_distribution  # noqa: E402
from insarlake.forecast.train import read_parts  # noqa: E402
from insarlake.forecast.windows import window_batch  # noqa: E402

log = logging.getLogger(__name__)


def _save(fig, path: Path, what: str) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log.info("%s: %s", what, path)
    return path


def _first_part(prepared):
    """(coords, series, local edges) of the largest subgraph of the training sample."""
    p = max(prepared.train_parts, key=lambda q: (prepared.train_parts[q], -q))
    return read_parts(prepared.shards, [p])[p]


def plot_embeddings(prepared, model, path: Path) -> Path:
    """The flow embeddings u of the last input epoch of the latest window (first two latent
    dimensions) of the largest subgraph, coloured by the pixels' east and north coordinates."""
    coords, series, edges = _first_part(prepared)
    start = len(prepared.t_years) - prepared.split.input_len
    batch, _ = window_batch(series, coords, prepared.t_years, start, prepared.split, prepared.norm.scale_mm, edges,
                            with_target=False)
    with torch.no_grad():
        u = model.network.embed(batch)[:, -1, :].numpy()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, values, label in ((axes[0], coords[:, 0], "east (standardised)"), (axes[1], coords[:, 1], "north (standardised)")):
        sc = ax.scatter(u[:, 0], u[:, 1], c=values, s=6, cmap="viridis")
        ax.set_xlabel("u1")
        ax.set_ylabel("u2")
        ax.set_title(f"embeddings coloured by {label}")
        fig.colorbar(sc, ax=ax)
    sc = axes[2].scatter(coords[:, 0], coords[:, 1], c=coords[:, 0], s=6, cmap="viridis")
    axes[2].set_title("pixels (same colours as the left panel)")
    axes[2].set_xlabel("east")
    axes[2].set_ylabel("north")
    return _save(fig, path, "forecast embeddings")


def plot_forecasts(prepared, model, cfg, path: Path) -> Path:
    """Forecast vs truth on the first test window for the cfg.plot_pixels fastest-moving pixels (by
    least-squares velocity) of the largest subgraph: the record, the mean forecast and its 90 %
    interval (mm)."""
    coords, series, edges = _first_part(prepared)
    split, t = prepared.split, prepared.t_years
    start = int(split.starts("test")[0])
    batch, last = window_batch(series, coords, t, start, split, prepared.norm.scale_mm, edges)
    mean, (lo, hi) = forecast_distribution(model.network, batch, (0.05, 0.95), cfg.predict_samples, cfg.samples,
                                           torch.Generator().manual_seed(cfg.seed), model.interval_scale)
    velocity = np.polyfit(t, series.T, 1)[0]            # mm/yr, least squares over the record
    picks = np.argsort(-np.abs(velocity))[:cfg.plot_pixels]
    L, H, scale = split.input_len, split.horizon, prepared.norm.scale_mm
    fig, axes = plt.subplots(len(picks), 1, figsize=(9, 2.6 * len(picks)), squeeze=False)
    for ax, i in zip(axes[:, 0], picks):
        tt = t[start + L:start + L + H]
        ax.plot(t, series[i], color="0.6", lw=0.8, label="record")
        ax.plot(t[start:start + L], series[i, start:start + L], color="k", lw=1.2, label="input window")
        ax.fill_between(tt, last[i] + lo[i] * scale, last[i] + hi[i] * scale, color="tab:orange", alpha=0.3,
                        label="90 % interval")
        ax.plot(tt, last[i] + mean[i] * scale, color="tab:orange", lw=1.5, label="DAPF mean")
        ax.plot(tt, series[i, start + L:start + L + H], "o", ms=3, color="tab:blue", label="truth")
        ax.set_xlim(t[max(start - L, 0)], tt[-1] + (tt[-1] - tt[0]) * 0.3)
        ax.set_ylabel("LOS mm")
    axes[0, 0].legend(fontsize=7, ncol=5)
    axes[-1, 0].set_xlabel("years since the first epoch")
    return _save(fig, path, "forecast plots")
