"""Config loading: defaults, profiles, overrides and the errors a user sees."""
from __future__ import annotations

import pytest

from insarlake.config import load_config, replace
from insarlake.errors import ConfigError
from conftest import PROJECT


def test_defaults_and_profiles_load():
    default = load_config()
    assert default.lake.path == "./lake" and default.catalog.database == "insar"
    for profile in ("local", "databricks", "emr"):
        cfg = load_config(PROJECT / "conf" / f"{profile}.yaml")
        assert cfg.catalog.database == "insar"
    assert load_config(PROJECT / "conf" / "databricks.yaml").catalog.kind == "session"


def test_overrides_are_typed_and_change_the_hash():
    base = load_config()
    cfg = load_config(overrides=["simulate.n_pixels=5000", "simulate.atmosphere_sigma_mm=2",
                                 "spark.conf={spark.ui.enabled: 'false'}", "simulate.start_date=2020-01-05"])
    assert cfg.simulate.n_pixels == 5000
    assert cfg.simulate.atmosphere_sigma_mm == 2.0 and isinstance(cfg.simulate.atmosphere_sigma_mm, float)
    assert cfg.spark.conf == {"spark.ui.enabled": "false"}
    assert cfg.simulate.start_date == "2020-01-05"
    assert cfg.hash != base.hash and load_config().hash == base.hash


@pytest.mark.parametrize("override, message", [
    ("simulate.n_pixel=5", "unknown config key 'simulate.n_pixel'"),
    ("hotspots.method=magic", "config key 'hotspots.method' must be one of significant, seed, velocity_threshold"),
    ("hotspots.score_methods=[seed, nope]", "config key 'hotspots.score_methods[1]' must be one of"),
    ("hotspots.min_jaccard=0", "config key 'hotspots.min_jaccard' must be within (0, 1]"),
    ("hotspots.labels=tskm", "config key 'hotspots.labels' must be one of classes, clusters; got 'tskm'"),
    ("classify.models=[lstm, lstm]", "config key 'classify.models' must not name a model twice"),
    ("classify.models=[gru]", "config key 'classify.models[0]' must be one of lstm, lstm_perceptron; got 'gru'"),
    ("classify.lstm_units=[32, 0]", "config key 'classify.lstm_units[1]' must be an integer >= 1; got 0"),
    ("classify.dropout=1", "config key 'classify.dropout' must be within [0, 1); got 1"),
    ("forecast.models=[gru]", "config key 'forecast.models' must list dapf"),
    ("forecast.hyper={lstm: {hidden: 8}}", "config key 'forecast.hyper.lstm' must be one of dapf, gru"),
    ("temporal.gamma=0", "config key 'temporal.gamma' must be > 0; got 0"),
    ("temporal.k_min=7", "'temporal.k_min' <= 'temporal.k_max'"),
    ("spatial.per_label={0: {eps: 300}}", "unknown config key 'spatial.per_label.0.eps'"),
    ("spatial.per_label={0: {eps_m: -1}}", "config key 'spatial.per_label.0.eps_m' must be > 0; got -1"),
    ("spatial.per_label={x: {eps_m: 300}}", "config key 'spatial.per_label.x' must be an integer"),
    ("spatial.per_label={0: {}}", "config key 'spatial.per_label.0' must be a mapping with eps_m and/or min_samples"),
    ("spark.conf={spark.x: [1]}", "config key 'spark.conf.spark.x' must be a scalar"),
    ("spark.remote=http://host", "config key 'spark.remote' must be a Spark Connect URL"),
    ("lake=here", "config key 'lake' must be a mapping, got 'here'"),
    ("lake.run_heartbeat_s=true", "config key 'lake.run_heartbeat_s' must be a number, got True"),
    ("nosuch.key=1", "unknown config key 'nosuch'"),
    ("simulate.n_pixels=many", "config key 'simulate.n_pixels' must be an integer"),
    ("simulate.n_pixels=2.5", "config key 'simulate.n_pixels' must be an integer"),
    ("simulate.width_km=wide", "config key 'simulate.width_km' must be a number"),
    ("ingest.format=xml", "config key 'ingest.format' must be one of auto, egms, wide-csv, parquet"),
    ("ingest.max_missing_share=1.5", "config key 'ingest.max_missing_share' must be within [0, 1]"),
    ("simulate.point_velocity_mm_yr=-0.4", "config key 'simulate.point_velocity_mm_yr' must be >= 0; got -0.4"),
    ("simulate.sources.volcano=1", "unknown config key 'simulate.sources.volcano'"),
    ("simulate.sources.uplift=-1", "config key 'simulate.sources.uplift' must be an integer >= 0"),
    ("simulate.end_date=2018-01-01", "'simulate.end_date' must be after 'simulate.start_date'"),
    ("simulate.start_date=yesterday", "config key 'simulate.start_date' must be a YYYY-MM-DD date"),
    ("partition.min_precision=9", "partition.min_precision"),
    ("simulate", "expected key=value"),
    ("catalog.kind=shared", "config key 'catalog.kind' must be one of embedded, server, session"),
    ("catalog.server=localhost", "config key 'catalog.server' must be host:port; got 'localhost'"),
    ("catalog.server=localhost:99999", "config key 'catalog.server' must be host:port"),
    ("catalog.server=:1527", "config key 'catalog.server' must be host:port"),
    ("alerts.min_overlap=0", "config key 'alerts.min_overlap' must be within (0, 1]; got 0"),
    ("alerts.growth_ratio=1", "config key 'alerts.growth_ratio' must be > 1; got 1"),
    ("alerts.persist_epochs=0", "config key 'alerts.persist_epochs' must be an integer >= 1; got 0"),
    ("simulate.changes=[{source: 2}]", "config key 'simulate.changes[0]' must give start_date and/or rate_factor"),
    ("simulate.changes=[{source: 2, rate_factor: 2.0}]", "must give rate_factor and change_date together"),
    ("simulate.changes=[{source: 2, start: 2021-01-01}]", "unknown config key 'simulate.changes[0].start'"),
    ("models.refit_every_runs=-1", "config key 'models.refit_every_runs' must be an integer >= 0; got -1"),
    ("models.reuse_max_new_share=-0.1", "config key 'models.reuse_max_new_share' must be >= 0"),
    ("models.reuse_extended=sometimes", "config key 'models.reuse_extended'"),
    ("hotspots.rim_grow_z=3.0", "config key 'hotspots.rim_grow_z' (3.0) must be below 'hotspots.z_pixel' (3.0)"),
    ("hotspots.rim_grow_radius_m=0", "config key 'hotspots.rim_grow_radius_m' must be > 0"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert message in str(err.value)


def test_free_form_entries_and_replace_are_validated():
    cfg = load_config(overrides=["forecast.hyper={dapf: {hidden: 8}}", "spatial.per_label={0: {eps_m: 300}}"])
    assert cfg.forecast.hyper == {"dapf": {"hidden": 8}} and cfg.spatial.per_label == {0: {"eps_m": 300.0}}
    changed = replace(cfg, temporal=replace(cfg.temporal, k=3))
    assert changed.temporal.k == 3 and cfg.temporal.k is None and changed.hash != cfg.hash
    with pytest.raises(ConfigError, match=r"^config key 'temporal.k' must be an integer >= 1; got 0$"):
        replace(cfg.temporal, k=0)
    with pytest.raises(ConfigError, match=r"^unknown config key 'temporal.kk'$"):
        replace(cfg.temporal, kk=3)
    with pytest.raises(ConfigError, match="'covariogram.bin_km' < 'covariogram.max_distance_km'"):
        replace(cfg.covariogram, bin_km=50.0)


def test_bad_profile_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spark:\n  shuffle_partitions: [1, 2]\n")
    with pytest.raises(ConfigError, match="'spark.shuffle_partitions' must be an integer"):
        load_config(bad)
    bad.write_text("lake: {path: /x, colour: red}\n")
    with pytest.raises(ConfigError, match=f"{bad}: unknown config key 'lake.colour'"):
        load_config(bad)
    bad.write_text("spark: [unclosed\n")
    with pytest.raises(ConfigError, match=f"config file {bad}: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_driver_memory_for_the_launcher_follows_the_profile_and_overrides():
    from conftest import PROJECT
    from insarlake.cli import driver_memory

    local = str(PROJECT / "conf" / "local.yaml")
    assert driver_memory([]) == "4g"                                   # conf/default.yaml
    assert driver_memory(["--config", local, "--dataset", "d", "--input", "x"]) == "8g"
    assert driver_memory(["--config", local, "--set", "spark.driver_memory=12g", "--help"]) == "12g"
    assert driver_memory(["--set", "spark.nope=1"]) == ""              # the job itself reports it


def test_catalog_command_answers_in_one_line(tmp_path, capsys):
    from insarlake import catalog

    assert catalog.main(["status", "--lake", str(tmp_path / "lake"), "--set", "catalog.server=nowhere"]) == 2
    assert capsys.readouterr().err == "error: config key 'catalog.server' must be host:port; got 'nowhere'\n"
    # nothing listens on a port just freed
    from conftest import free_port

    port = free_port()
    assert catalog.main(["status", "--lake", str(tmp_path / "lake"), "--set", f"catalog.server=localhost:{port}"]) == 1
    assert capsys.readouterr().out == f"catalog server at localhost:{port}: not running\n"
    assert catalog.main(["stop", "--lake", str(tmp_path / "lake"), "--set", f"catalog.server=localhost:{port}"]) == 0
    assert capsys.readouterr().out == f"catalog server at localhost:{port}: not running\n"
    config = load_config(overrides=[f"lake.path={tmp_path / 'lake'}", "catalog.kind=server",
                                    f"catalog.server=localhost:{port}"])
    assert catalog.jdbc_url(config) == f"jdbc:derby://localhost:{port}/{tmp_path / 'lake'}/_catalog/metastore_db;create=true"


def test_the_config_imports_no_stage():
    """config.py is a low-level module: loading a config pulls in no stage (no Spark, no torch)."""
    import subprocess
    import sys

    code = ("import sys, insarlake.config; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('insarlake', 'pyspark', 'torch')))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert set(loaded) <= {"insarlake", "insarlake.config", "insarlake.errors", "insarlake.names"}, loaded
