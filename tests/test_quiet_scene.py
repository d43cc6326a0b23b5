"""A scene where nothing moves (a quiet area of interest, a calm monitoring period): the pipeline's
stages run through it and record that there is nothing, no hotspot, no track, no alert, a forecast
for every pixel, instead of failing or reading an earlier run's hotspots."""
from __future__ import annotations

import pytest

from conftest import fast_clustering
from insarlake.config import replace
from insarlake.lake import read_table, rows_written, run_results
from monitoring import monitoring_run, simulate_scene

DATASET = "nothing_moves"


@pytest.fixture(scope="module")
def quiet_run(spark, config, tmp_path_factory):
    """(config, run, alerts result) of a whole monitoring pipeline over a scene with no source."""
    scene = replace(config.simulate, n_pixels=1500, width_km=6.0, height_km=6.0, urban_patches=1,
                    sources={"subsidence": 0, "uplift": 0, "landslide": 0, "tunnel": 0, "postseismic": 0})
    quiet = replace(fast_clustering(config), simulate=scene,
                    classify=replace(config.classify, models=["lstm"], max_epochs=1),
                    forecast=replace(config.forecast, models=["dapf"], max_epochs=1, samples=8, evaluate=False))
    whole = simulate_scene(spark, quiet, DATASET, tmp_path_factory.mktemp("quiet"))
    run, alerts = monitoring_run(spark, quiet, DATASET, whole, "release", full=True)
    return quiet, run, alerts


def test_nothing_moves_so_nothing_is_retained_and_nothing_alerts(spark, quiet_run):
    config, run, alerts = quiet_run
    hotspots = rows_written(spark, config, "hotspots", DATASET, run)
    assert hotspots is not None and hotspots.where("retained").count() == 0
    assert run.counts["hotspots"] == hotspots.count()
    assert run.counts["hotspot_pixels"] == rows_written(spark, config, "hotspot_pixels", DATASET, run).count()
    assert len(alerts.alerts) == 0 and run.counts["alerts"] == 0
    tracks = run_results(spark, config, "hotspot_tracks", DATASET, current=run).toPandas()
    assert list(tracks["status"]) == ["none"] and tracks["track_id"].isna().all()   # the run says it found none


def test_every_pixel_is_still_clustered_classified_and_forecast(spark, quiet_run):
    config, run, _ = quiet_run
    n = read_table(spark, config, "pixels", [DATASET]).count()
    assert n > 0
    for table in ("clusters", "classes"):
        assert run_results(spark, config, table, DATASET, current=run).count() == n, table
    forecasts = run_results(spark, config, "forecasts", DATASET, current=run)
    assert forecasts.select("pixel_id").distinct().count() == n
