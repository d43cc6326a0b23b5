"""Hotspot tracks and alerts on two monitoring runs of a simulated scene (issue 15): three
subsidence bowls and an uplift, 2020-2022; run 1 holds the acquisitions up to 2021-12-31 (a
release), run 2 appends those of 2022 and runs every analysis stage of the pipeline, with its
report (opened in headless chromium). Bowl 2 starts moving in 2022 (after run 1), bowl 3's rate
triples in 2022, bowl 1 and the uplift do not change. An asset layer (a road through bowl 2, a
house at its centre, a road far from every source) ranks the alerts."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import shapely
from scipy.integrate import quad

from browser import ARTIFACTS, browser_page
from conftest import PROJECT, fast_clustering, readme_block
from monitoring import cut_deliveries, monitoring_run, simulate_scene, tracks_with_source
from insarlake.alerts.assets import read_assets
from insarlake.config import replace
from insarlake.errors import ConfigError
from insarlake.lake import lake_files, read_table, run_results
from insarlake.simulate.scene import local_to_lonlat, plan_scene

DATASET = "monitor"
NEW_SOURCE, FASTER_SOURCE, STILL_SOURCE = 2, 3, 1
CHANGE_DATE = "2022-01-20"


@pytest.fixture(scope="module")
def monitor_config(config, tmp_path_factory):
    scene = replace(config.simulate, n_pixels=8000, width_km=16.0, height_km=16.0, end_date="2022-12-31",
                    sources={"subsidence": 3, "uplift": 1, "landslide": 0, "tunnel": 0, "postseismic": 0},
                    changes=[{"source": NEW_SOURCE, "start_date": CHANGE_DATE},
                             {"source": FASTER_SOURCE, "rate_factor": 3.0, "change_date": CHANGE_DATE}])
    assets = tmp_path_factory.mktemp("assets") / "assets.geojson"
    assets.write_text(json.dumps(_asset_layer(plan_scene(scene))))
    base = fast_clustering(config)
    return replace(base, simulate=scene, hotspots=replace(config.hotspots, labels="clusters"),
                   alerts=replace(config.alerts, assets=str(assets)),
                   classify=replace(config.classify, models=["lstm"], max_epochs=2),
                   forecast=replace(config.forecast, models=["dapf"], max_epochs=1, samples=8, evaluate=False))


def _asset_layer(plan) -> dict:
    """A north-south road 8 km long through bowl NEW_SOURCE's centre, a 20 m house there, a road
    in the scene's corner, and a feature without geometry."""
    source = plan.sources[NEW_SOURCE - 1]
    (lon,), (lat,) = local_to_lonlat(plan, np.array([source.x_m]), np.array([source.y_m]))
    (lon0, lon1), (lat0, lat1) = local_to_lonlat(plan, np.array([50.0, 400.0]), np.array([50.0, 50.0]))
    d = 0.0001
    features = [
        {"type": "LineString", "coordinates": [[lon, lat - 0.036], [lon, lat + 0.036]]},
        {"type": "Polygon", "coordinates": [[[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d],
                                             [lon - d, lat + d], [lon - d, lat - d]]]},
        {"type": "LineString", "coordinates": [[lon0, lat0], [lon1, lat1]]},
        None]
    return {"type": "FeatureCollection",
            "features": [{"type": "Feature", "properties": {"n": i}, "geometry": g} for i, g in enumerate(features)]}


@pytest.fixture(scope="module")
def runs(spark, monitor_config, tmp_path_factory):
    folder = tmp_path_factory.mktemp("monitor")
    whole = simulate_scene(spark, monitor_config, DATASET, folder)
    first, second = cut_deliveries(whole, folder, "20211231")
    one = monitoring_run(spark, monitor_config, DATASET, first, "release")
    two = monitoring_run(spark, monitor_config, DATASET, second, "append", full=True)   # the pipeline's stages
    truth = read_table(spark, monitor_config, "truth", [DATASET]).toPandas()
    return {"one": one, "two": two, "truth": truth, "first": first}


def test_the_first_run_starts_every_track_and_raises_no_alert(spark, monitor_config, runs):
    (run, result), truth = runs["one"], runs["truth"]
    assert result.previous_run is None and result.alerts.empty
    tracks = tracks_with_source(spark, monitor_config, DATASET, run, truth)
    assert (tracks.status == "new").all() and len(tracks) == run.counts["hotspot_tracks"] >= 2
    assert (tracks.first_seen_run == run.run_id).all() and tracks.track_id.is_unique
    assert NEW_SOURCE not in set(tracks.source)                  # it does not move yet
    assert {STILL_SOURCE, FASTER_SOURCE} <= set(tracks.source)


def test_the_second_run_alerts_on_what_changed_and_only_on_that(spark, monitor_config, runs):
    """Bowl 2 gives a new track with a `new` alert, bowl 3 keeps its track and is `accelerating`,
    bowl 1 keeps its track with no alert."""
    (one, _), (two, result), truth = runs["one"], runs["two"], runs["truth"]
    assert result.previous_run == one.run_id
    before = tracks_with_source(spark, monitor_config, DATASET, one, truth)
    now = tracks_with_source(spark, monitor_config, DATASET, two, truth)
    alerts = result.alerts.merge(now[["track_id", "source"]], on="track_id", how="left")
    by_source = {s: set(g.kind) for s, g in alerts.groupby("source")}
    assert by_source.get(NEW_SOURCE) == {"new"}
    assert by_source.get(FASTER_SOURCE) == {"accelerating"}
    assert STILL_SOURCE not in by_source
    assert set(alerts.source) <= {NEW_SOURCE, FASTER_SOURCE}, alerts[["kind", "source", "evidence"]]
    for source in (STILL_SOURCE, FASTER_SOURCE):                 # the same track in both runs
        [track_before] = before.loc[before.source == source, "track_id"]
        [track_now] = now.loc[now.source == source, "track_id"]
        assert track_now == track_before
        row = now[now.track_id == track_now].iloc[0]
        assert row.status == "continuing" and row.first_seen_run == one.run_id
    fast = alerts[alerts.kind == "accelerating"].iloc[0].evidence
    assert fast["new_rate_mm_yr"] < fast["baseline_rate_mm_yr"] < 0          # faster subsidence
    assert fast["epochs_persisting"] >= monitor_config.alerts.persist_epochs
    assert fast["z_min"] >= monitor_config.alerts.z_alert
    born = now[now.source == NEW_SOURCE].iloc[0]
    assert born.status == "new" and born.first_seen_run == two.run_id
    assert born.first_seen_date == read_table(spark, monitor_config, "epochs", [DATASET]).agg({"date": "max"}).first()[0]
    assert list(alerts["rank"]) == list(range(1, len(alerts) + 1))


def _meridian_arc_m(lat0: float, lat1: float) -> float:
    """The WGS84 meridian arc between two latitudes (degrees), by quadrature."""
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    integrand = lambda phi: a * (1 - e2) / (1 - e2 * math.sin(phi) ** 2) ** 1.5     # noqa: E731
    return quad(integrand, math.radians(min(lat0, lat1)), math.radians(max(lat0, lat1)), epsabs=1e-9)[0]


def test_alerts_count_and_measure_the_assets_they_touch(spark, monitor_config, runs):
    """The new bowl's alert touches the road through it and the house (2 assets) and holds the
    road's length inside its ellipse (the meridian arc between the crossing points); the far road
    touches nothing; the feature without geometry is counted as refused."""
    (two, result) = runs["two"]
    layer = json.loads(open(monitor_config.alerts.assets).read())
    road = shapely.geometry.shape(layer["features"][0]["geometry"])
    truth = runs["truth"]
    now = tracks_with_source(spark, monitor_config, DATASET, two, truth)
    alert = result.alerts.merge(now[["track_id", "source"]], on="track_id").query(f"source == {NEW_SOURCE}").iloc[0]
    assert alert.assets == 2
    inside = shapely.intersection(road, shapely.from_wkt(alert.geometry))
    expected = sum(_meridian_arc_m(part.coords[0][1], part.coords[-1][1]) for part in getattr(inside, "geoms", [inside]))
    assert expected > 100
    assert alert.asset_length_m == pytest.approx(expected, rel=1e-6)
    others = result.alerts[result.alerts.track_id != alert.track_id]
    assert (others.assets == 0).all() and (others.asset_length_m == 0).all()
    assert two.counts["assets_without_geometry"] == 1
    ranked = result.alerts.sort_values("rank")
    severity = ranked.severity.map({"high": 0, "medium": 1, "low": 2}).to_numpy()
    assert (np.diff(severity) >= 0).all()


def test_views_show_the_active_alerts_and_each_hotspots_track(spark, monitor_config, runs):
    (one, _), (two, result) = runs["one"], runs["two"]
    active = spark.sql(f"SELECT * FROM insar.active_alerts WHERE dataset = '{DATASET}'").toPandas()
    assert set(active.run_id) == {two.run_id} and len(active) == len(result.alerts)
    assert set(active.track_status) <= {"new", "continuing", "merged", "split", "vanished", "missed"}
    history = spark.sql(f"SELECT run_id, hotspot_id, track_id FROM insar.hotspot_history "
                        f"WHERE dataset = '{DATASET}'").toPandas()
    for run in (one, two):
        tracks = run_results(spark, monitor_config, "hotspot_tracks", DATASET, run_id=run.run_id).toPandas()
        live = tracks[tracks.hotspot_id.notna() & tracks.status.isin(["new", "continuing", "merged", "split"])]
        mine = history[history.run_id == run.run_id].set_index("hotspot_id").track_id
        assert mine.to_dict() == dict(zip(live.hotspot_id.astype(int), live.track_id))
    cookbook = spark.sql(readme_block("active-alerts").replace("'demo'", f"'{DATASET}'")).toPandas()
    assert list(cookbook["rank"]) == sorted(result.alerts["rank"])
    assert list(cookbook.kind) == list(result.alerts.sort_values("rank").kind)
    fast = cookbook[cookbook.kind == "accelerating"]
    assert len(fast) == 1 and fast.z_min.iloc[0] >= monitor_config.alerts.z_alert
    track = result.alerts[result.alerts.kind == "accelerating"].track_id.iloc[0]          # seen by both runs
    lived = spark.sql(readme_block("track-history").replace("'demo'", f"'{DATASET}'").replace("TRACK", track)).toPandas()
    assert len(lived) == 2 and lived.run_finished.is_monotonic_increasing
    assert lived.mean_velocity.iloc[1] < lived.mean_velocity.iloc[0] < 0           # the bowl sinks faster
    spatial = spark.sql(f"SELECT count(*) AS n FROM insar.active_alerts WHERE dataset = '{DATASET}' AND "
                        f"ST_Intersects(ST_GeomFromWKT(geometry), ST_Buffer(ST_Point(center_lon, center_lat), 0.001))")
    assert spatial.first().n == len(result.alerts)


def test_hand_made_runs_nothing_then_new_growing_and_gone(spark, monitor_config, runs):
    """Hand-made hotspots runs on a dataset of its own: a run whose hotspot is refused writes one
    `none` row; the next run's hotspot (40 of the fastest pixels) is `new` against it; then 120 of
    them in an ellipse twice as large are `growing`; then no hotspot: the track `vanished` with an
    alert, or is `missed` without one when the ground in its last ellipse still moves (the
    pixels inside it counted here with shapely)."""
    from conftest import write_hotspots
    from insarlake.alerts import change
    from insarlake.alerts.stage import run_alerts
    from insarlake.hotspots.stage import velocity_noise
    from insarlake.ingest.stage import run_ingest
    from insarlake.lake import Run

    quiet = "quiet"
    config = replace(monitor_config, alerts=replace(monitor_config.alerts, assets=None))
    run_ingest(spark, config, str(runs["first"]), quiet, Run("ingest", config))
    pixels = read_table(spark, config, "pixels", [quiet]).select("pixel_id", "lon", "lat", "velocity", "velocity_std")
    v0, sigma = velocity_noise(pixels, config.hotspots)
    level = config.hotspots.z_pixel * sigma
    movers = pixels.toPandas().assign(speed=lambda p: (p.velocity - v0).abs()).sort_values("speed", ascending=False)
    assert (movers.speed.iloc[:120] >= level).all()
    n_epochs = read_table(spark, config, "epochs", [quiet]).count()

    def hotspot(n: int, area_km2: float, retained: bool) -> dict:
        part = movers.iloc[:n]
        lon, lat = float(part.lon.mean()), float(part.lat.mean())
        return {"n_pixels": n, "center_lon": lon, "center_lat": lat, "ellipse_area_km2": area_km2,
                "mean_velocity": float(part.velocity.mean()), "retained": retained, "mean_disp": [0.0] * n_epochs,
                "geometry": shapely.Point(lon, lat).buffer(0.004 * math.sqrt(area_km2)).wkt}

    def run_with(n: int, area_km2: float, retained: bool):
        run = Run("alerts", config)
        write_hotspots(spark, quiet, run, {0: hotspot(n, area_km2, retained)}, {0: list(movers.pixel_id.iloc[:n])})
        result = run_alerts(spark, config, quiet, run)
        return run, result, run_results(spark, config, "hotspot_tracks", quiet, run_id=run.run_id).toPandas()

    first, nothing, rows = run_with(40, 0.5, retained=False)
    assert rows.status.tolist() == ["none"] and rows.track_id.isna().all() and nothing.alerts.empty
    second, found, rows = run_with(40, 0.5, retained=True)
    assert found.previous_run == first.run_id and found.alerts.kind.tolist() == ["new"]
    assert rows.status.tolist() == ["new"]
    third, grown, rows = run_with(120, 1.0, retained=True)
    assert grown.alerts.kind.tolist() == ["growing"] and rows.status.tolist() == ["continuing"]
    assert grown.alerts.evidence.iloc[0]["n_pixels_at_level"] == 120
    last = shapely.from_wkt(rows.geometry.iloc[0])
    fourth, gone, rows = run_with(120, 1.0, retained=False)
    inside = movers[shapely.contains_xy(last, movers.lon.to_numpy(), movers.lat.to_numpy())]
    moving = change.still_moving(len(inside), inside.velocity.mean(), v0, level / config.hotspots.z_pixel,
                                 config.hotspots.z_hotspot, config.hotspots.min_pixels)
    assert rows.status.tolist() == ["missed" if moving else "vanished"]
    assert gone.alerts.kind.tolist() == ([] if moving else ["vanished"])
    if moving:
        assert rows.n_pixels.iloc[0] == len(inside)
        assert rows.mean_velocity.iloc[0] == pytest.approx(inside.velocity.mean(), rel=1e-12)


def test_hotspots_and_alerts_exported_as_geoparquet(spark, monitor_config, runs):
    """outputs/<dataset>/<run>/alerts.parquet and hotspots.parquet: GeoParquet metadata (WKB, the
    geometry column), the run's rows with the tables' geometries; read back by GeoPandas' way
    (pyarrow + shapely) and by Sedona (as an asset layer)."""
    import pyarrow.parquet as pq

    (two, result) = runs["two"]
    files = lake_files(monitor_config)
    for name, expected in (("alerts", result.alerts),
                           ("hotspots", run_results(spark, monitor_config, "hotspots", DATASET, run_id=two.run_id)
                            .where("retained").toPandas())):
        table = pq.read_table(files.local_path("outputs", DATASET, two.run_id, f"{name}.parquet"))
        geo = json.loads(table.schema.metadata[b"geo"])
        assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
        frame = table.to_pandas().sort_values("track_id" if name == "alerts" else "hotspot_id")
        expected = expected.sort_values("track_id" if name == "alerts" else "hotspot_id")
        assert len(frame) == len(expected) > 0
        shapes, wkt = shapely.from_wkb(frame.geometry.to_numpy()), shapely.from_wkt(expected.geometry.to_numpy())
        assert shapely.equals_exact(shapes, wkt, tolerance=1e-12).all()
        if name == "alerts":                   # the evidence as JSON text, the linked tracks joined
            for text, evidence in zip(frame.evidence, expected.evidence):
                assert json.loads(text) == pytest.approx(dict(evidence), rel=1e-15, nan_ok=True)
            assert list(frame.linked_tracks) == [",".join(t) for t in expected.linked_tracks]
    assets, refused = read_assets(spark, str(files.local_path("outputs", DATASET, two.run_id, "hotspots.parquet")))
    assert assets.count() == len(expected) and refused == 0


def test_an_asset_layer_that_cannot_be_read_is_one_line(spark, tmp_path):
    with pytest.raises(ConfigError, match=r"alerts.assets': .*nosuch.geojson: cannot be read"):
        read_assets(spark, str(tmp_path / "nosuch.geojson"))
    with pytest.raises(ConfigError, match=r"not a GeoParquet \(.parquet\) or GeoJSON"):
        read_assets(spark, str(tmp_path / "roads.shp"))
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"type": "Topology", "objects": {}}')
    with pytest.raises(ConfigError, match=r"wrong.json: not GeoJSON Features or FeatureCollections \(type Topology\)"):
        read_assets(spark, str(wrong))
    lines = tmp_path / "lines.geojson"
    lines.write_text('{"type": "Feature", "geometry": {"type": "Point", "coordinates": [11, 44]}, "properties": {}}\n'
                     '{"type": "Feature", "geometry": null, "properties": {}}\n')
    assets, refused = read_assets(spark, str(lines))
    assert assets.count() == 1 and refused == 1


def test_the_run_report_opens_in_a_browser(spark, monitor_config, runs):
    """The second run's report (outputs/<dataset>/<run_id>/report.html) in headless chromium: no
    console error, every picture decoded (map, series with forecasts, confusion), the alerts table
    holds the run's alerts by rank and the hotspots table its retained hotspots with their tracks;
    the screenshot is kept in build/test-artifacts/."""
    (two, _), truth = runs["two"], runs["truth"]
    path = lake_files(monitor_config, spark).local_path("outputs", DATASET, two.run_id, "report.html")
    alerts = run_results(spark, monitor_config, "alerts", DATASET, two.run_id).orderBy("rank").toPandas()
    tracks = tracks_with_source(spark, monitor_config, DATASET, two, truth)
    tracks = tracks[tracks.hotspot_id.notna()].sort_values("hotspot_id")
    shot = ARTIFACTS / f"report_{two.run_id[:8]}.png"
    with browser_page() as (page, problems):
        page.goto(path.as_uri(), wait_until="load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
        cells = "rows => rows.map(r => Array.from(r.cells, c => c.textContent))"
        alert_rows = page.eval_on_selector_all("#alerts-table tbody tr", cells)
        hotspot_rows = page.eval_on_selector_all("#hotspots-table tbody tr", cells)
        stage_rows = page.eval_on_selector_all("#stages-table tbody tr", cells)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
    assert problems == []
    assert len(images) == 3 and all(complete and width > 0 for _, complete, width in images), images
    assert {"new", "accelerating"} <= set(alerts.kind)
    assert [(int(r[0]), r[1], r[3]) for r in alert_rows] == list(zip(alerts["rank"], alerts.kind, alerts.track_id))
    assert [(int(r[0]), r[1], r[2]) for r in hotspot_rows] == list(zip(tracks.hotspot_id.astype(int), tracks.track_id,
                                                                        tracks.status))
    assert [r[0] for r in stage_rows] == [s for s in two.seconds if s != "report"]    # every stage before it
    assert {"classify.predict", "hotspots.detect", "forecast.predict"} <= set(two.seconds)
    assert any(s.startswith("alerts") for s in two.seconds)
    assert shot.stat().st_size > 0
    print(f"report screenshot: {shot}")


def test_the_tables_read_without_spark(spark, monitor_config, runs):
    """The README's snippet reads the lake with delta-rs alone, in a process without Spark (and
    exits cleanly): the latest run's alerts by rank and the retained hotspots of every run, as
    Spark sees them."""
    (two, _) = runs["two"]
    snippet = readme_block("without-spark", "python").replace(
        'lake, dataset = "lake", "demo"', f'lake, dataset = {monitor_config.lake.path!r}, {DATASET!r}')
    script = (snippet + "import json, sys\n"
              "json.dump({'alerts': latest_alerts[['run_id', 'rank', 'kind', 'track_id']].values.tolist(),\n"
              "           'hotspots': sorted(hotspots[['run_id', 'hotspot_id']].values.tolist()),\n"
              "           'spark': 'pyspark' in sys.modules}, sys.stdout)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK"))}
    done = subprocess.run([sys.executable, "-c", script], env=env, text=True, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    read = json.loads(done.stdout)
    alerts = run_results(spark, monitor_config, "alerts", DATASET, two.run_id).orderBy("rank").toPandas()
    assert read["alerts"] == [[two.run_id, int(r), k, t] for r, k, t in zip(alerts["rank"], alerts.kind, alerts.track_id)]
    assert len(read["alerts"]) >= 2 and not read["spark"]
    hotspots = read_table(spark, monitor_config, "hotspots", [DATASET]).where("retained").collect()
    assert read["hotspots"] == sorted([r.run_id, r.hotspot_id] for r in hotspots)


def _summary(book) -> dict:
    """The JSON a notebook's last cell prints."""
    [text] = [o["text"] for o in book.cells[-1].outputs if o.get("name") == "stdout"]
    return json.loads(text.strip().splitlines()[-1])


def _images(book) -> int:
    return sum("image/png" in o.get("data", {}) for cell in book.cells if cell.cell_type == "code" for o in cell.outputs)


@pytest.mark.parametrize("name", ["quick_start", "hotspot_review", "forecasts", "monitoring_history"])
def test_the_notebooks_run_on_the_monitoring_lake(spark, monitor_config, runs, name, tmp_path, monkeypatch):
    """Each notebook of notebooks/ runs from top to bottom in a fresh kernel (nbclient) on the
    monitoring lake and states what it showed; its numbers are those Spark reads."""
    import nbformat
    from nbclient import NotebookClient

    (two, result) = runs["two"]
    monkeypatch.setenv("INSARLAKE_LAKE", str(monitor_config.lake.path))
    monkeypatch.setenv("INSARLAKE_DATASET", DATASET)
    book = nbformat.read(PROJECT / "notebooks" / f"{name}.ipynb", as_version=4)
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    summary = _summary(book)
    hotspots = run_results(spark, monitor_config, "hotspots", DATASET, two.run_id).where("retained")
    if name == "quick_start":
        assert summary == {"pixels": 8000, "quarantined": 0, "run": two.run_id, "retained": hotspots.count(),
                           "report_exists": True}
        assert _images(book) == 1
    elif name == "hotspot_review":
        members = run_results(spark, monitor_config, "hotspot_pixels", DATASET, two.run_id).join(
            hotspots.select("hotspot_id"), "hotspot_id")
        assert summary == {"run": two.run_id, "retained": hotspots.count(), "members": members.count(),
                           "alerts": sorted(result.alerts.kind)}
        assert _images(book) == 2
    elif name == "forecasts":
        assert summary == {"run": two.run_id, "pixels_shown": 4, "horizons": monitor_config.forecast.horizon_epochs,
                           "ordered_share": 1.0, "pixels": 8000}
        assert _images(book) == 1
    else:
        tracks = read_table(spark, monitor_config, "hotspot_tracks", [DATASET]).where("track_id IS NOT NULL")
        assert summary == {"runs": 2, "tracks": tracks.select("track_id").distinct().count(),
                           "alerts": result.alerts.kind.value_counts().to_dict()}
        assert _images(book) == 1
