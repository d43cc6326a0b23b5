"""A mosaic of EGMS files around the real burst, with known answers (issue 19), shared by
tests/test_multitrack.py and benchmarks/multitrack.py: the real burst with a known ground motion
added, a simulated adjacent burst of the same track that overlaps it, and a simulated ascending
track over the same ground."""
from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import numpy as np
import pandas as pd

from insarlake.geo import haversine_m

DESC = "EGMS_L2b_022_0845_IW2_VV_2020_2024_1.csv"           # the real burst (descending)
ADJACENT = "EGMS_L2b_022_0846_IW2_VV_2020_2024_1.csv"       # simulated: the next burst of track 22
ASC = "EGMS_L2b_117_0301_IW1_VV_2020_2024_1.csv"            # simulated: an ascending track

# The known ground motion, a disk in the middle of the burst: east and up velocity (mm/yr).
EAST_MM_YR, UP_MM_YR, DISK_RADIUS_M = 8.0, -15.0, 500.0
ASC_LOS = np.array([-0.62, -0.11, 0.776]) / np.linalg.norm([-0.62, -0.11, 0.776])
STRIP_DEG = 0.003            # the overlap: the real burst's northern ~330 m, measured again by burst 0846
N_CONTROL = 100              # of those, points measured again with a different series (10 mm noise): not twins


def _years(columns) -> np.ndarray:
    dates = pd.to_datetime(list(columns), format="%Y%m%d")
    return ((dates - dates[0]).days / 365.25).to_numpy()


def write_mosaic(folder: Path, egms_csv_bytes: bytes, seed: int = 19, burst_share: float = 1.0) -> dict:
    """Three EGMS CSV files in ``folder`` (the real burst's bytes given), and what was put in them:
    the frames, the disk's centre (lon, lat), the pids of the good re-measurements (twins) and of
    the re-measurements with another series (control), the real burst's mean velocity in the disk.
    burst_share < 1: that share of the real burst's points (a random sample, in their file order)
    for a smaller mosaic; the ascending track keeps its 4,000 points."""
    if not 0.0 < burst_share <= 1.0:
        raise ValueError(f"burst_share must be in (0, 1], got {burst_share}")
    rng = np.random.default_rng(seed)
    real = pd.read_csv(io.BytesIO(egms_csv_bytes), dtype={"pid": str})
    if burst_share < 1.0:
        real = real.sample(frac=burst_share, random_state=seed).sort_index().reset_index(drop=True)
    epochs = [c for c in real.columns if c[:1].isdigit()]
    t = _years(epochs)
    center = (real.longitude.median(), real.latitude.median())

    # the real burst with the disk's motion along its LOS
    desc = real.copy()
    inside = haversine_m(desc.longitude, desc.latitude, *center) < DISK_RADIUS_M
    v_desc = desc.los_east * EAST_MM_YR + desc.los_up * UP_MM_YR          # no north motion
    desc.loc[inside, epochs] = (desc.loc[inside, epochs].to_numpy() + np.outer(v_desc[inside], t)).round(1)
    desc.loc[inside, "mean_velocity"] = (desc.loc[inside, "mean_velocity"] + v_desc[inside]).round(1)

    # burst 0846: its southern edge overlaps the real burst's northern strip; beyond, new ground
    strip = desc[desc.latitude > desc.latitude.max() - STRIP_DEG]
    twins = strip.copy()
    jitter_m = rng.uniform(-1.5, 1.5, size=(len(twins), 2))
    twins["latitude"] += jitter_m[:, 0] / 111_195.0
    twins["longitude"] += jitter_m[:, 1] / (111_195.0 * np.cos(np.radians(twins.latitude)))
    noise = np.where(np.arange(len(twins))[:, None] < N_CONTROL, 10.0, 1.0)
    twins[epochs] = (twins[epochs].to_numpy() + rng.normal(0.0, 1.0, (len(twins), len(epochs))) * noise).round(1)
    twins["temporal_coherence"] = (twins.temporal_coherence - 0.05).clip(0.0, 1.0)
    twins["pid"] = "B" + twins.pid
    beyond = desc[desc.latitude < desc.latitude.min() + 0.01].copy()          # ~1 km of new ground
    beyond["latitude"] += desc.latitude.max() - desc.latitude.min() + 0.001
    beyond["pid"] = "N" + beyond.pid
    adjacent = pd.concat([twins, beyond], ignore_index=True)

    # track 117, ascending: other points over the same ground, on other dates (5 days later)
    asc = real.sample(4000, random_state=3).reset_index(drop=True)
    asc["pid"] = "A" + asc.pid
    asc["latitude"] += rng.normal(0, 30.0, len(asc)) / 111_195.0
    asc["longitude"] += rng.normal(0, 30.0, len(asc)) / (111_195.0 * np.cos(np.radians(asc.latitude)))
    asc["los_east"], asc["los_north"], asc["los_up"] = ASC_LOS.round(3)
    asc["track_angle"], asc["incidence_angle"] = -12.0, 39.0
    inside_asc = haversine_m(asc.longitude, asc.latitude, *center) < DISK_RADIUS_M
    v_asc = rng.normal(0.0, 1.0, len(asc)) + inside_asc * (ASC_LOS[0] * EAST_MM_YR + ASC_LOS[2] * UP_MM_YR)
    asc[epochs] = (np.outer(v_asc, t) + rng.normal(0.0, 2.5, (len(asc), len(epochs)))).round(1)
    asc["mean_velocity"] = v_asc.round(1)
    asc_dates = [(dt.datetime.strptime(c, "%Y%m%d") + dt.timedelta(days=5)).strftime("%Y%m%d") for c in epochs]
    asc = asc.rename(columns=dict(zip(epochs, asc_dates)))

    for name, frame in ((DESC, desc), (ADJACENT, adjacent), (ASC, asc)):
        frame.to_csv(folder / name, index=False)
    return {"folder": folder, "desc": desc, "adjacent": adjacent, "asc": asc, "center": center,
            "control": set(twins.pid[:N_CONTROL]), "twins": set(twins.pid[N_CONTROL:]),
            "desc_background_mm_yr": float(real.mean_velocity[inside].mean())}
