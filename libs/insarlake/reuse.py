"""The model-reuse policy (config section ``models``): may a saved model (TSKM, a classifier, DAPF)
serve this run of its dataset, or must it be fitted again? Pure: dates in, a verdict out.

A saved model is reused when its settings match (each stage checks its own) and:

* the dataset's epochs are the model's own (a re-run, a release with the same dates); or
* they are the model's epochs followed by newer ones (an append: ``--mode append``), with
  ``models.reuse_extended`` on, the latest epochs at the cadence of the model's latest epochs
  (median spacings within ``models.cadence_tolerance_days``) and no more than ``models.reuse_max_new_share`` of the
  model's epoch count (drift: the longer the unseen record, the more a refit is worth);

and, with ``models.refit_every_runs`` N > 0, fewer than N runs have reused it since its fit.
Anything else (a release over other dates, another cadence) fits anew, and says why. A reused
model reads the latest ``len(model epochs)`` epochs of each series (``window``): the same number
of epochs at the same cadence as it was fitted on.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Cadences are compared on the latest epochs: the model's latest (this many, or as many as are new
# if more) and the dataset's latest (this many, or all the new ones if fewer). A record whose
# cadence changes (Sentinel-1B failed on 2021-12-23: 6 days, then 12) refits once, and the refitted
# model's latest epochs have the new cadence.
RECENT_EPOCHS = 10


@dataclass(frozen=True)
class ReusePolicy:
    """models.reuse_extended, models.reuse_max_new_share, models.cadence_tolerance_days,
    models.refit_every_runs (0: no limit)."""
    reuse_extended: bool = True
    reuse_max_new_share: float = 0.25
    cadence_tolerance_days: float = 1.0
    refit_every_runs: int = 0

    @classmethod
    def of(cls, models_config) -> "ReusePolicy":
        return cls(models_config.reuse_extended, models_config.reuse_max_new_share,
                   models_config.cadence_tolerance_days, models_config.refit_every_runs)


@dataclass(frozen=True)
class Verdict:
    """reuse: whether the model serves this run; new_epochs: epochs after its last one; why: the
    reason, for the log and ``runs``."""
    reuse: bool
    new_epochs: int
    why: str


def _iso(dates: Sequence) -> list[str]:
    return [d.isoformat() if isinstance(d, (dt.date, dt.datetime)) else str(d) for d in dates]


def median_spacing_days(dates: Sequence[str]) -> float:
    """Median days between consecutive ISO dates; NaN with fewer than two."""
    days = np.asarray(dates, dtype="datetime64[D]").astype(np.int64)
    return float(np.median(np.diff(days))) if len(days) >= 2 else float("nan")


def reuse_verdict(model_dates: Sequence, dates: Sequence, runs_since_fit: int, policy: ReusePolicy) -> Verdict:
    """The policy's answer for a model fitted on ``model_dates`` (ISO strings or dates) and a run
    whose dataset has ``dates``, ``runs_since_fit`` runs having reused the model already."""
    fitted, now = _iso(model_dates), _iso(dates)
    if policy.refit_every_runs and runs_since_fit >= policy.refit_every_runs:
        return Verdict(False, 0, f"reused by {runs_since_fit} runs since its fit "
                                 f"(models.refit_every_runs {policy.refit_every_runs})")
    if now == fitted:
        return Verdict(True, 0, "same epochs")
    if len(now) <= len(fitted) or now[:len(fitted)] != fitted:
        return Verdict(False, 0, "other epochs (not the model's followed by newer ones: a release or a "
                                 "re-referenced series)")
    new = len(now) - len(fitted)
    if not policy.reuse_extended:
        return Verdict(False, new, f"{new} new epochs and models.reuse_extended is off")
    share = new / len(fitted)
    if share > policy.reuse_max_new_share:
        return Verdict(False, new, f"{new} new epochs, {share:.0%} of the model's {len(fitted)} "
                                   f"(models.reuse_max_new_share {policy.reuse_max_new_share:.0%})")
    before = median_spacing_days(fitted[-(max(new, RECENT_EPOCHS) + 1):])
    after = median_spacing_days(now[-(min(new, RECENT_EPOCHS) + 1):])
    if not abs(after - before) <= policy.cadence_tolerance_days:
        return Verdict(False, new, f"other cadence: the new epochs {after:g} days apart, the model's latest {before:g}")
    return Verdict(True, new, f"{new} new epochs ({share:.0%} of the model's {len(fitted)})")


def window(series: np.ndarray, n_epochs: int) -> np.ndarray:
    """The latest ``n_epochs`` epochs of series (n, T), T >= n_epochs: what a reused model reads."""
    series = np.asarray(series)
    if series.shape[-1] < n_epochs:
        raise ValueError(f"series of {series.shape[-1]} epochs, the model needs {n_epochs}")
    return series[..., series.shape[-1] - n_epochs:]
