"""Neighbourhoods on Spark (spatial.neighbours): the local residual per tile with halos equals the
in-process kernel over all points, for any tiling; bad rows are refused."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from insarlake.errors import InputError
from insarlake.hotspots.geometry import from_local_m
from insarlake.hotspots.residual import local_residual
from insarlake.spatial.neighbours import map_neighbourhoods

RADIUS_M = 150.0


def _points(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    lon, lat = from_local_m(rng.uniform(-3000, 3000, n), rng.uniform(-2000, 2000, n), 9.2, 45.4)
    velocity = rng.normal(0, 2, n) - 8.0 * (lon > 9.2)
    return pd.DataFrame({"pixel_id": [f"p{i:05d}" for i in range(n)], "lon": lon, "lat": lat,
                         "velocity": velocity, "moving_sign": np.where(velocity < -6, -1, 0).astype(np.int8)})


def _residual_rows():
    """The tile function (made here: Spark's workers cannot import this test module)."""
    def rows(frame: pd.DataFrame, owned: np.ndarray) -> pd.DataFrame:
        residual = local_residual(frame["lon"].to_numpy(), frame["lat"].to_numpy(), frame["velocity"].to_numpy(),
                                  frame["moving_sign"].to_numpy(), RADIUS_M, query=owned)
        return pd.DataFrame({"pixel_id": frame["pixel_id"].to_numpy()[owned], "residual": residual,
                             "rows": len(frame)})
    return rows


@pytest.mark.parametrize("max_points,min_precision", [(1_000_000, 4), (80, 5)])
def test_the_residual_over_tiles_equals_the_kernel_over_all_points(spark, max_points, min_precision):
    pdf = _points()
    expected = local_residual(pdf.lon.to_numpy(), pdf.lat.to_numpy(), pdf.velocity.to_numpy(),
                              pdf.moving_sign.to_numpy(), RADIUS_M)
    out = map_neighbourhoods(spark.createDataFrame(pdf), RADIUS_M, _residual_rows(),
                             "pixel_id string, residual double, rows long", max_points_per_tile=max_points,
                             min_precision=min_precision)
    got = out.toPandas().set_index("pixel_id").loc[pdf.pixel_id]
    out.unpersist()
    assert len(got) == len(pdf)                               # every point answered once
    np.testing.assert_array_equal(np.isnan(got.residual.to_numpy()), np.isnan(expected))
    np.testing.assert_allclose(got.residual.to_numpy(), expected, rtol=0, atol=0)
    # one tile saw every point; many tiles each saw their own points and a halo, not the whole set
    assert (got.rows == len(pdf)).all() if max_points > len(pdf) else got.rows.max() < len(pdf) / 5


def test_bad_rows_are_refused(spark):
    pdf = _points(50)
    pdf.loc[3, "lat"] = 95.0
    with pytest.raises(InputError, match="neighbourhoods: column 'lat'"):
        map_neighbourhoods(spark.createDataFrame(pdf), RADIUS_M, _residual_rows(), "pixel_id string, residual double, "
                           "rows long")
    with pytest.raises(ValueError, match="radius_m"):
        map_neighbourhoods(spark.createDataFrame(_points(50)), 0.0, _residual_rows(), "pixel_id string")
