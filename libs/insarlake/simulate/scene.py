"""Simulated InSAR scene with ground truth, in the layout of the Copernicus EGMS L2b product.

Pure numpy/pandas kernel (no Spark). The scene is planned once on the driver (:func:`plan_scene`,
small and picklable, broadcast to executors) and generated tile by tile
(:func:`generate_tile`), so Spark can run tiles in parallel. Randomness:

* scene-wide draws (calendar, urban patches, terrain, sources, atmosphere, pixel allocation)
  come from ``SeedSequence([seed, STREAM_xxx])`` with a fixed stream id per part;
* each tile's draws come only from ``SeedSequence([seed, STREAM_TILE, tile_index])``,

so the same seed gives bit-identical tiles whatever the partitioning or the order of tiles.

Frame: x east / y north in metres from the scene's south-west corner; lon/lat by an
equirectangular mapping around (center_lon, center_lat) on a sphere of radius 6,371,008.8 m.
Displacements are LOS (ground-to-satellite, uplift > 0) in mm, referenced to the first epoch
and, for the atmosphere, to the scene centre.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from insarlake.config import SOURCE_KINDS   # noqa: F401  (the kinds the config may name)
from insarlake.errors import ConfigError
from insarlake.geo import EARTH_RADIUS_M
from insarlake.timeseries import DAYS_PER_YEAR, fit_velocity, years_since

log = logging.getLogger(__name__)

EGMS_STATIC_COLUMNS: tuple[str, ...] = (
    "pid", "latitude", "longitude", "height_ortho", "rmse_ts", "temporal_coherence",
    "incidence_angle", "track_angle", "los_east", "los_north", "los_up", "mean_velocity",
    "mean_velocity_std", "acceleration", "acceleration_std", "seasonality", "seasonality_std",
)
TRUTH_COLUMNS: tuple[str, ...] = ("source_id", "source_type")


# Fixed RNG stream ids: SeedSequence([seed, stream, ...]).
STREAM_CALENDAR = 1
STREAM_URBAN = 2
STREAM_TERRAIN = 3
STREAM_SOURCES = 4
STREAM_ATMOSPHERE = 5          # wavevector pool and per-epoch coefficients (regenerated per tile)
STREAM_ATMOSPHERE_EPOCH = 6    # per-epoch strength and stratified coefficient (stored in plan)
STREAM_ALLOCATION = 7
STREAM_NESTING = 8             # simulate.nested_share: which sources move next to another, and where
STREAM_TILE = 1000

# Model constants (documented where used).
TERRAIN_WAVES = 64
TERRAIN_MIN_WAVELENGTH_M = 400.0
TERRAIN_HURST = 0.6                 # component amplitude ~ wavelength**H
ATMO_SPECTRAL_EXPONENT = 8.0 / 3.0  # 2-D screen spectrum P(k) ~ (k0^2 + k^2)^(-8/6), k0 = 1/scale
ATMO_MIN_WAVELENGTH_M = 150.0
ATMO_POOL_FACTOR = 2                # wavevector pool = factor x atmosphere_waves
URBAN_COHERENCE_BETA = (18.0, 2.0)  # mean 0.9
RURAL_COHERENCE_RANGE = (0.4, 0.8)  # 0.4 + 0.4 * Beta(2, 2)
MAX_COHERENCE = 0.995
SECOND_UNWRAP_STEP_SHARE = 0.25
INTEGRATION_CELL_M = 50.0           # cell of the numerical density integral per tile
LANDSLIDE_SLOPE_QUANTILE = 0.85     # landslides start in the steepest 15 % of the scene
LANDSLIDE_MIN_LOS_GAIN = 0.3
PLAN_GRID_CELLS = 200               # grid (per axis) for terrain normalisation / landslide sites


# --------------------------------------------------------------------------------------------
# Plan dataclasses
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TileSpec:
    """A generation tile: box [x0_m, x1_m) x [y0_m, y1_m) in the local frame, n_pixels to draw."""
    tile_index: int
    x0_m: float
    y0_m: float
    x1_m: float
    y1_m: float
    n_pixels: int


@dataclass(frozen=True)
class Source:
    """A deformation source (ground truth).

    source_id: 1..S; kind: one of SOURCE_KINDS; (x_m, y_m): reference point in the local frame
    (bowl/landslide centre, tunnel start, fault midpoint); params: kind-specific parameters as
    (name, value) pairs, names carrying units. Azimuths are clockwise from north; *_yr times are
    years since the first acquisition.

    * subsidence / uplift: radius_m (= 2 sigma of the elliptic Gaussian bowl), aspect,
      azimuth_rad (major axis), rate_mm_yr (vertical at the centre), seasonal_mm,
      seasonal_phase_rad, horizontal_ratio (radial horizontal motion per unit r/sigma);
    * landslide: length_m (along slope), width_ratio, downslope_azimuth_rad, slope_rad,
      velocity_mm_yr, acceleration_mm_yr2 (along the surface: d = v0 t + a t^2 / 2);
    * tunnel: azimuth_rad, length_m, trough_width_m (Peck i), depth_m, settlement_mm (S_max),
      tau_days, onset_start_yr / onset_end_yr (TBM at the start / end of the corridor);
    * postseismic: strike_rad, length_m, decay_m, vertical_mm, strike_slip_mm (co-seismic
      motion next to the fault, opposite on the two sides), event_yr, log_factor, tau_days,
      smooth_m.
    """
    source_id: int
    kind: str
    x_m: float
    y_m: float
    params: tuple[tuple[str, float], ...]

    def param(self, name: str) -> float:
        for key, value in self.params:
            if key == name:
                return value
        raise KeyError(f"source {self.source_id} ({self.kind}) has no parameter {name!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"source_id": self.source_id, "kind": self.kind, "x_m": self.x_m,
                "y_m": self.y_m, **dict(self.params)}


@dataclass(frozen=True, eq=False)
class ScenePlan:
    """Everything :func:`generate_tile` needs (a few tens of KB; picklable).

    Arrays: dates (T,) datetime64[D]; t_years (T,) years since dates[0]; urban_* (P,) patches;
    terrain_* (K,) Fourier components of the height field; atmosphere_sigma_mm and
    stratified_mm_per_m (T,) per-epoch atmosphere strength. The atmosphere's wavevectors and
    coefficients (T x atmosphere_waves) are regenerated deterministically from
    (seed, STREAM_ATMOSPHERE) by each tile instead of being shipped.
    """
    seed: int
    n_pixels: int
    # frame
    width_m: float
    height_m: float
    tile_m: float
    center_lon_deg: float
    center_lat_deg: float
    # calendar
    dates: np.ndarray
    t_years: np.ndarray
    # tiles and sources
    tiles: tuple[TileSpec, ...]
    sources: tuple[Source, ...]
    # pixel density: countryside density + elliptic Gaussian urban patches (pixels per m^2
    # normalised so the density integrates to 1 over the scene)
    rural_density_per_m2: float
    urban_x_m: np.ndarray
    urban_y_m: np.ndarray
    urban_sigma_major_m: np.ndarray
    urban_sigma_minor_m: np.ndarray
    urban_azimuth_rad: np.ndarray       # direction of the major axis, clockwise from north
    urban_peak_density_per_m2: np.ndarray
    # terrain: h = terrain_base_m + sum_k amp_k cos(kx_k x + ky_k y + phase_k)
    terrain_kx_rad_m: np.ndarray
    terrain_ky_rad_m: np.ndarray
    terrain_amp_m: np.ndarray
    terrain_phase_rad: np.ndarray
    terrain_base_m: float
    # geometry
    track_angle_deg: float
    incidence_near_deg: float
    incidence_far_deg: float
    across_min_m: float
    across_max_m: float
    wavelength_mm: float
    looks: float
    # atmosphere
    atmosphere_waves: int
    atmosphere_scale_m: float
    atmosphere_sigma_mm: np.ndarray     # (T,) std of the turbulent screen of each epoch
    stratified_mm_per_m: np.ndarray     # (T,) stratified delay coefficient of each epoch
    reference_x_m: float
    reference_y_m: float
    # errors and truth
    unwrap_error_share: float
    missing_share: float
    point_velocity_mm_yr: float         # std of each point's own linear trend (0: none)
    truth_min_mm: float


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, stream)]))


def _get(sim: Any, name: str) -> Any:
    """A key of the simulate config (an object with attributes, or a mapping); no defaults here:
    they live in conf/default.yaml."""
    if isinstance(sim, Mapping):
        return sim[name]
    return getattr(sim, name)


def local_to_lonlat(plan: ScenePlan, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local (x_m, y_m) -> (lon_deg, lat_deg), equirectangular around the scene centre."""
    cos_lat = math.cos(math.radians(plan.center_lat_deg))
    lon = plan.center_lon_deg + np.degrees((np.asarray(x_m) - plan.width_m / 2) / (EARTH_RADIUS_M * cos_lat))
    lat = plan.center_lat_deg + np.degrees((np.asarray(y_m) - plan.height_m / 2) / EARTH_RADIUS_M)
    return lon, lat


def lonlat_to_local(plan: ScenePlan, lon_deg: np.ndarray, lat_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`local_to_lonlat`: (lon_deg, lat_deg) -> (x_m, y_m)."""
    cos_lat = math.cos(math.radians(plan.center_lat_deg))
    x = np.radians(np.asarray(lon_deg) - plan.center_lon_deg) * EARTH_RADIUS_M * cos_lat + plan.width_m / 2
    y = np.radians(np.asarray(lat_deg) - plan.center_lat_deg) * EARTH_RADIUS_M + plan.height_m / 2
    return x, y


def scene_bounds_lonlat(plan: ScenePlan) -> tuple[float, float, float, float]:
    """(lon_min, lat_min, lon_max, lat_max) of the scene box, degrees."""
    lon, lat = local_to_lonlat(plan, np.array([0.0, plan.width_m]), np.array([0.0, plan.height_m]))
    return float(lon[0]), float(lat[0]), float(lon[1]), float(lat[1])


def epoch_column_names(plan: ScenePlan) -> list[str]:
    """'YYYYMMDD' for each acquisition date of the plan, (T,)."""
    return [str(d).replace("-", "") for d in plan.dates.astype("datetime64[D]")]


# --------------------------------------------------------------------------------------------
# Calendar
# --------------------------------------------------------------------------------------------
def _acquisition_dates(sim: Any) -> np.ndarray:
    start = np.datetime64(str(_get(sim, "start_date")), "D")
    end = np.datetime64(str(_get(sim, "end_date")), "D")
    if end <= start:
        raise ValueError(f"simulate.end_date {end} must be after start_date {start}")
    cadence = int(_get(sim, "cadence_days"))
    change = _get(sim, "cadence_change_date")
    after = int(_get(sim, "cadence_after_days"))
    if cadence <= 0 or after <= 0:
        raise ValueError("simulate.cadence_days and cadence_after_days must be positive")
    change_d = np.datetime64(str(change), "D") if change else end + 1
    first = np.arange(start, min(change_d, end + 1), np.timedelta64(cadence, "D"))
    # the orbit keeps its phase: after the change the remaining satellite goes on from its last
    # acquisition, every `after` days
    resume = first[-1] + np.timedelta64(after, "D") if first.size else change_d
    second = (np.arange(resume, end + 1, np.timedelta64(after, "D"))
              if resume <= end else np.array([], dtype="datetime64[D]"))
    dates = np.concatenate([first, second]).astype("datetime64[D]")
    gap = float(_get(sim, "acquisition_gap_share"))
    rng = _rng(_get(sim, "seed"), STREAM_CALENDAR)
    keep = rng.random(dates.size) >= gap
    keep[0] = True  # the reference (first) acquisition always exists
    dates = np.unique(dates[keep])
    if dates.size < 6:
        raise ValueError(f"simulate calendar gives only {dates.size} acquisitions; need >= 6")
    return dates


# --------------------------------------------------------------------------------------------
# Urban density
# --------------------------------------------------------------------------------------------
def _urban_quadratic(plan_like: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mahalanobis distance^2 (n, P) of points to each urban patch."""
    dx = x[:, None] - plan_like.urban_x_m[None, :]
    dy = y[:, None] - plan_like.urban_y_m[None, :]
    sa, ca = np.sin(plan_like.urban_azimuth_rad), np.cos(plan_like.urban_azimuth_rad)
    along = dx * sa + dy * ca
    across = dx * ca - dy * sa
    return (along / plan_like.urban_sigma_major_m) ** 2 + (across / plan_like.urban_sigma_minor_m) ** 2


def _urban_density(plan: ScenePlan, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Urban part of the pixel density (per m^2), (n,)."""
    if plan.urban_x_m.size == 0:
        return np.zeros(np.shape(x))
    return np.exp(-0.5 * _urban_quadratic(plan, x, y)) @ plan.urban_peak_density_per_m2


def pixel_density_per_m2(plan: ScenePlan, x_m: np.ndarray, y_m: np.ndarray) -> np.ndarray:
    """Probability density of a pixel's position (per m^2, integrates to ~1 over the scene), (n,)."""
    x = np.asarray(x_m, dtype=np.float64)
    y = np.asarray(y_m, dtype=np.float64)
    return plan.rural_density_per_m2 + _urban_density(plan, x, y)


@dataclass(frozen=True)
class _Patches:
    urban_x_m: np.ndarray
    urban_y_m: np.ndarray
    urban_sigma_major_m: np.ndarray
    urban_sigma_minor_m: np.ndarray
    urban_azimuth_rad: np.ndarray
    weight: np.ndarray


def _draw_urban_patches(sim: Any, width_m: float, height_m: float) -> _Patches:
    rng = _rng(_get(sim, "seed"), STREAM_URBAN)
    n = int(_get(sim, "urban_patches"))
    radius0_m = float(_get(sim, "urban_radius_km")) * 1000.0
    radii = radius0_m * np.exp(0.3 * rng.standard_normal(n))
    aspect = rng.uniform(1.0, 1.8, n)
    azimuth = rng.uniform(0.0, np.pi, n)
    weight = radii ** 2 * rng.gamma(4.0, 1.0, n)
    xs, ys = np.empty(n), np.empty(n)
    for i in range(n):
        best, best_score = None, -np.inf
        for _ in range(200):
            cx = rng.uniform(0.1, 0.9) * width_m
            cy = rng.uniform(0.1, 0.9) * height_m
            if i == 0:
                best = (cx, cy)
                break
            d = np.hypot(xs[:i] - cx, ys[:i] - cy) / (1.5 * (radii[:i] + radii[i]))
            score = d.min()
            if score > best_score:
                best, best_score = (cx, cy), score
            if score >= 1.0:
                break
        xs[i], ys[i] = best
    return _Patches(xs, ys, radii * np.sqrt(aspect), radii / np.sqrt(aspect), azimuth,
                    weight / weight.sum() if n else weight)


def _make_tiles_boxes(width_m: float, height_m: float, tile_m: float) -> list[tuple[int, float, float, float, float]]:
    nx = max(1, int(math.ceil(width_m / tile_m - 1e-9)))
    ny = max(1, int(math.ceil(height_m / tile_m - 1e-9)))
    boxes = []
    for iy in range(ny):
        for ix in range(nx):
            boxes.append((iy * nx + ix, ix * tile_m, iy * tile_m,
                          min((ix + 1) * tile_m, width_m), min((iy + 1) * tile_m, height_m)))
    return boxes


def _tile_urban_mass(patches: _Patches, box: tuple[int, float, float, float, float]) -> float:
    """Integral over the box of the unit-mass urban mixture sum_k w_k N_k (midpoint rule)."""
    _, x0, y0, x1, y1 = box
    nx = max(4, int(math.ceil((x1 - x0) / INTEGRATION_CELL_M)))
    ny = max(4, int(math.ceil((y1 - y0) / INTEGRATION_CELL_M)))
    dx, dy = (x1 - x0) / nx, (y1 - y0) / ny
    gx = x0 + dx * (np.arange(nx) + 0.5)
    gy = y0 + dy * (np.arange(ny) + 0.5)
    X, Y = np.meshgrid(gx, gy)
    q = _urban_quadratic(patches, X.ravel(), Y.ravel())
    norm = patches.weight / (2 * np.pi * patches.urban_sigma_major_m * patches.urban_sigma_minor_m)
    return float((np.exp(-0.5 * q) @ norm).sum() * dx * dy)


# --------------------------------------------------------------------------------------------
# Terrain
# --------------------------------------------------------------------------------------------
def _terrain_phase(plan_like: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (np.multiply.outer(x, plan_like.terrain_kx_rad_m) + np.multiply.outer(y, plan_like.terrain_ky_rad_m)
            + plan_like.terrain_phase_rad)


def terrain_height_m(plan: ScenePlan, x_m: np.ndarray, y_m: np.ndarray) -> np.ndarray:
    """Orthometric height (m) of the smooth terrain field at local points, (n,)."""
    ph = _terrain_phase(plan, np.asarray(x_m, float), np.asarray(y_m, float))
    return plan.terrain_base_m + np.cos(ph) @ plan.terrain_amp_m


def terrain_gradient(plan: ScenePlan, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Analytic gradient (dh/dx, dh/dy) of the terrain (m/m), each (n,)."""
    s = np.sin(_terrain_phase(plan, np.asarray(x_m, float), np.asarray(y_m, float)))
    return -(s @ (plan.terrain_amp_m * plan.terrain_kx_rad_m)), -(s @ (plan.terrain_amp_m * plan.terrain_ky_rad_m))


def terrain_slope_deg(plan: ScenePlan, x_m: np.ndarray, y_m: np.ndarray) -> np.ndarray:
    """Terrain slope angle (degrees), (n,)."""
    gx, gy = terrain_gradient(plan, x_m, y_m)
    return np.degrees(np.arctan(np.hypot(gx, gy)))


@dataclass(frozen=True)
class _Terrain:
    terrain_kx_rad_m: np.ndarray
    terrain_ky_rad_m: np.ndarray
    terrain_amp_m: np.ndarray
    terrain_phase_rad: np.ndarray
    terrain_base_m: float


def _draw_terrain(sim: Any, width_m: float, height_m: float) -> _Terrain:
    """Random Fourier terrain with a power-law spectrum, scaled to terrain_relief_m peak-to-trough."""
    rng = _rng(_get(sim, "seed"), STREAM_TERRAIN)
    lam_max = 2.0 * max(width_m, height_m)
    lam = np.exp(rng.uniform(np.log(TERRAIN_MIN_WAVELENGTH_M), np.log(lam_max), TERRAIN_WAVES))
    direction = rng.uniform(0, 2 * np.pi, TERRAIN_WAVES)
    k = 2 * np.pi / lam
    amp = lam ** TERRAIN_HURST * rng.rayleigh(1.0, TERRAIN_WAVES)
    phase = rng.uniform(0, 2 * np.pi, TERRAIN_WAVES)
    kx, ky = k * np.sin(direction), k * np.cos(direction)
    proto = _Terrain(kx, ky, amp, phase, 0.0)
    gx = np.linspace(0, width_m, PLAN_GRID_CELLS + 1)
    gy = np.linspace(0, height_m, PLAN_GRID_CELLS + 1)
    X, Y = np.meshgrid(gx, gy)
    h = np.cos(_terrain_phase(proto, X.ravel(), Y.ravel())) @ amp
    relief = float(_get(sim, "terrain_relief_m"))
    scale = relief / max(float(h.max() - h.min()), 1e-12)
    base = float(_get(sim, "base_height_m")) - scale * float(h.min())
    return _Terrain(kx, ky, amp * scale, phase, base)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
def _look_azimuth_rad(plan_like: Any) -> float:
    """Azimuth of the (right-looking) radar look direction: track + 90 deg, clockwise from north."""
    return math.radians(plan_like.track_angle_deg + 90.0)


def los_geometry(plan: ScenePlan, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, ...]:
    """Incidence angle (deg) and unit LOS vector (east, north, up), ground-to-satellite, each (n,).

    Incidence grows linearly across track (along the look direction) from incidence_near_deg at
    the scene's near edge to incidence_far_deg at its far edge.
    """
    az = _look_azimuth_rad(plan)
    across = np.asarray(x_m) * math.sin(az) + np.asarray(y_m) * math.cos(az)
    span = max(plan.across_max_m - plan.across_min_m, 1e-9)
    frac = (across - plan.across_min_m) / span
    inc_deg = plan.incidence_near_deg + (plan.incidence_far_deg - plan.incidence_near_deg) * frac
    inc = np.radians(inc_deg)
    # ground-to-satellite horizontal direction is opposite to the look direction
    los_east = -np.sin(inc) * math.sin(az)
    los_north = -np.sin(inc) * math.cos(az)
    los_up = np.cos(inc)
    return inc_deg, los_east, los_north, los_up


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------
class _Placer:
    """Keeps placed sources' (x, y, extent_m) to keep footprints apart."""

    def __init__(self) -> None:
        self.placed: list[tuple[float, float, float]] = []

    def score(self, x: float, y: float, extent_m: float, factor: float) -> float:
        if not self.placed:
            return np.inf
        return min(math.hypot(x - px, y - py) / (factor * (extent_m + pe)) for px, py, pe in self.placed)

    def choose(self, draw, extent_m: float, factor: float = 1.0, tries: int = 60) -> tuple[float, float]:
        best, best_score = None, -np.inf
        for _ in range(tries):
            x, y = draw()
            s = self.score(x, y, extent_m, factor)
            if s > best_score:
                best, best_score = (x, y), s
            if s >= 1.0:
                break
        self.placed.append((best[0], best[1], extent_m))
        return best


def _draw_sources(sim: Any, plan_geo: dict[str, Any], dates: np.ndarray, t_years: np.ndarray) -> tuple[Source, ...]:
    """Place the configured sources on the scene RNG (stream STREAM_SOURCES)."""
    counts = dict(_get(sim, "sources"))
    unknown = set(counts) - set(SOURCE_KINDS)
    if unknown:
        raise ValueError(f"simulate.sources: unknown kinds {sorted(unknown)}; known {SOURCE_KINDS}")
    counts = {k: int(counts.get(k, 0) or 0) for k in SOURCE_KINDS}
    rng = _rng(_get(sim, "seed"), STREAM_SOURCES)
    W, H = plan_geo["width_m"], plan_geo["height_m"]
    patches: _Patches = plan_geo["patches"]
    span_yr = float(t_years[-1])
    placer = _Placer()
    drafted: dict[str, list[tuple[float, float, dict[str, float]]]] = {k: [] for k in SOURCE_KINDS}

    def uniform_point(margin: float = 0.1):
        return (rng.uniform(margin, 1 - margin) * W, rng.uniform(margin, 1 - margin) * H)

    def clip_point(x: float, y: float, margin: float = 0.05):
        return (float(np.clip(x, margin * W, (1 - margin) * W)), float(np.clip(y, margin * H, (1 - margin) * H)))

    def patch_point(spread: float = 0.6):
        if patches.weight.size == 0:
            return uniform_point()
        i = rng.choice(patches.weight.size, p=patches.weight)
        r = math.sqrt(patches.urban_sigma_major_m[i] * patches.urban_sigma_minor_m[i])
        return clip_point(patches.urban_x_m[i] + spread * r * rng.standard_normal(),
                          patches.urban_y_m[i] + spread * r * rng.standard_normal())

    # tunnels: metro lines through an urban patch, TBM front moving inside the window
    for _ in range(counts["tunnel"]):
        length_m = rng.uniform(2500.0, 5000.0)
        width_m = rng.uniform(50.0, 150.0)
        mid = placer.choose(lambda: patch_point(0.3), 0.5 * length_m + 3 * width_m, 0.6)
        az = rng.uniform(0, np.pi)
        x0 = mid[0] - 0.5 * length_m * math.sin(az)
        y0 = mid[1] - 0.5 * length_m * math.cos(az)
        onset0 = rng.uniform(0.1, 0.35) * span_yr
        onset1 = onset0 + rng.uniform(0.3, 0.5) * span_yr
        drafted["tunnel"].append((x0, y0, {
            "azimuth_rad": az, "length_m": length_m, "trough_width_m": width_m,
            "depth_m": 2.0 * width_m, "settlement_mm": rng.uniform(10.0, 40.0),
            "tau_days": rng.uniform(30.0, 120.0),
            "onset_start_yr": onset0, "onset_end_yr": min(onset1, 0.92 * span_yr)}))

    # subsidence bowls: aquifer compaction under/near towns
    for _ in range(counts["subsidence"]):
        radius_m = rng.uniform(1000.0, 3000.0)
        x, y = placer.choose(lambda: patch_point(0.6), 1.3 * radius_m, 0.8)
        drafted["subsidence"].append((x, y, {
            "radius_m": radius_m, "aspect": rng.uniform(1.0, 1.6), "azimuth_rad": rng.uniform(0, np.pi),
            "rate_mm_yr": -rng.uniform(8.0, 40.0), "seasonal_mm": rng.uniform(1.0, 5.0),
            "seasonal_phase_rad": rng.uniform(0, 2 * np.pi), "horizontal_ratio": rng.uniform(0.05, 0.2)}))

    # post-seismic zone: fault trace, co-seismic step + logarithmic afterslip
    for _ in range(counts["postseismic"]):
        length_m = rng.uniform(4000.0, 9000.0)
        decay_m = rng.uniform(800.0, 2000.0)
        x, y = placer.choose(lambda: uniform_point(0.2), 0.5 * length_m + decay_m, 0.5)
        strike = rng.uniform(0, np.pi)
        mix = rng.uniform(0.2, 0.8) * np.pi / 2
        vertical = math.cos(mix) * rng.choice([-1.0, 1.0])
        horizontal = math.sin(mix)
        # the event is seen by the radar: vertical and strike-slip LOS contributions add up and
        # the co-seismic LOS step next to the fault is los_step_mm
        _, le, ln, lu = plan_geo["los"](np.array([x]), np.array([y]))
        h_gain = math.sin(strike) * le[0] + math.cos(strike) * ln[0]
        horizontal *= math.copysign(1.0, vertical * lu[0] * h_gain)
        gain = abs(vertical * lu[0] + horizontal * h_gain)
        step = rng.uniform(6.0, 15.0) / gain
        drafted["postseismic"].append((x, y, {
            "strike_rad": strike, "length_m": length_m, "decay_m": decay_m,
            "vertical_mm": vertical * step, "strike_slip_mm": horizontal * step,
            "event_yr": rng.uniform(0.3, 0.7) * span_yr, "log_factor": rng.uniform(0.2, 0.6),
            "tau_days": rng.uniform(5.0, 40.0), "smooth_m": 150.0}))

    # uplift: aquifer recharge
    for _ in range(counts["uplift"]):
        radius_m = rng.uniform(1000.0, 2000.0)
        x, y = placer.choose(lambda: uniform_point(0.12), 1.3 * radius_m, 1.0)
        drafted["uplift"].append((x, y, {
            "radius_m": radius_m, "aspect": rng.uniform(1.0, 1.5), "azimuth_rad": rng.uniform(0, np.pi),
            "rate_mm_yr": rng.uniform(3.0, 10.0), "seasonal_mm": rng.uniform(1.0, 3.0),
            "seasonal_phase_rad": rng.uniform(0, 2 * np.pi), "horizontal_ratio": rng.uniform(0.05, 0.2)}))

    # landslides: steep slopes (weighted by slope, pixel density and LOS visibility)
    if counts["landslide"]:
        cand = plan_geo["landslide_candidates"]
        for _ in range(counts["landslide"]):
            length_m = rng.uniform(200.0, 800.0)

            def draw_site():
                # a candidate cell, jittered; the jittered point must still see the motion
                j = rng.choice(cand["x"].size, p=cand["p"])
                for _ in range(20):
                    px = float(cand["x"][j] + rng.uniform(-0.5, 0.5) * cand["cell_m"])
                    py = float(cand["y"][j] + rng.uniform(-0.5, 0.5) * cand["cell_m"])
                    if abs(plan_geo["landslide_gain"](px, py)) >= LANDSLIDE_MIN_LOS_GAIN:
                        return px, py
                return float(cand["x"][j]), float(cand["y"][j])
            x, y = placer.choose(draw_site, 2.0 * length_m, 1.0)
            down_az, slope = _downslope(plan_geo, x, y, rng)
            drafted["landslide"].append((x, y, {
                "length_m": length_m, "width_ratio": rng.uniform(0.35, 0.6),
                "downslope_azimuth_rad": down_az, "slope_rad": slope,
                "velocity_mm_yr": rng.uniform(10.0, 40.0), "acceleration_mm_yr2": rng.uniform(1.0, 8.0)}))

    sources = []
    for kind in SOURCE_KINDS:
        for x, y, params in drafted[kind]:
            sources.append(Source(len(sources) + 1, kind, float(x), float(y),
                                  tuple((k, float(v)) for k, v in params.items())))
    return _nest_sources(tuple(sources), float(_get(sim, "nested_share")), _get(sim, "seed"), plan_geo)


def _downslope(plan_geo: dict[str, Any], x: float, y: float, rng: np.random.Generator) -> tuple[float, float]:
    """(downslope azimuth, slope) in radians of the terrain at (x, y) m; the azimuth is drawn from
    ``rng`` on flat ground."""
    gx, gy = plan_geo["terrain_gradient"](np.array([x]), np.array([y]))
    grad = math.hypot(gx[0], gy[0])
    return (math.atan2(-gx[0], -gy[0]) if grad > 0 else rng.uniform(0, 2 * np.pi)), math.atan(grad)


# Where a nested source goes (simulate.nested_share), in units of its host's size: a landslide or a
# tunnel's midpoint within this many bowl radii of the bowl's centre (inside it or on its rim); an
# uplift's centre this many of its own radii beyond the post-seismic field's decay distance.
NEST_BOWL_RADII = (0.2, 1.3)
NEST_UPLIFT_RADII = (0.6, 1.4)
NEST_LANDSLIDE_SITES = 32      # sites tried around the bowl; the one whose slope the radar sees best


def _nest_sources(sources: tuple[Source, ...], share: float, seed: int, plan_geo: dict[str, Any]
                  ) -> tuple[Source, ...]:
    """Hard layouts for benchmarks: each landslide and tunnel, with probability ``share``, moved
    inside or beside a subsidence bowl (NEST_BOWL_RADII), and each uplift beside a post-seismic
    field, across its fault (NEST_UPLIFT_RADII). A moved landslide takes the best of
    NEST_LANDSLIDE_SITES sites for the radar (LOS gain of its downslope motion) away from the
    landslides moved before it (half their lengths apart), and the slope there.
    On RNG stream STREAM_NESTING, so that ``share`` 0 leaves the scene as it was."""
    if share <= 0:
        return sources
    rng = _rng(seed, STREAM_NESTING)
    W, H = plan_geo["width_m"], plan_geo["height_m"]
    bowls = [s for s in sources if s.kind == "subsidence"]
    faults = [s for s in sources if s.kind == "postseismic"]
    slides: list[tuple[float, float, float]] = []       # (x, y, length) of the landslides moved so far
    out = []
    for src in sources:
        hosts = bowls if src.kind in ("landslide", "tunnel") else faults if src.kind == "uplift" else []
        if not hosts or not rng.random() < share:
            out.append(src)
            continue
        host = hosts[int(rng.integers(len(hosts)))]
        p, h = dict(src.params), dict(host.params)
        if src.kind == "uplift":
            away = h["decay_m"] + rng.uniform(*NEST_UPLIFT_RADII) * p["radius_m"]
            side = rng.choice([-1.0, 1.0])      # across the fault: along its normal (cos, -sin) of the strike
            x = float(np.clip(host.x_m + side * away * math.cos(h["strike_rad"]), 0.05 * W, 0.95 * W))
            y = float(np.clip(host.y_m - side * away * math.sin(h["strike_rad"]), 0.05 * H, 0.95 * H))
        else:
            angle = rng.uniform(0, 2 * np.pi, NEST_LANDSLIDE_SITES if src.kind == "landslide" else 1)
            dist = rng.uniform(*NEST_BOWL_RADII, angle.size) * h["radius_m"]
            xs = np.clip(host.x_m + dist * np.cos(angle), 0.05 * W, 0.95 * W)
            ys = np.clip(host.y_m + dist * np.sin(angle), 0.05 * H, 0.95 * H)
            if src.kind == "landslide":
                gain = np.array([abs(plan_geo["landslide_gain"](a, b)) for a, b in zip(xs, ys)])
                free = np.array([all(math.hypot(a - q, b - r) >= 0.5 * (p["length_m"] + e) for q, r, e in slides)
                                 for a, b in zip(xs, ys)])       # not on a slide moved before it
                best = int(np.argmax(np.where(free, gain, -np.inf) if free.any() else gain))
                x, y = float(xs[best]), float(ys[best])
                slides.append((x, y, p["length_m"]))
                p["downslope_azimuth_rad"], p["slope_rad"] = _downslope(plan_geo, x, y, rng)
            else:   # the tunnel's start point, so that its midpoint falls at (xs, ys)
                x = float(xs[0]) - 0.5 * p["length_m"] * math.sin(p["azimuth_rad"])
                y = float(ys[0]) - 0.5 * p["length_m"] * math.cos(p["azimuth_rad"])
        out.append(Source(src.source_id, src.kind, x, y, tuple((k, float(v)) for k, v in p.items())))
    return tuple(out)


def _landslide_los_gain(dhx: np.ndarray, dhy: np.ndarray, los_e: np.ndarray, los_n: np.ndarray,
                        los_u: np.ndarray) -> np.ndarray:
    """LOS mm per mm of motion parallel to the terrain surface, downslope, (n,)."""
    grad = np.hypot(dhx, dhy)
    slope = np.arctan(grad)
    with np.errstate(invalid="ignore", divide="ignore"):
        ge = np.where(grad > 0, -dhx / grad, 0.0)
        gn = np.where(grad > 0, -dhy / grad, 0.0)
    return np.cos(slope) * (ge * los_e + gn * los_n) - np.sin(slope) * los_u


def _trend_years(t: np.ndarray, p: dict[str, float], rate_change: bool = True) -> np.ndarray:
    """Years of motion at times ``t`` (years): 0 before the source's start_yr, then the time since
    it, counted rate_factor times over from rate_change_yr when ``rate_change`` (simulate.changes)."""
    start = p.get("start_yr", 0.0)
    years = np.maximum(t - start, 0.0)
    if rate_change and "rate_factor" in p:
        years = years + (p["rate_factor"] - 1.0) * np.maximum(t - max(p["rate_change_yr"], start), 0.0)
    return years


def _source_los_mm(plan: ScenePlan, src: Source, x: np.ndarray, y: np.ndarray,
                   los_e: np.ndarray, los_n: np.ndarray, los_u: np.ndarray) -> np.ndarray:
    """Noise-free LOS displacement (n, T) in mm of one source at points (x, y)."""
    t = plan.t_years
    p = dict(src.params)
    n = x.size
    dx, dy = x - src.x_m, y - src.y_m
    if src.kind in ("subsidence", "uplift"):
        # elliptic Gaussian bowl; radius = 2 sigma; horizontal motion radial (inward when sinking)
        sig = p["radius_m"] / 2.0
        sa, sb = sig * math.sqrt(p["aspect"]), sig / math.sqrt(p["aspect"])
        s, c = math.sin(p["azimuth_rad"]), math.cos(p["azimuth_rad"])
        q = ((dx * s + dy * c) / sa) ** 2 + ((dx * c - dy * s) / sb) ** 2
        w = np.exp(-0.5 * q)
        h = p["horizontal_ratio"] / sig
        gain = w * (los_u + h * (dx * los_e + dy * los_n))
        phi, start = p["seasonal_phase_rad"], p.get("start_yr", 0.0)
        seasonal = p["seasonal_mm"] * (np.sin(2 * np.pi * t + phi) - math.sin(2 * np.pi * start + phi)) * (t >= start)
        vertical = p["rate_mm_yr"] * _trend_years(t, p) + seasonal
        return np.multiply.outer(gain, vertical)
    if src.kind == "landslide":
        # elongated downslope footprint, motion parallel to the slope surface, accelerating creep
        az, slope = p["downslope_azimuth_rad"], p["slope_rad"]
        ga, gb = math.sin(az), math.cos(az)
        sa = p["length_m"] / 2.5
        sb = sa * p["width_ratio"]
        q = ((dx * ga + dy * gb) / sa) ** 2 + ((dx * gb - dy * ga) / sb) ** 2
        w = np.exp(-0.5 * q)
        gain = w * (math.cos(slope) * (ga * los_e + gb * los_n) - math.sin(slope) * los_u)
        d = p["velocity_mm_yr"] * _trend_years(t, p) + 0.5 * p["acceleration_mm_yr2"] * _trend_years(t, p, rate_change=False) ** 2
        return np.multiply.outer(gain, d)
    if src.kind == "tunnel":
        # Peck trough across the axis; TBM front reaches along-axis position s at an onset date
        # growing linearly from onset_start_yr to onset_end_yr; exponential settling after it
        az, L, i = p["azimuth_rad"], p["length_m"], p["trough_width_m"]
        ax, ay = math.sin(az), math.cos(az)
        s_along = dx * ax + dy * ay
        y_perp = dx * ay - dy * ax          # along the normal (ay, -ax)
        excess = np.where(s_along < 0, s_along, np.where(s_along > L, s_along - L, 0.0))
        w = np.exp(-0.5 * (y_perp / i) ** 2 - 0.5 * (excess / i) ** 2)
        out = np.zeros((n, t.size))
        rows = np.flatnonzero(w > 1e-7)
        if rows.size:
            nx_, ny_ = ay, -ax
            gain = w[rows] * (-los_u[rows] - (y_perp[rows] / p["depth_m"]) * (nx_ * los_e[rows] + ny_ * los_n[rows]))
            onset = p["onset_start_yr"] + (p["onset_end_yr"] - p["onset_start_yr"]) * np.clip(s_along[rows] / L, 0, 1)
            lag = t[None, :] - onset[:, None]
            settle = p["settlement_mm"] * -np.expm1(-np.maximum(lag, 0.0) * DAYS_PER_YEAR / p["tau_days"])
            out[rows] = gain[:, None] * settle
        return out
    if src.kind == "postseismic":
        # opposite motion on the two sides of the fault, decaying away from it
        st, L = p["strike_rad"], p["length_m"]
        ax, ay = math.sin(st), math.cos(st)
        s_along = dx * ax + dy * ay
        d_perp = dx * ay - dy * ax
        excess = np.maximum(np.abs(s_along) - 0.5 * L, 0.0)
        f = (np.tanh(d_perp / p["smooth_m"]) * np.exp(-np.abs(d_perp) / p["decay_m"])
             * np.exp(-0.5 * (excess / p["decay_m"]) ** 2))
        gain = f * (p["vertical_mm"] * los_u + p["strike_slip_mm"] * (ax * los_e + ay * los_n))
        lag_days = (t - p["event_yr"]) * DAYS_PER_YEAR
        g = np.where(lag_days >= 0, 1.0 + p["log_factor"] * np.log1p(np.maximum(lag_days, 0) / p["tau_days"]), 0.0)
        return np.multiply.outer(gain, g)
    raise ValueError(f"unknown source kind {src.kind!r}")


# --------------------------------------------------------------------------------------------
# Atmosphere
# --------------------------------------------------------------------------------------------
_BASIS_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _atmosphere_basis(plan: ScenePlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cached :func:`_draw_atmosphere_basis` (keyed by everything it depends on)."""
    key = (plan.seed, int(plan.atmosphere_waves), plan.atmosphere_scale_m,
           plan.dates.tobytes(), plan.atmosphere_sigma_mm.tobytes())
    basis = _BASIS_CACHE.get(key)
    if basis is None:
        if len(_BASIS_CACHE) >= 4:
            _BASIS_CACHE.clear()
        basis = _BASIS_CACHE[key] = _draw_atmosphere_basis(plan)
    return basis


def _draw_atmosphere_basis(plan: ScenePlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic random-Fourier atmosphere of the whole scene (from (seed, STREAM_ATMOSPHERE)).

    Returns kx, ky (K_pool,) rad/m wavevectors drawn from the power-law spectrum
    P(k) ~ (k0^2 + k^2)^(-4/3) (2-D fractal screen, Hanssen's -8/3 regime) with
    k0 = 1 / atmosphere_scale_m (the spectrum flattens beyond it, so the screen decorrelates over
    a few atmosphere_scale_m: correlation ~0.7 at 1 km, ~0.1 at 5 km for 4 km), and the coefficient matrix
    C (2 K_pool, T) in mm such that screen_t(x) = [cos(k.x), sin(k.x)] @ C[:, t]. Each epoch uses
    atmosphere_waves wavevectors drawn without replacement from the pool, with Gaussian
    quadrature coefficients (random phase and Rayleigh amplitude), variance atmosphere_sigma_mm[t]^2.
    """
    T = plan.dates.size
    K = max(1, int(plan.atmosphere_waves))
    pool = ATMO_POOL_FACTOR * K
    rng = _rng(plan.seed, STREAM_ATMOSPHERE)
    k0 = 1.0 / plan.atmosphere_scale_m
    kmax = 2 * np.pi / ATMO_MIN_WAVELENGTH_M
    e = ATMO_SPECTRAL_EXPONENT / 2.0 - 1.0    # CDF of |k| in 2-D: 1 - (k0^2/(k0^2+k^2))^e
    fmax = 1.0 - (k0 ** 2 / (k0 ** 2 + kmax ** 2)) ** e
    u = rng.uniform(0.0, fmax, pool)
    k = k0 * np.sqrt((1.0 - u) ** (-1.0 / e) - 1.0)
    direction = rng.uniform(0, 2 * np.pi, pool)
    kx, ky = k * np.sin(direction), k * np.cos(direction)
    chosen = np.argsort(rng.random((T, pool)), axis=1)[:, :K]          # (T, K)
    coef = rng.standard_normal((T, K, 2)) * (plan.atmosphere_sigma_mm / math.sqrt(K))[:, None, None]
    C = np.zeros((2 * pool, T))
    cols = np.broadcast_to(np.arange(T)[:, None], (T, K))
    C[chosen, cols] = coef[:, :, 0]
    C[pool + chosen, cols] = coef[:, :, 1]
    return kx, ky, C


def _atmosphere_screens(kx: np.ndarray, ky: np.ndarray, C: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ph = np.multiply.outer(x, kx) + np.multiply.outer(y, ky)
    return np.concatenate([np.cos(ph), np.sin(ph)], axis=1) @ C


def atmosphere_mm(plan: ScenePlan, x_m: np.ndarray, y_m: np.ndarray, height_m: np.ndarray,
                  _basis: tuple | None = None) -> np.ndarray:
    """Relative atmospheric delay (n, T) in mm at local points with terrain height height_m (n,).

    Turbulent screen + stratified delay (coefficient per epoch x height), each epoch referenced to
    the scene reference point and the whole series to the first epoch (column 0 is exactly 0).
    """
    kx, ky, C = _basis if _basis is not None else _atmosphere_basis(plan)
    x = np.asarray(x_m, float)
    y = np.asarray(y_m, float)
    rx, ry = np.array([plan.reference_x_m]), np.array([plan.reference_y_m])
    ref = _atmosphere_screens(kx, ky, C, rx, ry)[0]                       # (T,)
    ref_h = terrain_height_m(plan, rx, ry)[0]
    a = _atmosphere_screens(kx, ky, C, x, y) - ref
    a += np.multiply.outer(np.asarray(height_m, float) - ref_h, plan.stratified_mm_per_m)
    a -= a[:, :1]
    return a


# --------------------------------------------------------------------------------------------
# Planner
# --------------------------------------------------------------------------------------------
def plan_scene(sim: Any) -> ScenePlan:
    """Plan a scene from the ``simulate`` config section (attribute names as in conf/default.yaml)."""
    seed = int(_get(sim, "seed"))
    n_pixels = int(_get(sim, "n_pixels"))
    W = float(_get(sim, "width_km")) * 1000.0
    H = float(_get(sim, "height_km")) * 1000.0
    tile_m = float(_get(sim, "tile_km")) * 1000.0
    if n_pixels < 0 or W <= 0 or H <= 0 or tile_m <= 0:
        raise ValueError("simulate: n_pixels >= 0 and positive width_km, height_km, tile_km required")
    dates = _acquisition_dates(sim)
    t_years = (dates - dates[0]).astype(np.float64) / DAYS_PER_YEAR

    # pixel density and allocation of pixels to tiles
    patches = _draw_urban_patches(sim, W, H)
    share = float(_get(sim, "urban_pixel_share")) if patches.weight.size else 0.0
    boxes = _make_tiles_boxes(W, H, tile_m)
    area = np.array([(b[3] - b[1]) * (b[4] - b[2]) for b in boxes])
    if patches.weight.size:
        umass = np.array([_tile_urban_mass(patches, b) for b in boxes])
        m_total = umass.sum()
    else:
        umass, m_total = np.zeros(len(boxes)), 1.0
    prob = (1.0 - share) * area / (W * H) + share * umass / m_total
    prob = prob / prob.sum()
    counts = _rng(seed, STREAM_ALLOCATION).multinomial(n_pixels, prob)
    tiles = tuple(TileSpec(b[0], b[1], b[2], b[3], b[4], int(c)) for b, c in zip(boxes, counts))
    peak = (share / m_total) * patches.weight / (
        2 * np.pi * patches.urban_sigma_major_m * patches.urban_sigma_minor_m)

    terrain = _draw_terrain(sim, W, H)
    inc_near = float(_get(sim, "incidence_near_deg"))
    inc_far = float(_get(sim, "incidence_far_deg"))
    track = float(_get(sim, "track_angle_deg"))
    az = math.radians(track + 90.0)
    corners = np.array([[0, 0], [W, 0], [0, H], [W, H]], float)
    across = corners[:, 0] * math.sin(az) + corners[:, 1] * math.cos(az)

    # per-epoch atmosphere strength: log-normal spread and a summer maximum (water vapour)
    rng_ae = _rng(seed, STREAM_ATMOSPHERE_EPOCH)
    doy = (dates - dates.astype("datetime64[Y]")).astype(np.float64)
    seasonal = np.cos(2 * np.pi * (doy - 200.0) / DAYS_PER_YEAR)
    sigma_t = float(_get(sim, "atmosphere_sigma_mm")) * np.exp(0.35 * rng_ae.standard_normal(dates.size) - 0.06) \
        * (1.0 + 0.3 * seasonal)
    strat = float(_get(sim, "stratified_mm_per_km")) / 1000.0
    strat_t = strat * (0.6 * seasonal + 0.8 * rng_ae.standard_normal(dates.size))

    common = dict(
        seed=seed, n_pixels=n_pixels, width_m=W, height_m=H, tile_m=tile_m,
        center_lon_deg=float(_get(sim, "center_lon")), center_lat_deg=float(_get(sim, "center_lat")),
        dates=dates, t_years=t_years, tiles=tiles, sources=(),
        rural_density_per_m2=(1.0 - share) / (W * H),
        urban_x_m=patches.urban_x_m, urban_y_m=patches.urban_y_m,
        urban_sigma_major_m=patches.urban_sigma_major_m, urban_sigma_minor_m=patches.urban_sigma_minor_m,
        urban_azimuth_rad=patches.urban_azimuth_rad, urban_peak_density_per_m2=peak,
        terrain_kx_rad_m=terrain.terrain_kx_rad_m, terrain_ky_rad_m=terrain.terrain_ky_rad_m,
        terrain_amp_m=terrain.terrain_amp_m, terrain_phase_rad=terrain.terrain_phase_rad,
        terrain_base_m=terrain.terrain_base_m,
        track_angle_deg=track, incidence_near_deg=inc_near, incidence_far_deg=inc_far,
        across_min_m=float(across.min()), across_max_m=float(across.max()),
        wavelength_mm=float(_get(sim, "wavelength_mm")), looks=float(_get(sim, "looks")),
        atmosphere_waves=int(_get(sim, "atmosphere_waves")),
        atmosphere_scale_m=float(_get(sim, "atmosphere_scale_km")) * 1000.0,
        atmosphere_sigma_mm=sigma_t, stratified_mm_per_m=strat_t,
        reference_x_m=W / 2, reference_y_m=H / 2,
        unwrap_error_share=float(_get(sim, "unwrap_error_share")),
        missing_share=float(_get(sim, "missing_share")),
        point_velocity_mm_yr=float(_get(sim, "point_velocity_mm_yr")),
        truth_min_mm=float(_get(sim, "truth_min_mm")),
    )
    draft = ScenePlan(**common)

    # landslide candidate sites: steep cells (top 15 % of slope) whose downslope motion the radar
    # sees (LOS gain >= LANDSLIDE_MIN_LOS_GAIN), weighted by slope x LOS gain x pixel density^2
    # (slides that matter are under villages, where there are also many scatterers)
    cell = max(W, H) / PLAN_GRID_CELLS
    gx = np.arange(cell / 2, W, cell)
    gy = np.arange(cell / 2, H, cell)
    X, Y = (a.ravel() for a in np.meshgrid(gx, gy))
    dhx, dhy = terrain_gradient(draft, X, Y)
    grad = np.hypot(dhx, dhy)
    slope = np.arctan(grad)
    sens = np.abs(_landslide_los_gain(dhx, dhy, *los_geometry(draft, X, Y)[1:]))
    steep = (slope >= np.quantile(slope, LANDSLIDE_SLOPE_QUANTILE)) & (sens >= LANDSLIDE_MIN_LOS_GAIN)
    score = np.where(steep, slope * sens * pixel_density_per_m2(draft, X, Y) ** 2, 0.0)
    if score.sum() <= 0:
        score = np.ones_like(score)
    cand = {"x": X, "y": Y, "p": score / score.sum(), "cell_m": cell}
    geo = {"width_m": W, "height_m": H, "patches": patches, "landslide_candidates": cand,
           "terrain_gradient": lambda x, y: terrain_gradient(draft, x, y),
           "los": lambda x, y: los_geometry(draft, x, y),
           "landslide_gain": lambda x, y: float(_landslide_los_gain(
               *terrain_gradient(draft, np.array([x]), np.array([y])),
               *los_geometry(draft, np.array([x]), np.array([y]))[1:])[0])}
    sources = _scheduled_changes(_draw_sources(sim, geo, dates, t_years), sim, dates)
    common["sources"] = sources
    plan = ScenePlan(**common)
    log.info("planned scene seed=%d: %d pixels in %d tiles, %d epochs (%s..%s), %d sources",
             seed, n_pixels, len(tiles), dates.size, dates[0], dates[-1], len(sources))
    return plan


CHANGING_KINDS = ("subsidence", "uplift", "landslide")     # the kinds simulate.changes applies to


def _scheduled_changes(sources: tuple[Source, ...], sim: Any, dates: np.ndarray) -> tuple[Source, ...]:
    """The sources with simulate.changes applied: start_yr (still before start_date) and
    rate_change_yr, rate_factor (velocity times rate_factor from change_date), years since dates[0]."""
    changes = _get(sim, "changes") or []
    by_id = {s.source_id: s for s in sources}

    def years(day: str) -> float:
        return float(years_since(np.array([str(day)], dtype="datetime64[D]"), origin=dates[0])[0])

    for i, change in enumerate(changes):
        key = f"simulate.changes[{i}]"
        source = by_id.get(change["source"])
        if source is None:
            raise ConfigError(f"config key '{key}.source' must name one of the scene's sources 1..{len(sources)}; "
                              f"got {change['source']}")
        if source.kind not in CHANGING_KINDS:
            raise ConfigError(f"config key '{key}.source': source {source.source_id} is a {source.kind}; changes "
                              f"apply to {', '.join(CHANGING_KINDS)} (the others have onsets of their own)")
        added = []
        if change.get("start_date"):
            added.append(("start_yr", years(change["start_date"])))
        if change.get("rate_factor") is not None:
            added += [("rate_change_yr", years(change["change_date"])), ("rate_factor", float(change["rate_factor"]))]
        kept = tuple((k, v) for k, v in source.params if k not in dict(added))
        by_id[source.source_id] = Source(source.source_id, source.kind, source.x_m, source.y_m, kept + tuple(added))
    return tuple(by_id[s.source_id] for s in sources)


# --------------------------------------------------------------------------------------------
# Tile generation
# --------------------------------------------------------------------------------------------
def _density_bound(plan: ScenePlan, tile: TileSpec) -> float:
    """Upper bound of the pixel density over the tile box (per m^2)."""
    bound = plan.rural_density_per_m2
    for k in range(plan.urban_x_m.size):
        dx = max(tile.x0_m - plan.urban_x_m[k], 0.0, plan.urban_x_m[k] - tile.x1_m)
        dy = max(tile.y0_m - plan.urban_y_m[k], 0.0, plan.urban_y_m[k] - tile.y1_m)
        bound += plan.urban_peak_density_per_m2[k] * math.exp(
            -0.5 * (dx * dx + dy * dy) / plan.urban_sigma_major_m[k] ** 2)
    return bound * (1.0 + 1e-9)


def _sample_positions(plan: ScenePlan, tile: TileSpec, rng: np.random.Generator):
    """Rejection-sample tile.n_pixels positions from the density restricted to the tile.

    Returns x_m, y_m (n,) and is_urban (n,) bool (drawn from the urban share of the density).
    """
    n = tile.n_pixels
    bound = _density_bound(plan, tile)
    xs, ys, us = [np.empty(0)], [np.empty(0)], [np.empty(0, dtype=bool)]
    got, accept = 0, 0.5
    while got < n:
        m = int(min(2_000_000, max(256, 1.3 * (n - got) / max(accept, 1e-3))))
        x = rng.uniform(tile.x0_m, tile.x1_m, m)
        y = rng.uniform(tile.y0_m, tile.y1_m, m)
        u = rng.random(m)
        v = rng.random(m)
        urban = _urban_density(plan, x, y)
        dens = plan.rural_density_per_m2 + urban
        keep = u * bound < dens
        accept = max(keep.mean(), 1e-3)
        xs.append(x[keep])
        ys.append(y[keep])
        us.append(v[keep] * dens[keep] < urban[keep])
        got += int(keep.sum())
    return (np.concatenate(xs)[:n], np.concatenate(ys)[:n], np.concatenate(us)[:n])


def _fit_static(t: np.ndarray, disp: np.ndarray) -> dict[str, np.ndarray]:
    """EGMS-like static fields from displacement (n, T) mm (NaN = missing), t (T,) years.

    mean_velocity (mm/yr) and its standard error from a constant+linear fit; acceleration
    (mm/yr^2, second derivative = 2 x quadratic coefficient), seasonality (annual amplitude, mm),
    their standard errors and rmse_ts (rms residual, mm) from constant + t + t^2 + annual sin/cos.
    """
    valid = np.isfinite(disp)
    y = np.where(valid, disp, 0.0)
    m = valid.astype(np.float64)
    nobs = m.sum(axis=1)
    tc = t - t.mean()
    X = np.stack([np.ones_like(tc), tc, tc ** 2, np.sin(2 * np.pi * t), np.cos(2 * np.pi * t)], axis=1)
    p = X.shape[1]
    vel, vel_std = fit_velocity(t, disp)
    with np.errstate(invalid="ignore", divide="ignore"):
        # full fit by per-pixel normal equations
        XX = (X[:, :, None] * X[:, None, :]).reshape(t.size, p * p)
        N = (m @ XX).reshape(-1, p, p)
        rhs = y @ X
        ok = nobs > p
        Ninv = np.full_like(N, np.nan)
        if ok.any():
            Ninv[ok] = np.linalg.inv(N[ok])
        beta = np.einsum("nij,nj->ni", Ninv, rhs)
        res = np.where(valid, y - beta @ X.T, 0.0)
        rss = (res ** 2).sum(axis=1)
        sigma2 = rss / (nobs - p)
        acc = 2.0 * beta[:, 2]
        acc_std = 2.0 * np.sqrt(sigma2 * Ninv[:, 2, 2])
        s, c = beta[:, 3], beta[:, 4]
        amp = np.hypot(s, c)
        var_amp = sigma2 * (s * s * Ninv[:, 3, 3] + c * c * Ninv[:, 4, 4] + 2 * s * c * Ninv[:, 3, 4]) / amp ** 2
        amp_std = np.sqrt(np.maximum(var_amp, 0.0))
        rmse = np.sqrt(rss / nobs)
    return {"mean_velocity": vel, "mean_velocity_std": vel_std, "acceleration": acc,
            "acceleration_std": acc_std, "seasonality": amp, "seasonality_std": amp_std, "rmse_ts": rmse}


def generate_tile(plan: ScenePlan, tile_index: int, return_components: bool = False, tile: TileSpec | None = None):
    """Generate the pixels of one tile as an EGMS-L2b-like frame.

    Returns a DataFrame with one row per pixel: EGMS_STATIC_COLUMNS, one float64 column per epoch
    ('YYYYMMDD', LOS displacement mm, NaN = missing) and truth columns source_id (int64, 0 =
    none) and source_type (str). With return_components=True returns (frame, components) where
    components holds float64 (n, T) arrays deformation_mm, atmosphere_mm, noise_mm, unwrap_mm,
    point_mm (each point's own trend, simulate.point_velocity_mm_yr), bool (n, T) missing, (n,)
    x_m, y_m and (n, S) peak_by_source (peak |LOS| of each source, mm); displacement ==
    deformation + atmosphere + noise + unwrap + point where not missing. ``tile``: the tile's spec
    when ``plan`` is shipped without its tiles (a Spark task gets its tile in a row).
    """
    tile = tile if tile is not None else plan.tiles[tile_index]
    if tile.tile_index != tile_index:
        raise ValueError(f"tile {tile_index} not at its index in the plan")
    # a sixth stream leaves the first five (and so every scene before it) as they were
    streams = np.random.SeedSequence([plan.seed, STREAM_TILE, tile_index]).spawn(6)
    rng_pos, rng_coh, rng_noise, rng_unwrap, rng_missing, rng_point = (np.random.default_rng(s) for s in streams)
    n, T, S = tile.n_pixels, plan.dates.size, len(plan.sources)
    t = plan.t_years

    x, y, urban = _sample_positions(plan, tile, rng_pos)
    lon, lat = local_to_lonlat(plan, x, y)
    height = terrain_height_m(plan, x, y)
    inc_deg, los_e, los_n, los_u = los_geometry(plan, x, y)

    a_u, b_u = URBAN_COHERENCE_BETA
    lo, hi = RURAL_COHERENCE_RANGE
    coh_urban = rng_coh.beta(a_u, b_u, n)
    coh_rural = lo + (hi - lo) * rng_coh.beta(2.0, 2.0, n)
    coherence = np.minimum(np.where(urban, coh_urban, coh_rural), MAX_COHERENCE)

    # deformation sources
    deformation = np.zeros((n, T))
    peak = np.zeros((n, S))
    for j, src in enumerate(plan.sources):
        los = _source_los_mm(plan, src, x, y, los_e, los_n, los_u)
        deformation += los
        if n:
            peak[:, j] = np.abs(los).max(axis=1)

    atmosphere = atmosphere_mm(plan, x, y, height)

    # decorrelation noise: Cramer-Rao bound of the phase, converted to mm
    sigma_phase = np.sqrt((1.0 - coherence ** 2) / (2.0 * plan.looks * coherence ** 2))
    sigma_mm = sigma_phase * plan.wavelength_mm / (4.0 * np.pi)
    noise = rng_noise.standard_normal((n, T)) * sigma_mm[:, None]

    # unwrapping errors: +-lambda/2 step from a random epoch onward (sometimes a second one)
    half = plan.wavelength_mm / 2.0
    has = rng_unwrap.random(n) < plan.unwrap_error_share
    k1 = rng_unwrap.integers(1, T, n)
    s1 = rng_unwrap.choice(np.array([-1.0, 1.0]), n)
    has2 = has & (rng_unwrap.random(n) < SECOND_UNWRAP_STEP_SHARE)
    k2 = k1 + np.floor(rng_unwrap.random(n) * (T - k1)).astype(np.int64)
    s2 = rng_unwrap.choice(np.array([-1.0, 1.0]), n)
    steps = np.zeros((n, T))
    rows = np.flatnonzero(has)
    steps[rows, k1[rows]] += s1[rows] * half
    rows2 = np.flatnonzero(has2)
    np.add.at(steps, (rows2, k2[rows2]), s2[rows2] * half)
    unwrap = np.cumsum(steps, axis=1)

    missing = rng_missing.random((n, T)) < plan.missing_share
    missing[:, 0] = False

    # each point's own motion: a linear trend, independent between points
    point = np.multiply.outer(rng_point.standard_normal(n) * plan.point_velocity_mm_yr, t)

    disp = deformation + atmosphere + noise + unwrap + point
    disp[missing] = np.nan

    fit = _fit_static(t, disp)

    if S and n:
        best = np.argmax(peak, axis=1)
        best_peak = peak[np.arange(n), best]
        source_id = np.where(best_peak >= plan.truth_min_mm, best + 1, 0).astype(np.int64)
    else:
        source_id = np.zeros(n, dtype=np.int64)
    kinds = np.array(["none"] + [s.kind for s in plan.sources], dtype=object)
    ids = np.array([0] + [s.source_id for s in plan.sources], dtype=np.int64)
    source_id = ids[source_id]
    source_type = kinds[np.searchsorted(ids, source_id)] if S else kinds[np.zeros(n, dtype=np.int64)]

    static = {
        "pid": np.array([f"SIM{tile_index:06d}{i:06d}" for i in range(n)], dtype=object),
        "latitude": lat, "longitude": lon, "height_ortho": height,
        "rmse_ts": fit["rmse_ts"], "temporal_coherence": coherence,
        "incidence_angle": inc_deg, "track_angle": np.full(n, plan.track_angle_deg),
        "los_east": los_e, "los_north": los_n, "los_up": los_u,
        "mean_velocity": fit["mean_velocity"], "mean_velocity_std": fit["mean_velocity_std"],
        "acceleration": fit["acceleration"], "acceleration_std": fit["acceleration_std"],
        "seasonality": fit["seasonality"], "seasonality_std": fit["seasonality_std"],
    }
    frame = pd.concat([
        pd.DataFrame(static, columns=list(EGMS_STATIC_COLUMNS)),
        pd.DataFrame(disp, columns=epoch_column_names(plan)),
        pd.DataFrame({"source_id": source_id, "source_type": source_type}),
    ], axis=1)
    if not return_components:
        return frame
    components = {"deformation_mm": deformation, "atmosphere_mm": atmosphere, "noise_mm": noise,
                  "unwrap_mm": unwrap, "point_mm": point, "missing": missing, "x_m": x, "y_m": y,
                  "peak_by_source": peak}
    return frame, components


def generate_scene(plan: ScenePlan, return_components: bool = False):
    """All tiles concatenated (convenience for tests and small local runs, not for Spark)."""
    parts = [generate_tile(plan, tile.tile_index, return_components) for tile in plan.tiles]
    if not return_components:
        return pd.concat(parts, ignore_index=True)
    frames = pd.concat([p[0] for p in parts], ignore_index=True)
    comps = {k: np.concatenate([p[1][k] for p in parts], axis=0) for k in parts[0][1]}
    return frames, comps
