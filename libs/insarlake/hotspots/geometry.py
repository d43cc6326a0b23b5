"""Per-cluster hotspot geometry and series summary: pure numpy/shapely kernels (no Spark, no torch).

Frame. Every cluster is measured in its own local plane: the azimuthal equidistant projection of the
sphere of radius ``EARTH_RADIUS_M`` (the sphere of every insarlake distance) centred on the cluster's
mean centre, x pointing east and y north, in metres (``to_local_m``; ``from_local_m`` is its inverse).
Distances and bearings from the centre are exact in that plane (the distance equals ``haversine_m``);
other distances are distorted by less than 1e-6 relative within 10 km of the centre. The mean centre
(``mean_centre``) is the normalised mean of the points' 3-D unit vectors, so it needs no longitude
wrapping and clusters on the antimeridian are handled like any other.

Definitions (Eq. 7 of the seed paper, population statistics, i.e. divided by n):

* ``sd_x_km = sqrt(sum((x - x̄)²) / n)``, ``sd_y_km = sqrt(sum((y - ȳ)²) / n)`` (east, north);
* standard distance ``S_d = sqrt(sum((x - x̄)²) / n + sum((y - ȳ)²) / n) = sqrt(sd_x² + sd_y²)``;
* standard-deviation ellipse: semi-axes ``n_std * sqrt(λ)`` for the eigenvalues λ of the population
  covariance of (x, y), each floored at ``min_axis_km`` so a single pixel (or a line of pixels) still
  has a valid, non-degenerate ellipse; ``angle_deg`` is the bearing of the major axis, degrees
  clockwise from north in [0, 180) (0 when the covariance is isotropic);
* ``hull_area_km2``: area of the convex hull of the local coordinates (0 below 3 non-collinear points).

x̄ and ȳ are ~0 in the frame of the mean centre (not exactly: the projection is not linear), and they
are subtracted anyway.

Series summary: ``mean_series`` (NaN-mean over pixels per epoch) and ``onset_peak`` (breakpoint of a
"flat, then straight line" hinge fit, and the epoch of the largest departure from the first value).

Public functions check their input and raise ``ValueError`` naming the problem; the private ``_``
kernels assume clean input.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from insarlake.geo import EARTH_RADIUS_M

logger = logging.getLogger(__name__)

__all__ = [
    "ClusterGeometry", "mean_centre", "to_local_m", "from_local_m", "cluster_geometry", "ellipse_polygon",
    "ellipse_wkt", "mean_series", "onset_peak",
]


@dataclass(frozen=True)
class ClusterGeometry:
    """Geometry of one cluster of pixels (see the module docstring for the frame and definitions).

    Centre in degrees; distances in km; areas in km²; ``angle_deg`` clockwise from north, in [0, 180).
    """

    n_pixels: int
    center_lon: float
    center_lat: float
    standard_distance_km: float
    sd_x_km: float
    sd_y_km: float
    semi_major_km: float
    semi_minor_km: float
    angle_deg: float
    ellipse_area_km2: float
    hull_area_km2: float


# ---------------------------------------------------------------------------------------------------------------------
# input checks


def _coords(lon_deg, lat_deg, what: str = "", allow_empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """float64 arrays of lon/lat (broadcast together), checked finite and with latitude in [-90, 90]."""
    prefix = f"{what}: " if what else ""
    try:
        lon, lat = np.broadcast_arrays(np.asarray(lon_deg, dtype=np.float64), np.asarray(lat_deg, dtype=np.float64))
    except ValueError as exc:
        raise ValueError(f"{prefix}lon_deg and lat_deg have incompatible shapes "
                         f"{np.shape(lon_deg)} and {np.shape(lat_deg)}") from exc
    if lon.size == 0 and not allow_empty:
        raise ValueError(f"{prefix}no points (empty input)")
    for name, arr in (("lon_deg", lon), ("lat_deg", lat)):
        bad = ~np.isfinite(arr)
        if bad.any():
            first = int(np.flatnonzero(bad.ravel())[0])
            raise ValueError(f"{prefix}{name} has {int(bad.sum())} NaN/inf value(s) (first at flat index {first})")
    out = np.abs(lat) > 90.0
    if out.any():
        first = int(np.flatnonzero(out.ravel())[0])
        raise ValueError(f"{prefix}lat_deg has {int(out.sum())} value(s) outside [-90, 90] "
                         f"(first: {lat.ravel()[first]!r} at flat index {first})")
    return lon, lat


def _centre(centre_lon_deg, centre_lat_deg, what: str) -> tuple[float, float]:
    lon0, lat0 = float(centre_lon_deg), float(centre_lat_deg)
    if not (math.isfinite(lon0) and math.isfinite(lat0)):
        raise ValueError(f"{what}: the centre ({lon0}, {lat0}) is not finite (NaN/inf)")
    if abs(lat0) > 90.0:
        raise ValueError(f"{what}: the centre latitude {lat0} is outside [-90, 90]")
    return lon0, lat0


# ---------------------------------------------------------------------------------------------------------------------
# sphere kernels


def unit_vectors(lon_rad: np.ndarray, lat_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, z) of the points on the unit sphere: chord distance orders neighbours as great-circle distance does."""
    cos_lat = np.cos(lat_rad)
    return cos_lat * np.cos(lon_rad), cos_lat * np.sin(lon_rad), np.sin(lat_rad)


def _frame(lon0_rad: float, lat0_rad: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors (3,) at the centre: position p, east e, north u (defined at the poles too, from lon0)."""
    sl, cl, sp, cp = math.sin(lon0_rad), math.cos(lon0_rad), math.sin(lat0_rad), math.cos(lat0_rad)
    p = np.array([cp * cl, cp * sl, sp])
    e = np.array([-sl, cl, 0.0])
    u = np.array([-sp * cl, -sp * sl, cp])
    return p, e, u


def _wrap_lon(lon_deg: np.ndarray) -> np.ndarray:
    """Longitudes wrapped to [-180, 180)."""
    return (np.asarray(lon_deg) + 180.0) % 360.0 - 180.0


def _to_local(lon: np.ndarray, lat: np.ndarray, lon0: float, lat0: float) -> tuple[np.ndarray, np.ndarray]:
    """Kernel of ``to_local_m`` (clean input)."""
    qx, qy, qz = unit_vectors(np.radians(lon), np.radians(lat))
    p, e, u = _frame(math.radians(lon0), math.radians(lat0))
    qp = qx * p[0] + qy * p[1] + qz * p[2]
    qe = qx * e[0] + qy * e[1] + qz * e[2]
    qu = qx * u[0] + qy * u[1] + qz * u[2]
    s = np.hypot(qe, qu)                      # sin of the angular distance c
    c = np.arctan2(s, qp)                     # angular distance, accurate at every range
    positive = s > 0.0
    safe = np.where(positive, s, 1.0)
    east = np.where(positive, qe / safe, 0.0)
    north = np.where(positive, qu / safe, 1.0)  # the antipode (direction undefined) goes due north
    rho = EARTH_RADIUS_M * c
    return rho * east, rho * north


def _from_local(x: np.ndarray, y: np.ndarray, lon0: float, lat0: float) -> tuple[np.ndarray, np.ndarray]:
    """Kernel of ``from_local_m`` (clean input)."""
    rho = np.hypot(x, y)
    c = rho / EARTH_RADIUS_M
    # sin(c)/c, continuous at 0
    sinc = np.where(c > 0.0, np.sin(c) / np.where(c > 0.0, c, 1.0), 1.0)
    k = sinc / EARTH_RADIUS_M                 # scales x, y (m) to the tangent components sin(c) * direction
    cos_c = np.cos(c)
    p, e, u = _frame(math.radians(lon0), math.radians(lat0))
    vx = cos_c * p[0] + k * (x * e[0] + y * u[0])
    vy = cos_c * p[1] + k * (x * e[1] + y * u[1])
    vz = cos_c * p[2] + k * (x * e[2] + y * u[2])
    lat = np.degrees(np.arctan2(vz, np.hypot(vx, vy)))
    lon = _wrap_lon(np.degrees(np.arctan2(vy, vx)))
    return lon, lat


def _mean_centre(lon: np.ndarray, lat: np.ndarray) -> tuple[float, float]:
    """Kernel of ``mean_centre`` (clean, non-empty input)."""
    vx, vy, vz = unit_vectors(np.radians(lon), np.radians(lat))
    mx, my, mz = float(vx.mean()), float(vy.mean()), float(vz.mean())
    norm = math.sqrt(mx * mx + my * my + mz * mz)
    if norm < 1e-12:
        raise ValueError("mean_centre: undefined, the points are spread symmetrically around the sphere "
                         "(their mean unit vector is ~0)")
    lon_c = math.degrees(math.atan2(my, mx))
    lat_c = math.degrees(math.atan2(mz, math.hypot(mx, my)))
    return lon_c, lat_c


def mean_centre(lon_deg, lat_deg) -> tuple[float, float]:
    """Mean centre (lon_deg, lat_deg) of points given as arrays (n,) in degrees, n >= 1.

    The normalised mean of the 3-D unit vectors of the points, back to degrees (longitude in (-180, 180]);
    robust near the antimeridian. Raises ValueError on empty, NaN/inf or out-of-range input.
    """
    lon, lat = _coords(lon_deg, lat_deg, "mean_centre")
    return _mean_centre(lon.ravel(), lat.ravel())


def to_local_m(lon_deg, lat_deg, centre_lon_deg: float, centre_lat_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthal equidistant projection of points (degrees, broadcasting arrays) around a centre (degrees).

    Returns (x_m, y_m), float64 arrays of the broadcast shape: x east, y north, metres, on the sphere of
    radius EARTH_RADIUS_M; hypot(x, y) is exactly the great-circle distance to the centre. The antipode of
    the centre maps to (0, pi R).
    """
    lon0, lat0 = _centre(centre_lon_deg, centre_lat_deg, "to_local_m")
    lon, lat = _coords(lon_deg, lat_deg, "to_local_m", allow_empty=True)
    return _to_local(lon, lat, lon0, lat0)


def from_local_m(x_m, y_m, centre_lon_deg: float, centre_lat_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``to_local_m``: local (x_m east, y_m north, metres; broadcasting arrays) to (lon_deg, lat_deg).

    Longitudes come back wrapped to [-180, 180). Exact inverse for hypot(x, y) < pi * EARTH_RADIUS_M.
    """
    lon0, lat0 = _centre(centre_lon_deg, centre_lat_deg, "from_local_m")
    x, y = np.broadcast_arrays(np.asarray(x_m, dtype=np.float64), np.asarray(y_m, dtype=np.float64))
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("from_local_m: x_m/y_m contain NaN/inf values")
    return _from_local(x, y, lon0, lat0)


# ---------------------------------------------------------------------------------------------------------------------
# cluster geometry


def _major_axis_bearing(sxx: float, syy: float, sxy: float) -> float:
    """Bearing (degrees clockwise from north, [0, 180)) of the major eigenvector of [[sxx, sxy], [sxy, syy]]."""
    half_diff = 0.5 * (sxx - syy)
    if math.hypot(half_diff, sxy) <= 1e-12 * max(sxx + syy, 0.0):
        return 0.0  # isotropic: any direction is a major axis
    theta = 0.5 * math.degrees(math.atan2(2.0 * sxy, sxx - syy))  # from the x (east) axis, counter-clockwise
    angle = (90.0 - theta) % 180.0
    return 0.0 if angle >= 180.0 else angle


def _hull_area_km2(x_km: np.ndarray, y_km: np.ndarray) -> float:
    if x_km.size < 3:
        return 0.0
    hull = shapely.convex_hull(shapely.multipoints(np.column_stack([x_km, y_km])))
    if hull.geom_type != "Polygon":
        return 0.0
    area = float(hull.area)
    # collinear points that rounding bent into a sliver: area ~ eps * extent²
    extent = max(float(np.ptp(x_km)), float(np.ptp(y_km)))
    return area if area > 1e-12 * extent * extent else 0.0


def cluster_geometry(lon_deg, lat_deg, n_std: float = 1.0, min_axis_km: float = 0.001) -> ClusterGeometry:
    """Mean centre, standard distance (Eq. 7), standard-deviation ellipse and convex hull of one cluster.

    lon_deg, lat_deg: arrays (n,) in degrees, n >= 1. n_std scales the ellipse axes (1 = one standard
    deviation); min_axis_km floors each semi-axis (km). Raises ValueError on empty input, NaN/inf
    coordinates or latitudes outside [-90, 90].
    """
    if not (math.isfinite(n_std) and n_std > 0):
        raise ValueError(f"cluster_geometry: n_std must be a positive number, got {n_std!r}")
    if not (math.isfinite(min_axis_km) and min_axis_km > 0):
        raise ValueError(f"cluster_geometry: min_axis_km must be a positive number, got {min_axis_km!r}")
    lon, lat = _coords(lon_deg, lat_deg, "cluster_geometry")
    if lon.ndim != 1:
        raise ValueError(f"cluster_geometry: lon_deg/lat_deg must be 1-D arrays (n,), got shape {lon.shape}")
    lon_c, lat_c = _mean_centre(lon, lat)
    x_m, y_m = _to_local(lon, lat, lon_c, lat_c)
    x, y = x_m / 1000.0, y_m / 1000.0
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy, sxy = float(np.mean(dx * dx)), float(np.mean(dy * dy)), float(np.mean(dx * dy))
    half_trace = 0.5 * (sxx + syy)
    disc = math.hypot(0.5 * (sxx - syy), sxy)
    lam_major, lam_minor = half_trace + disc, max(half_trace - disc, 0.0)
    a = max(n_std * math.sqrt(lam_major), min_axis_km)
    b = max(n_std * math.sqrt(lam_minor), min_axis_km)
    geometry = ClusterGeometry(
        n_pixels=int(lon.size),
        center_lon=lon_c,
        center_lat=lat_c,
        standard_distance_km=math.sqrt(sxx + syy),
        sd_x_km=math.sqrt(sxx),
        sd_y_km=math.sqrt(syy),
        semi_major_km=a,
        semi_minor_km=b,
        angle_deg=_major_axis_bearing(sxx, syy, sxy),
        ellipse_area_km2=math.pi * a * b,
        hull_area_km2=_hull_area_km2(x, y),
    )
    logger.debug("cluster geometry: %s", geometry)
    return geometry


def ellipse_polygon(geometry: ClusterGeometry, n_vertices: int = 72) -> Polygon:
    """The standard-deviation ellipse of ``geometry`` as a shapely Polygon in lon/lat degrees.

    Built with ``n_vertices`` vertices (>= 4) in the local frame of the centre and mapped back with
    ``from_local_m``; closed, valid, counter-clockwise exterior. Longitudes are kept continuous around
    the centre (a hotspot on the antimeridian may have longitudes beyond ±180). Raises ValueError when
    the ellipse cannot be drawn as a valid lon/lat polygon (e.g. it contains a pole).
    """
    n_vertices = int(n_vertices)
    if n_vertices < 4:
        raise ValueError(f"ellipse_polygon: n_vertices must be >= 4, got {n_vertices}")
    a_m, b_m = geometry.semi_major_km * 1000.0, geometry.semi_minor_km * 1000.0
    beta = math.radians(geometry.angle_deg)
    ux, uy = math.sin(beta), math.cos(beta)   # major axis (east, north)
    vx, vy = -uy, ux                          # minor axis, +90° counter-clockwise from it
    t = np.linspace(0.0, 2.0 * math.pi, n_vertices, endpoint=False)
    ca, sb = a_m * np.cos(t), b_m * np.sin(t)
    lon, lat = _from_local(ca * ux + sb * vx, ca * uy + sb * vy, geometry.center_lon, geometry.center_lat)
    lon = geometry.center_lon + _wrap_lon(lon - geometry.center_lon)
    polygon = orient(Polygon(np.column_stack([lon, lat])), sign=1.0)
    if not polygon.is_valid:
        raise ValueError(f"ellipse_polygon: the ellipse around ({geometry.center_lon}, {geometry.center_lat}) "
                         f"with semi-axes {geometry.semi_major_km} x {geometry.semi_minor_km} km is not a valid "
                         f"lon/lat polygon ({shapely.is_valid_reason(polygon)})")
    return polygon


def ellipse_wkt(geometry: ClusterGeometry, n_vertices: int = 72) -> str:
    """WKT of ``ellipse_polygon(geometry, n_vertices)`` (lon/lat degrees, full precision)."""
    return shapely.to_wkt(ellipse_polygon(geometry, n_vertices), rounding_precision=-1)


# ---------------------------------------------------------------------------------------------------------------------
# series summary


def mean_series(disp_mm) -> np.ndarray:
    """Mean displacement series (T,) in mm over the pixels of an (n, T) array, ignoring NaN.

    An epoch where every pixel is NaN (or n == 0) gives NaN. Raises ValueError on a non-2-D array or inf.
    """
    disp = np.asarray(disp_mm, dtype=np.float64)
    if disp.ndim != 2:
        raise ValueError(f"mean_series: disp_mm must be a 2-D array (n, T), got shape {disp.shape}")
    if np.isinf(disp).any():
        raise ValueError("mean_series: disp_mm contains infinite values")
    valid = ~np.isnan(disp)
    count = valid.sum(axis=0)
    total = np.where(valid, disp, 0.0).sum(axis=0)
    return np.divide(total, count, out=np.full(disp.shape[1], np.nan), where=count > 0)


def _suffix_after(v: np.ndarray) -> np.ndarray:
    """sum(v[j] for j > k) for k = 0..len(v)-3."""
    return np.cumsum(v[::-1])[::-1][1:v.size - 1]


def _hinge_sse(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSE (m-2,) of y ~ c + s * max(t - t[k], 0) for k = 0..m-3 (t strictly increasing, m >= 3). O(m)."""
    m = t.size
    t = t - t.mean()
    y = y - y.mean()                          # SSE is invariant to a shift of y; now sum(y) = 0
    tk = t[:m - 2]
    n_after = (m - 1 - np.arange(m - 2)).astype(np.float64)
    s_t, s_tt, s_ty = _suffix_after(t), _suffix_after(t * t), _suffix_after(t * y)
    s_y = _suffix_after(y)
    s_h = s_t - n_after * tk                  # sum of h = max(t - t_k, 0)
    s_hh = s_tt - 2.0 * tk * s_t + n_after * tk * tk
    s_hy = s_ty - tk * s_y
    var_h = s_hh - s_h * s_h / m              # > 0: at least two epochs after t_k
    return np.maximum(float(np.dot(y, y)) - s_hy * s_hy / var_h, 0.0)


def onset_peak(mean_disp_mm, t_years) -> tuple[int, int]:
    """Onset and peak epochs of a mean displacement series.

    mean_disp_mm: (T,) mm, NaN for missing epochs (ignored); t_years: (T,) strictly increasing, finite.
    peak_index: the epoch of the largest |displacement - its value at the first finite epoch|.
    onset_index: the breakpoint t_k of the least-squares hinge fit y = c for t <= t_k, c + s (t - t_k)
    after (c and s free), over the finite epochs k = 0..m-3 (m finite epochs); 0 (the first finite epoch)
    when the deformation is linear from the start; ties go to the earliest breakpoint; the first finite
    epoch when m < 3. Both are indices into the input arrays. O(T). Raises ValueError when all epochs are
    NaN or the inputs are malformed.
    """
    y = np.asarray(mean_disp_mm, dtype=np.float64)
    t = np.asarray(t_years, dtype=np.float64)
    if y.ndim != 1 or t.shape != y.shape:
        raise ValueError(f"onset_peak: mean_disp_mm and t_years must be 1-D of the same length, "
                         f"got shapes {y.shape} and {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError("onset_peak: t_years contains NaN/inf values")
    if t.size > 1 and not (np.diff(t) > 0).all():
        raise ValueError("onset_peak: t_years must be strictly increasing")
    if np.isinf(y).any():
        raise ValueError("onset_peak: mean_disp_mm contains infinite values")
    idx = np.flatnonzero(~np.isnan(y))
    if idx.size == 0:
        raise ValueError("onset_peak: mean_disp_mm is all NaN (no finite epoch)")
    yv, tv = y[idx], t[idx]
    peak = int(idx[int(np.argmax(np.abs(yv - yv[0])))])
    if idx.size < 3:
        return int(idx[0]), peak
    sse = _hinge_sse(tv, yv)
    # the earliest breakpoint within rounding of the best fit (a flat series gives the first epoch)
    tol = 1e-12 * float(np.dot(yv, yv))
    onset = int(idx[int(np.flatnonzero(sse <= sse.min() + tol)[0])])
    return onset, peak
